-- promote: move due delayed messages from the delay queue to their queue in one atomic step
-- (the non-atomic enqueue-then-ack is Dramatiq #431's duplicate window). Each message is
-- stored under a new redis_message_id with the payload the caller rewrote (queue_name
-- without `.DQ`, no eta). Only ids still in this worker's delay ack set move.
--
-- KEYS[1] DQ ack set   KEYS[2] DQ payload hash   KEYS[3] queue list   KEYS[4] queue payload hash
-- ARGV triples: old id, new id, new payload
-- Returns how many moved.
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HSET', KEYS[4], ARGV[i + 1], ARGV[i + 2])
    redis.call('RPUSH', KEYS[3], ARGV[i + 1])
    n = n + 1
  end
end
return n
