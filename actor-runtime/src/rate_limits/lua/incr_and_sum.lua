-- Sliding-window acquire. KEYS[1] is the current second's counter, KEYS[1..n] every counter of
-- the window (the current one included). Adds ARGV[1] to KEYS[1] unless that exceeds ARGV[2],
-- or ARGV[1] plus the window's sum does; TTL ARGV[3] ms. Returns 1 if it changed.
local amount = tonumber(ARGV[1])
local maximum = tonumber(ARGV[2])
local value = tonumber(redis.call('GET', KEYS[1]) or '0') + amount
if value > maximum then
  return 0
end
local total = amount
-- A missing key comes back from MGET as false.
for _, count in ipairs(redis.call('MGET', unpack(KEYS))) do
  if count then
    total = total + tonumber(count)
  end
end
if total > maximum then
  return 0
end
redis.call('SET', KEYS[1], string.format('%d', value), 'PX', ARGV[3])
return 1
