-- claim_delayed: move up to N ids from the head of a delay queue into this worker's delay ack
-- set and return, for each, only what the worker needs to hold it: its eta and its payload's
-- size. Payloads stay in Redis until due (`promote.lua`), so a worker's memory goes by count.
-- Also records the worker's heartbeat. An id whose payload is gone (Dramatiq #266) is
-- dropped, not added to the ack set, and reported so the caller can log it.
--
-- Reading an eta means decoding the payload here: at most ARGV[2] bytes of payloads per call
-- (and always one id), so a backlog of large messages cannot block the server for long.
-- The eta is given only when it is a number of ms in [0, 2^53) (Dramatiq and we write an
-- integer). For anything else (JSON cjson refuses, no eta, NaN, a string) it is -1 and the
-- caller decodes the payload itself, so Lua and Rust never disagree on when one is due.
--
-- A payload over the maximum message size (ARGV[5]) is claimed but not decoded: its eta is
-- -2, and the caller dead-letters it unread.
--
-- KEYS[1] delay queue list   KEYS[2] delay payload hash   KEYS[3] delay ack set
-- KEYS[4] heartbeats zset
-- ARGV[1] max count   ARGV[2] max payload bytes   ARGV[3] worker id   ARGV[4] now (ms)
-- ARGV[5] maximum message size
-- Returns { { {id, eta, size}, ... }, {missing ids...}, ids left in the list }
local max, budget, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
-- LRANGE then one LTRIM: one keyspace event for the batch, and servers older than 6.2
-- (no LPOP count) work the same.
local ids = redis.call('LRANGE', KEYS[1], 0, max - 1)
local claimed, missing, taken = {}, {}, {}
local popped, bytes = 0, 0
for i = 1, #ids do
  local id = ids[i]
  local size = redis.call('HSTRLEN', KEYS[2], id)
  -- Over the limit: never read, so it weighs nothing against the budget.
  local over = size > limit
  if popped > 0 and not over and bytes + size > budget then
    break
  end
  popped = i
  local payload = (not over) and redis.call('HGET', KEYS[2], id)
  if over then
    taken[#taken + 1] = id
    claimed[#claimed + 1] = { id, -2, size }
  elseif payload then
    bytes = bytes + size
    local eta = -1
    local ok, message = pcall(cjson.decode, payload)
    if ok and type(message) == 'table' and type(message.options) == 'table' then
      local value = message.options.eta
      -- NaN fails both comparisons; 2^53 keeps it an exact integer.
      if type(value) == 'number' and value >= 0 and value < 9007199254740992 then
        eta = math.floor(value)
      end
    end
    taken[#taken + 1] = id
    claimed[#claimed + 1] = { id, eta, size }
  else
    missing[#missing + 1] = id
  end
end
if popped > 0 then
  redis.call('LTRIM', KEYS[1], popped, -1)
end
if #taken > 0 then
  redis.call('SADD', KEYS[3], unpack(taken))
end
-- Last, and allowed to fail: Redis out of memory refuses a ZADD before any other write
-- (see fetch.lua), and the heartbeat has a timer of its own anyway.
redis.pcall('ZADD', KEYS[4], ARGV[4], ARGV[3])
return { claimed, missing, redis.call('LLEN', KEYS[1]) }
