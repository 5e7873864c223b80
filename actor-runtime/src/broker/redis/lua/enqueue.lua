-- enqueue: store one message and append its id to the queue (Dramatiq's layout: payload in
-- the `.msgs` hash under its redis_message_id, id at the tail of the list).
-- HSETNX makes a retry after a lost reply a no-op instead of a second copy.
--
-- KEYS[1] queue list   KEYS[2] payload hash
-- ARGV[1] redis_message_id   ARGV[2] payload
-- Returns 1 if stored, 0 if this id was already there.
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  return 1
end
return 0
