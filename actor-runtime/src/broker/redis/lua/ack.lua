-- ack: a batch of fetched messages is done. Only ids still in this worker's ack set are
-- deleted, so a retried or late ack (after dead-worker recovery took the id back) is a no-op.
--
-- KEYS[1] ack set   KEYS[2] payload hash
-- ARGV ids
-- Returns how many were acked.
local n = 0
for i = 1, #ARGV do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
