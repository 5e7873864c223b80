-- enqueue: store messages and append their ids to their queues (Dramatiq's layout: payload in
-- the queue's `.msgs` hash under its redis_message_id, id at the tail of its list). One call
-- takes a whole batch, in order, for any number of queues (delay queues included).
-- HSETNX makes a retry after a lost reply a no-op instead of a second copy.
--
-- KEYS pairs, one per queue: queue list, payload hash
-- ARGV triples: queue number (1 for the first pair of KEYS), redis_message_id, payload
-- Returns how many were stored (an id already there is skipped).
local stored = 0
for i = 1, #ARGV, 3 do
  local q = tonumber(ARGV[i]) * 2
  if redis.call('HSETNX', KEYS[q], ARGV[i + 1], ARGV[i + 2]) == 1 then
    redis.call('RPUSH', KEYS[q - 1], ARGV[i + 1])
    stored = stored + 1
  end
end
return stored
