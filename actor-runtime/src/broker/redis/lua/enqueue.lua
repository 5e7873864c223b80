-- enqueue: store messages and append their ids to the queue (Dramatiq's layout: payload in
-- the `.msgs` hash under its redis_message_id, id at the tail of the list). One call takes a
-- whole batch, in order.
-- HSETNX makes a retry after a lost reply a no-op instead of a second copy.
--
-- KEYS[1] queue list   KEYS[2] payload hash
-- ARGV pairs: redis_message_id, payload, ...
-- Returns how many were stored (an id already there is skipped).
local stored = 0
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    stored = stored + 1
  end
end
return stored
