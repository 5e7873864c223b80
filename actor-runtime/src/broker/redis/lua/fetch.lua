-- fetch: take up to N ids from the head of a queue, and at most B bytes of their payloads
-- (always at least one id), into this worker's ack set and return them with their payloads,
-- in one round trip. Also records the worker's heartbeat.
-- An id whose payload is gone (Dramatiq #266) is dropped here, not added to the ack set, and
-- reported so the caller can log it.
--
-- Order matters when Redis is out of memory (maxmemory with noeviction): a script may not
-- start with a command that can grow memory (SADD, ZADD), but once it has written anything
-- it may go on. So the trim comes first, and a worker can still drain the queues whose
-- draining frees memory.
--
-- KEYS[1] queue list   KEYS[2] payload hash   KEYS[3] ack set   KEYS[4] heartbeats zset
-- ARGV[1] max count   ARGV[2] worker id   ARGV[3] now (ms)   ARGV[4] max bytes
-- Returns { {id1, payload1, id2, payload2, ...}, {missing ids...} }
local n, budget = tonumber(ARGV[1]), tonumber(ARGV[4])
-- Sizes first (HSTRLEN is O(1)), so payloads over the budget are never copied; LRANGE then
-- one LTRIM is one keyspace event for the batch, on any server version.
local listed = redis.call('LRANGE', KEYS[1], 0, n - 1)
local ids, bytes = {}, 0
for i = 1, #listed do
  local size = redis.call('HSTRLEN', KEYS[2], listed[i])
  if i > 1 and bytes + size > budget then
    break
  end
  bytes = bytes + size
  ids[i] = listed[i]
end
if #ids == 0 then
  -- Nothing written yet, so out of memory this may fail: the heartbeat has its own timer.
  redis.pcall('ZADD', KEYS[4], ARGV[3], ARGV[2])
  return { {}, {} }
end
redis.call('LTRIM', KEYS[1], #ids, -1)
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
local payloads = redis.call('HMGET', KEYS[2], unpack(ids))
local found, missing, taken = {}, {}, {}
for i = 1, #ids do
  local payload = payloads[i]
  if payload then
    taken[#taken + 1] = ids[i]
    found[#found + 1] = ids[i]
    found[#found + 1] = payload
  else
    missing[#missing + 1] = ids[i]
  end
end
if #taken > 0 then
  redis.call('SADD', KEYS[3], unpack(taken))
end
return { found, missing }
