#!/usr/bin/env bash
# The job records' cost: the no-op end-to-end drain of the benchmark worker, without and with
# DATABASE_URL, on the same Redis, alternating, REPEATS times each. Prints msg/s, the CPU
# PostgreSQL spent (all its processes, from /proc), and how far the records lagged behind
# the work (updated_at - finished_at per row: the flush statement's start; add the batch
# time); then the lag while the worker keeps up with a steady RATE (20000) msg/s.
#
#   bench/records.sh                 # N=100000 P=2 T=8 REPEATS=3
#   NO_BUILD=1 N=50000 bench/records.sh
#
# Needs redis-cli, psql, the Redis at BENCH_REDIS_URL (its database is flushed!) and the
# PostgreSQL at BENCH_DATABASE_URL (schema bench_records is dropped and recreated).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=${N:-100000}
P=${P:-2}
T=${T:-8}
REPEATS=${REPEATS:-3}
export BENCH_REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/12}
DB=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=bench_records
BIN="$ROOT/target/release/examples"

if [ -z "${NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p actor-examples --example bench_worker --example bench_enqueue)
fi

redis() { redis-cli -u "$BENCH_REDIS_URL" "$@"; }
sql() { PGOPTIONS="-c client_min_messages=warning" psql "$DB" -qAtX -c "$1"; }
# CPU seconds of every postgres process alive now (backends included).
pg_cpu() {
  local ticks=0 pid
  for pid in $(pgrep -x postgres); do
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "scale=3; $ticks / $(getconf CLK_TCK)" | bc
}
now() { date +%s.%N; }

run() { # $1: off|on
  redis FLUSHDB >/dev/null
  sql "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
  BENCH_N=$N "$BIN/bench_enqueue" >/dev/null
  local env=()
  if [ "$1" = on ]; then
    env=(DATABASE_URL="$DB" RECORDS_SCHEMA=$SCHEMA RECORDS_MIGRATE=1)
    # The schema exists before the clock starts, as in production: the timed start-up only
    # checks it.
    env "${env[@]}" "$BIN/bench_worker" migrate >/dev/null
  fi
  local cpu0 t0 t1 cpu1 t2
  # Every run starts right after a checkpoint, so none starts during one and each pays the
  # same first-touch page images in the WAL.
  sql "CHECKPOINT"
  cpu0=$(pg_cpu)
  t0=$(now)
  env "${env[@]}" "$BIN/bench_worker" --processes "$P" --threads "$T" 2>/dev/null &
  local worker=$!
  # Drained: nothing ready, nothing fetched and unacked.
  while [ "$(redis LLEN dramatiq:default)" != 0 ] || \
        [ -n "$(redis --scan --pattern 'dramatiq:__acks__.*' | head -1)" ]; do
    sleep 0.005
  done
  t1=$(now)
  local lag="-"
  if [ "$1" = on ]; then
    local deadline written
    deadline=$(echo "$(now) + 120" | bc)
    while written=$(sql "SELECT count(*) FROM $SCHEMA.job_executions WHERE state = 'succeeded'" 2>/dev/null || echo 0) \
          && [ "$written" -lt "$N" ] && [ "$(echo "$(now) < $deadline" | bc)" = 1 ]; do
      sleep 0.01
    done
    [ "$written" -ge "$N" ] || echo "only $written of $N records written within 120 s" >&2
    t2=$(now)
    lag=$(sql "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::text || ' / ' ||
                      round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::text || ' / ' ||
                      round(max(ms))::text
               FROM (SELECT extract(epoch FROM updated_at - finished_at) * 1000 AS ms
                     FROM $SCHEMA.job_executions) t")
    lag="$lag ms (all written $(echo "scale=0; ($t2 - $t1) * 1000 / 1" | bc) ms after the drain)"
  fi
  cpu1=$(pg_cpu)
  kill -TERM "$worker"; wait "$worker" || true
  local secs rate pgcpu
  secs=$(echo "$t1 - $t0" | bc)
  rate=$(echo "$N / $secs" | bc)
  pgcpu=$(echo "$cpu1 - $cpu0" | bc)
  printf '%-4s %8s msg/s  drain %6.3f s  postgres CPU %6.2f s (%s us/msg)  lag p50/p99/max %s\n' \
    "$1" "$rate" "$secs" "$pgcpu" "$(echo "scale=1; $pgcpu * 1000000 / $N" | bc)" "$lag"
  RATES[$1]+="$rate "
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# The records' lag while a worker keeps up with a steady RATE msg/s (sent meanwhile).
lag_at_rate() {
  redis FLUSHDB >/dev/null
  sql "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
  DATABASE_URL="$DB" RECORDS_SCHEMA=$SCHEMA RECORDS_MIGRATE=1 \
    "$BIN/bench_worker" --processes "$P" --threads "$T" 2>/dev/null &
  local worker=$! n=$((RATE * 5)) reached
  sleep 1
  reached=$(BENCH_N=$n BENCH_RATE=$RATE "$BIN/bench_enqueue" | awk '/paced_msgs_per_s/ {print int($2)}')
  local deadline
  deadline=$(echo "$(now) + 60" | bc)
  while [ "$(sql "SELECT count(*) FROM $SCHEMA.job_executions WHERE state = 'succeeded'")" -lt "$n" ] \
        && [ "$(echo "$(now) < $deadline" | bc)" = 1 ]; do
    sleep 0.05
  done
  kill -TERM "$worker"; wait "$worker" || true
  printf 'lag at %s msg/s (%s sent): p50/p99/max %s ms\n' "$reached" "$n" "$(sql "
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::text || ' / ' ||
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::text || ' / ' || round(max(ms))::text
    FROM (SELECT extract(epoch FROM updated_at - finished_at) * 1000 AS ms
          FROM $SCHEMA.job_executions WHERE state = 'succeeded') t")"
}

echo "N=$N, $P processes x $T threads, Redis $BENCH_REDIS_URL, PostgreSQL $DB"
declare -A RATES=([off]="" [on]="")
for _ in $(seq 1 "$REPEATS"); do
  run off
  run on
done
read -r -a offs <<<"${RATES[off]}"
read -r -a ons <<<"${RATES[on]}"
pairs=""
for i in "${!offs[@]}"; do pairs+="$((100 * ${ons[$i]} / ${offs[$i]}))% "; done
off_median=$(echo "${RATES[off]}" | median)
on_median=$(echo "${RATES[on]}" | median)
echo "median: off $off_median msg/s, on $on_median msg/s: $(echo "100 * $on_median / $off_median" | bc)% (each pair: $pairs)"
RATE=${RATE:-20000}
lag_at_rate
sql "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
redis FLUSHDB >/dev/null
