-- periodic_fire: claim one tick of a schedule and enqueue its message in one step, so a
-- scheduler replica killed at any point has either fired the tick (message stored) or not
-- (another replica will); no tick fires twice.
--
-- The tick is the schedule's scheduled instant (not any replica's clock), and the claim is
-- "later than the schedule's last fired tick", so replicas whose clocks differ claim the same
-- tick once. A tick later than the server's clock is refused: no replica fires early.
--
-- KEYS: the last-fired hash (name -> tick ms), the last-message hash (name -> message id),
--       the queue list, the queue's payload hash
-- ARGV: schedule name, tick ms, message_id, redis_message_id, payload
-- Returns {status, server time ms}: 1 fired, 0 fired already, -1 too early.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tick = tonumber(ARGV[2])
if tick > now then
  return {-1, now}
end
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if last and last >= tick then
  return {0, now}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
-- Stored as enqueue.lua stores a message (HSETNX: a repeated call stores nothing twice).
if redis.call('HSETNX', KEYS[4], ARGV[4], ARGV[5]) == 1 then
  redis.call('RPUSH', KEYS[3], ARGV[4])
end
return {1, now}
