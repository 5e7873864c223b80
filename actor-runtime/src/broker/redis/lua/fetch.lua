-- fetch: pop up to N ids from the head of a queue into this worker's ack set and return them
-- with their payloads, in one round trip. Also records the worker's heartbeat.
-- An id whose payload is gone (Dramatiq #266) is dropped here, not added to the ack set, and
-- reported so the caller can log it.
--
-- Order matters when Redis is out of memory (maxmemory with noeviction): a script may not
-- start with a command that can grow memory (SADD, ZADD), but once it has written anything
-- it may go on. So the pop comes first, and a worker can still drain the queues whose
-- draining frees memory.
--
-- KEYS[1] queue list   KEYS[2] payload hash   KEYS[3] ack set   KEYS[4] heartbeats zset
-- ARGV[1] max count   ARGV[2] worker id   ARGV[3] now (ms)
-- Returns { {id1, payload1, id2, payload2, ...}, {missing ids...} }
local n = tonumber(ARGV[1])
-- LPOP with a count (Redis 6.2+) pops the batch in one command (and one keyspace event);
-- older servers refuse the count, and we pop one at a time.
local ids = redis.pcall('LPOP', KEYS[1], n)
if type(ids) == 'table' and ids.err then
  ids = {}
  for _ = 1, n do
    local id = redis.call('LPOP', KEYS[1])
    if not id then
      break
    end
    ids[#ids + 1] = id
  end
elseif not ids then
  ids = {}
end
-- An LPOP counts as a write even when it popped nothing, so this never fails for memory.
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
if #ids == 0 then
  return { {}, {} }
end
local payloads = redis.call('HMGET', KEYS[2], unpack(ids))
local found, missing, taken = {}, {}, {}
for i = 1, #ids do
  local payload = payloads[i]
  if payload then
    taken[#taken + 1] = ids[i]
    found[#found + 1] = ids[i]
    found[#found + 1] = payload
  else
    missing[#missing + 1] = ids[i]
  end
end
if #taken > 0 then
  redis.call('SADD', KEYS[3], unpack(taken))
end
return { found, missing }
