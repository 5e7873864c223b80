-- fetch: take up to N ids from the head of a queue, and at most B bytes of their payloads
-- (always at least one id), into this worker's ack set and return them with their payloads,
-- in one round trip. Also records the worker's heartbeat.
-- An id whose payload is gone (Dramatiq #266) is dropped here, not added to the ack set, and
-- reported so the caller can log it.
--
-- Order matters when Redis is out of memory (maxmemory with noeviction): a script may not
-- start with a command that can grow memory (SADD, ZADD), but once it has written anything
-- it may go on. So the trim comes first, and a worker can still drain the queues whose
-- draining frees memory.
--
-- A payload longer than the maximum message size is taken like any other (into the ack set,
-- so the worker can dead-letter it) but only its id and length are returned: it is never
-- sent to the worker, and counts nothing against the byte budget.
--
-- KEYS[1] queue list   KEYS[2] payload hash   KEYS[3] ack set   KEYS[4] heartbeats zset
-- ARGV[1] max count   ARGV[2] worker id   ARGV[3] now (ms)   ARGV[4] max bytes
-- ARGV[5] maximum message size
-- Returns { {id1, payload1, id2, payload2, ...}, {missing ids...}, {id, size, ...} }
local n, budget, limit = tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- LRANGE then one LTRIM: one keyspace event for the batch, on any server version. Payloads
-- are read in chunks that stop at the byte budget: 16 first, then as many as the average so
-- far says still fit, at most twice the last chunk. Small messages take a handful of calls
-- per thousand; large ones copy few payloads past the budget.
local listed = redis.call('LRANGE', KEYS[1], 0, n - 1)
local found, missing, taken, oversized = {}, {}, {}, {}
local count, bytes, full = 0, 0, false
local first, size_of_chunk = 1, 16
while first <= #listed and not full do
  local last = math.min(first + size_of_chunk - 1, #listed)
  local chunk = { unpack(listed, first, last) }
  local payloads = redis.call('HMGET', KEYS[2], unpack(chunk))
  for i = 1, #chunk do
    local payload = payloads[i]
    local size = payload and #payload or 0
    local over = size > limit
    if over then
      size = 0
    end
    if count > 0 and bytes + size > budget then
      full = true
      break
    end
    count, bytes = count + 1, bytes + size
    if over then
      taken[#taken + 1] = chunk[i]
      oversized[#oversized + 1] = chunk[i]
      oversized[#oversized + 1] = #payload
    elseif payload then
      taken[#taken + 1] = chunk[i]
      found[#found + 1] = chunk[i]
      found[#found + 1] = payload
    else
      missing[#missing + 1] = chunk[i]
    end
  end
  first = last + 1
  local average = math.max(bytes / count, 1)
  size_of_chunk = math.max(1, math.min(2 * size_of_chunk, math.floor((budget - bytes) / average)))
end
if count == 0 then
  -- Nothing written yet, so out of memory this may fail: the heartbeat has its own timer.
  redis.pcall('ZADD', KEYS[4], ARGV[3], ARGV[2])
  return { {}, {}, {} }
end
redis.call('LTRIM', KEYS[1], count, -1)
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
if #taken > 0 then
  redis.call('SADD', KEYS[3], unpack(taken))
end
return { found, missing, oversized }
