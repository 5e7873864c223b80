#!/usr/bin/env bash
# The dashboard on big data: a queue of ONE million ready messages (plus 100,000 dead letters
# and 10,000 delayed), in a Redis namespace of its own, and TEN million job records in a
# PostgreSQL schema of its own. Starts the benchmark worker's `dashboard` command on them and
# times each page's first byte-to-last (curl's time_total), REPEATS times, printing the
# median and the worst; then deletes the namespace's keys and drops the schema.
#
#   bench/dashboard.sh                    # QUEUE_N=1000000 RECORDS_N=10000000 REPEATS=5
#   NO_BUILD=1 RECORDS_N=1000000 bench/dashboard.sh
#
# Needs redis-cli, psql, curl, python3; the Redis at BENCH_REDIS_URL (only the namespace
# bench_dash_<pid> is written) and the PostgreSQL at BENCH_DATABASE_URL (schema
# bench_dashboard is dropped and recreated).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUEUE_N=${QUEUE_N:-1000000}
DEAD_N=${DEAD_N:-100000}
DELAYED_N=${DELAYED_N:-10000}
RECORDS_N=${RECORDS_N:-10000000}
REPEATS=${REPEATS:-5}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
DB=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
NS="bench_dash_$$"
SCHEMA=bench_dashboard
PORT=${PORT:-19181}
BIN="$ROOT/target/release/examples/bench_worker"

if [ -z "${NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p actor-examples --example bench_worker)
fi

redis() { redis-cli -u "$REDIS_URL" "$@"; }
sql() { PGOPTIONS="-c client_min_messages=warning" psql "$DB" -qAtX -c "$1"; }
DASH_PID=""
cleanup() {
  [ -n "$DASH_PID" ] && kill "$DASH_PID" 2>/dev/null && wait "$DASH_PID" 2>/dev/null || true
  redis --scan --pattern "$NS:*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null
  sql "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
  rm -f "${BODY:-}"
}
trap cleanup EXIT

echo "filling $NS: $QUEUE_N ready, $DEAD_N dead, $DELAYED_N delayed messages"
python3 - "$NS" "$QUEUE_N" "$DEAD_N" "$DELAYED_N" <<'PY' | redis --pipe >/dev/null
import json, sys, time, uuid
ns, ready, dead, delayed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = sys.stdout.buffer
def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    out.write(b"".join(parts))
now = int(time.time() * 1000)
def payload(queue, i, rid, extra=None):
    options = {"redis_message_id": rid}
    options.update(extra or {})
    return json.dumps({"queue_name": queue, "actor_name": "actor_%d" % (i % 20),
        "args": [i, "customer-%d@example.com" % i], "kwargs": {}, "options": options,
        "message_id": str(uuid.uuid4()), "message_timestamp": now}, separators=(",", ":"))
q = "bench"
for start in range(0, ready, 1000):
    ids = [str(uuid.uuid4()) for _ in range(start, min(start + 1000, ready))]
    args = []
    for k, rid in enumerate(ids):
        args += [rid, payload(q, start + k, rid)]
    cmd("HSET", "%s:%s.msgs" % (ns, q), *args)
    cmd("RPUSH", "%s:%s" % (ns, q), *ids)
for start in range(0, dead, 1000):
    ids = [str(uuid.uuid4()) for _ in range(start, min(start + 1000, dead))]
    z, h, r = [], [], []
    for k, rid in enumerate(ids):
        z += [now - (start + k), rid]
        h += [rid, payload(q, start + k, rid)]
        r += [rid, "retries exhausted: TimeoutError: upstream did not answer in 30s"]
    cmd("ZADD", "%s:%s.XQ" % (ns, q), *z)
    cmd("HSET", "%s:%s.XQ.msgs" % (ns, q), *h)
    cmd("HSET", "%s:%s.XQ.reasons" % (ns, q), *r)
for start in range(0, delayed, 1000):
    ids = [str(uuid.uuid4()) for _ in range(start, min(start + 1000, delayed))]
    h = []
    for k, rid in enumerate(ids):
        h += [rid, payload(q + ".DQ", start + k, rid, {"eta": now + 3600000 + k})]
    cmd("HSET", "%s:%s.DQ.msgs" % (ns, q), *h)
    cmd("RPUSH", "%s:%s.DQ" % (ns, q), *ids)
PY
echo "ready: $(redis LLEN "$NS:bench"), dead: $(redis ZCARD "$NS:bench.XQ"), delayed: $(redis HLEN "$NS:bench.DQ.msgs")"

echo "filling schema $SCHEMA: $RECORDS_N job records"
sql "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
DATABASE_URL="$DB" RECORDS_SCHEMA=$SCHEMA "$BIN" migrate >/dev/null
sql "SET synchronous_commit = off;
  INSERT INTO $SCHEMA.job_executions (message_id, queue_name, actor_name, state, state_order,
    attempt, enqueued_at, started_at, finished_at, duration_ms, worker_id, last_error, errors,
    created_at, updated_at)
  SELECT md5(i::text), 'bench', 'actor_' || (i % 20),
    CASE WHEN i % 100 = 0 THEN 'dead' ELSE 'succeeded' END, 4,
    CASE WHEN i % 100 = 0 THEN 3 ELSE 1 END,
    t, t, t + interval '12 ms', 12.0, 'worker-' || (i % 8),
    CASE WHEN i % 100 = 0 THEN 'TimeoutError: upstream did not answer in 30s' END,
    CASE WHEN i % 100 = 0 THEN jsonb_build_array(jsonb_build_object('attempt', 1,
      'at', t::text, 'type', 'TimeoutError', 'message', 'upstream did not answer in 30s'))
      ELSE '[]'::jsonb END,
    t, t
  FROM generate_series(1, $RECORDS_N) AS i,
    LATERAL (SELECT now() - (i % 2592000) * interval '1 second' AS t) AS ts;
  ANALYZE $SCHEMA.job_executions"
ID=$(sql "SELECT message_id FROM $SCHEMA.job_executions WHERE state = 'dead' LIMIT 1")

REDIS_URL="$REDIS_URL" DRAMATIQ_NAMESPACE="$NS" DATABASE_URL="$DB" RECORDS_SCHEMA=$SCHEMA \
  "$BIN" dashboard --addr "127.0.0.1:$PORT" 2>/dev/null &
DASH_PID=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/assets/style.css" && break; sleep 0.1; done

# Median and worst of REPEATS timings of one page (seconds); fails on a non-200 answer or a
# page without the table rows (or job fields) it should show.
BODY=$(mktemp)
time_page() {
  local path=$1 times=() code t
  for _ in $(seq 1 "$REPEATS"); do
    read -r code t < <(curl -s -o "$BODY" -w '%{http_code} %{time_total}\n' "http://127.0.0.1:$PORT$path")
    [ "$code" = 200 ] || { echo "$path answered $code" >&2; exit 1; }
    grep -q -e '<tr><td' -e 'class="fields"' -e 'No job matches' "$BODY" || { echo "$path shows no rows" >&2; exit 1; }
    times+=("$t")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v p="$path" '{ a[NR] = $1 } END {
    printf "%-48s median %6.1f ms   worst %6.1f ms\n", p, a[int((NR + 1) / 2)] * 1000, a[NR] * 1000 }'
}

echo
echo "pages (curl time_total, $REPEATS runs each):"
time_page "/"
time_page "/queues/bench?state=ready"
time_page "/queues/bench?state=ready&cursor=500000"
time_page "/queues/bench?state=delayed"
time_page "/queues/bench?state=dead"
time_page "/queues/bench?state=dead&actor=actor_7"
time_page "/jobs"
time_page "/jobs?actor=actor_7"
time_page "/jobs?state=dead"
time_page "/jobs?state=dead&error=timeout"
time_page "/jobs?error=no-such-text"
time_page "/jobs/$ID"
