-- delete_listed: delete ready (or delayed) messages an operator chose, only while they are
-- still waiting in their list: one a worker fetched meanwhile is left alone, its payload
-- kept for the worker's ack. Delayed messages a worker holds until due are no longer in the
-- list; with ARGV[1] = 1 their payload goes too (the worker then drops them when due).
--
-- KEYS[1] list   KEYS[2] payload hash
-- ARGV[1] 1: also delete payloads not in the list (delayed)   ARGV[2..] ids
-- Returns how many were deleted.
local n = 0
for i = 2, #ARGV do
  local listed = redis.call('LREM', KEYS[1], 1, ARGV[i])
  if listed > 0 or ARGV[1] == '1' then
    n = n + redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return n
