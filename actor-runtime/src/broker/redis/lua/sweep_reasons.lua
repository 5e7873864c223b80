-- sweep_reasons: delete dead-letter reasons whose dead letter is gone (a Python flush or TTL
-- deleted the `.XQ` zset or some of its members; Python does not know the reasons hash).
-- Works through the hash with HSCAN, one page per call.
--
-- KEYS[1] XQ zset   KEYS[2] XQ reasons hash
-- ARGV[1] HSCAN cursor   ARGV[2] page size
-- Returns { next cursor, how many were deleted }.
local page = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local fields = page[2]
local deleted = 0
for i = 1, #fields, 2 do
  if not redis.call('ZSCORE', KEYS[1], fields[i]) then
    redis.call('HDEL', KEYS[2], fields[i])
    deleted = deleted + 1
  end
end
return { page[1], deleted }
