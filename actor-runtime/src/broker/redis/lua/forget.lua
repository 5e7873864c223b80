-- forget: remove a dead worker from the heartbeats once its ack sets are recovered, unless it
-- sent a heartbeat meanwhile.
--
-- KEYS[1] heartbeats zset
-- ARGV[1] worker id   ARGV[2] dead-before (ms)
-- Returns 1 if removed.
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) < tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
