-- heartbeat: record this worker's heartbeat, even when Redis is out of memory. A script may
-- not start with a command that can grow memory (ZADD) under maxmemory with noeviction, but
-- once it has written anything it may go on: the ZREM comes first. Without heartbeats a live
-- worker would count as dead and its messages would run twice.
--
-- KEYS[1] heartbeats zset
-- ARGV[1] now (ms)   ARGV[2] worker id
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return 1
