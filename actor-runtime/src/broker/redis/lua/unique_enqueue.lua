-- unique_enqueue: claim a uniqueness key and store its message in one step, so a crash can
-- leave neither a claimed key without its message nor a message without its claim.
--
-- KEYS: the key's string, the queue list, the queue's payload hash (the list may be a `.DQ`)
-- ARGV: message_id (the holder's value), ttl ms, renew ("1": a retry of the holder, stored
--       whoever holds the key), redis_message_id, payload
-- Returns the holder's message id when another message holds the key and nothing was
-- stored; nil when the message was stored.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and ARGV[3] ~= '1' then
  return holder
end
if not holder or holder == ARGV[1] then
  -- Claim (or renew our own claim's bound).
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
-- HSETNX: a call repeated after a lost reply stores nothing twice (as enqueue.lua).
if redis.call('HSETNX', KEYS[3], ARGV[4], ARGV[5]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[4])
end
return false
