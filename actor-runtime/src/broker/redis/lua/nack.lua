-- nack: dead-letter one fetched message. The payload moves to the canonical queue's `.XQ`
-- zset (score = now) and `.XQ.msgs` hash, as Dramatiq does; the reason goes to a side hash
-- Python never reads.
--
-- KEYS[1] ack set   KEYS[2] payload hash   KEYS[3] XQ zset   KEYS[4] XQ payload hash
-- KEYS[5] XQ reasons hash
-- ARGV[1] id   ARGV[2] now (ms)   ARGV[3] reason
-- Returns 1 if dead-lettered, 0 if the id was not this worker's any more.
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local payload = redis.call('HGET', KEYS[2], ARGV[1])
if not payload then
  return 0
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], payload)
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
