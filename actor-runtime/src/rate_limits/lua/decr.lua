-- Subtracts ARGV[1] from the integer counter KEYS[1] (missing counts as 0) unless the result
-- would go below ARGV[2]; the new value gets a TTL of ARGV[3] ms. Returns 1 if it changed.
local value = tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[1])
if value < tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], string.format('%d', value), 'PX', ARGV[3])
return 1
