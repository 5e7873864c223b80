-- purge_dead: delete up to ARGV[2] dead letters older than ARGV[1], with their payloads and
-- reasons.
--
-- KEYS[1] XQ zset   KEYS[2] XQ payload hash   KEYS[3] XQ reasons hash
-- ARGV[1] cutoff (ms, exclusive)   ARGV[2] limit
-- Returns how many were deleted.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #ids do
  redis.call('ZREM', KEYS[1], ids[i])
  redis.call('HDEL', KEYS[2], ids[i])
  redis.call('HDEL', KEYS[3], ids[i])
end
return #ids
