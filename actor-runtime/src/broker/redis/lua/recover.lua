-- recover: return one dead worker's fetched messages (one ack set) to their queue, then drop
-- the ack set. Ids whose payload is gone are dropped. Checks the heartbeat again inside the
-- script, so a worker that came back since it was judged dead keeps its messages.
-- Recovered ids go to the head: they were fetched before anything still waiting.
--
-- KEYS[1] ack set   KEYS[2] queue list   KEYS[3] payload hash   KEYS[4] heartbeats zset
-- ARGV[1] worker id   ARGV[2] dead-before (ms)
-- Returns how many were requeued, or -1 if the worker is alive.
local beat = redis.call('ZSCORE', KEYS[4], ARGV[1])
if beat and tonumber(beat) >= tonumber(ARGV[2]) then
  return -1
end
local ids = redis.call('SMEMBERS', KEYS[1])
-- Deleting first is a write that cannot grow memory, after which the pushes may run even
-- when Redis is out of memory (see fetch.lua).
redis.call('DEL', KEYS[1])
local n = 0
for i = 1, #ids do
  if redis.call('HEXISTS', KEYS[3], ids[i]) == 1 then
    redis.call('LPUSH', KEYS[2], ids[i])
    n = n + 1
  end
end
return n
