-- unique_release: delete a uniqueness key only if the given message still holds it (it may
-- have expired and been claimed by another message since).
--
-- KEYS: the key's string
-- ARGV: message_id
-- Returns 1 if released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
