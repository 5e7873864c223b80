#!/usr/bin/env bash
# What one no-op message costs a worker, independent of machine load: each given
# `bench_worker` binary drains N messages (1 process x 1 thread) from a private Redis, once
# under callgrind (instructions, simulated cache misses) and REPEATS times natively (CPU time
# and resident memory when the queue is drained). Instructions per message are the slope
# between a run of N/4 and a run of N, so start-up and idle time cancel out.
#
#   bash bench/drain_cost.sh lean=/path/to/bench_worker features=target/release/examples/bench_worker
#
# Env: N (default 20000), REPEATS (3), PORT (6397: a private redis-server is started there
# and stopped at the end). Needs valgrind, redis-server, redis-cli, bc, and
# target/release/examples/bench_enqueue (cargo build --release -p actor-examples --example bench_enqueue).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
REPEATS=${REPEATS:-3}
PORT=${PORT:-6397}
ENQUEUE="$PWD/target/release/examples/bench_enqueue"
OUT=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$OUT/redis.pid" >/dev/null
trap 'kill "$(cat "$OUT/redis.pid")" 2>/dev/null; rm -rf "$OUT"' EXIT
for _ in $(seq 1 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
export REDIS_URL="redis://127.0.0.1:$PORT/0" BENCH_REDIS_URL="redis://127.0.0.1:$PORT/0"

fill() {
  redis-cli -p "$PORT" flushall >/dev/null
  BENCH_N=$1 "$ENQUEUE" >/dev/null
}

drained() {
  [ "$(redis-cli -p "$PORT" llen dramatiq:default)" = 0 ] &&
    [ "$(redis-cli -p "$PORT" keys '*__acks__*' | grep -c . || true)" = 0 ]
}

# Instructions (and simulated I1/D1 misses) of a drain of $2 messages by binary $1.
callgrind() {
  fill "$2"
  valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$OUT/cg" "$1" \
    --processes 1 --threads 1 >/dev/null 2>&1 &
  local pid=$!
  until drained; do sleep 0.2; done
  kill -TERM "$pid"; wait "$pid" || true
  # events: Ir Dr Dw I1mr D1mr D1mw ...
  awk '/^summary:/ {print $2, $5, $6 + $7}' "$OUT/cg"
}

# CPU seconds and RSS (kB) of a native drain of N messages.
native() {
  fill "$N"
  "$1" --processes 1 --threads 1 >/dev/null 2>&1 &
  local pid=$!
  until drained; do sleep 0.02; done
  local stat; read -r -a stat <"/proc/$pid/stat"
  local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  echo "$(echo "scale=2; (${stat[13]} + ${stat[14]}) * 1000000 / $(getconf CLK_TCK) / $N" | bc) $rss"
}

printf '%-12s %14s %12s %12s %16s %10s\n' build "instr/msg" "I1miss/msg" "D1miss/msg" "cpu us/msg" "rss MB"
for spec in "$@"; do
  name=${spec%%=*}; bin=${spec#*=}
  read -r i1 im1 dm1 < <(callgrind "$bin" $((N / 4)))
  read -r i2 im2 dm2 < <(callgrind "$bin" "$N")
  span=$((N - N / 4))
  cpus=(); rsss=()
  for _ in $(seq 1 "$REPEATS"); do
    read -r cpu rss < <(native "$bin"); cpus+=("$cpu"); rsss+=("$rss")
  done
  printf '%-12s %14s %12s %12s %16s %10s\n' "$name" $(((i2 - i1) / span)) \
    "$(echo "scale=1; ($im2 - $im1) / $span" | bc)" "$(echo "scale=1; ($dm2 - $dm1) / $span" | bc)" \
    "$(IFS=/; echo "${cpus[*]}")" "$(echo "scale=1; $(printf '%s\n' "${rsss[@]}" | sort -n | sed -n "$(( (REPEATS + 1) / 2 ))p") / 1024" | bc)"
done
