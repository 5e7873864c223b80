-- requeue_dead: move dead letters back to the tail of their queue, each under a new
-- redis_message_id with the payload the caller rewrote. Only ids still dead move.
--
-- KEYS[1] XQ zset   KEYS[2] XQ payload hash   KEYS[3] XQ reasons hash
-- KEYS[4] queue list   KEYS[5] queue payload hash
-- ARGV triples: dead id, new id, new payload
-- Returns how many moved.
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
    redis.call('HSET', KEYS[5], ARGV[i + 1], ARGV[i + 2])
    redis.call('RPUSH', KEYS[4], ARGV[i + 1])
    n = n + 1
  end
end
return n
