-- fetch: pop up to N ids from the head of a queue into this worker's ack set and return them
-- with their payloads, in one round trip. Also records the worker's heartbeat.
-- An id whose payload is gone (Dramatiq #266) is dropped here, not added to the ack set, and
-- reported so the caller can log it.
--
-- KEYS[1] queue list   KEYS[2] payload hash   KEYS[3] ack set   KEYS[4] heartbeats zset
-- ARGV[1] max count   ARGV[2] worker id   ARGV[3] now (ms)
-- Returns { {id1, payload1, id2, payload2, ...}, {missing ids...} }
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
local found, missing = {}, {}
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('LPOP', KEYS[1])
  if not id then
    break
  end
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    redis.call('SADD', KEYS[3], id)
    found[#found + 1] = id
    found[#found + 1] = payload
  else
    missing[#missing + 1] = id
  end
end
return { found, missing }
