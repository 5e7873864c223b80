-- requeue: give fetched, unprocessed messages back. They go to the HEAD of the list, in their
-- original order, so they keep their place in line (Dramatiq appends to the tail instead).
-- Also returns held delayed messages to the delay queue, with the `.DQ` keys.
--
-- KEYS[1] ack set   KEYS[2] payload hash   KEYS[3] queue list
-- ARGV ids, in queue order
-- Returns how many went back.
local n = 0
for i = #ARGV, 1, -1 do
  local id = ARGV[i]
  if redis.call('SREM', KEYS[1], id) == 1 and redis.call('HEXISTS', KEYS[2], id) == 1 then
    redis.call('LPUSH', KEYS[3], id)
    n = n + 1
  end
end
return n
