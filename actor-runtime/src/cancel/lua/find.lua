-- find: one step of a search for a message id among the payloads of one hash, without
-- sending the payloads to the caller: HSCAN a page of fields and return only those whose
-- payload contains the needle (`"message_id":"<id>"`, as Dramatiq's and our compact JSON
-- write it). A nested message (a pipeline's next step) can match too: the caller decodes
-- each match and keeps those whose own `message_id` is the one sought.
--
-- KEYS[1] payload hash
-- ARGV[1] HSCAN cursor   ARGV[2] needle   ARGV[3] page size (COUNT)
-- Returns { next cursor, {field, payload, ...} }
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[3])
local found = {}
local entries = page[2]
for i = 1, #entries, 2 do
  if string.find(entries[i + 1], ARGV[2], 1, true) then
    found[#found + 1] = entries[i]
    found[#found + 1] = entries[i + 1]
  end
end
return { page[1], found }
