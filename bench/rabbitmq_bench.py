"""Python Dramatiq 2.2.1 and actor-runtime side by side on one RabbitMQ, in one run.

    cargo build --release -p actor-examples --example bench_worker --example bench_enqueue
    /path/to/venv/bin/python bench/rabbitmq_bench.py            # N=20000, 3 repeats

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest, `rabbitmqctl` on the PATH: the run has a vhost
of its own, `bench-rabbit`, deleted at the end) and Redis on 127.0.0.1:6379 (the `count`
actor's counter, key `bench:count`). Measures, medians of the repeats:

- enqueue: no-op sends, each awaited one at a time, with and without publisher confirms (N
  without, BENCH_CONFIRM_N with: each then waits for RabbitMQ's disk sync), and our batch API
  (`Broker::enqueue_batch`, N messages, confirms on); BENCH_ONLY=enqueue stops there;
- end-to-end drain of N prefilled messages at 2 processes x 1 thread and 2 x 8, from the
  first message taken to the last done: `count` (each run INCRs a Redis counter; done when
  it reaches N, so every message provably ran) and `noop` (done when the queue has no ready
  message left: the last prefetched window, at most a few hundred no-ops, is not waited for).
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

import pika
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N = int(os.environ.get("BENCH_N", "20000"))
# One awaited send at a time with confirms waits for a disk sync each: fewer of those.
CONFIRM_N = int(os.environ.get("BENCH_CONFIRM_N", "2000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
VHOST = "bench-rabbit"
URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "default"
RUST_WORKER = os.path.join(ROOT, "target/release/examples/bench_worker")
RUST_ENQUEUE = os.path.join(ROOT, "target/release/examples/bench_enqueue")
side = redis.Redis.from_url(REDIS_URL)


def ctl(*args):
    subprocess.run(["rabbitmqctl", *args], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def channel():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    return conn, conn.channel()


def ready():
    conn, ch = channel()
    try:
        return ch.queue_declare(QUEUE, passive=True).method.message_count
    finally:
        conn.close()


def purge():
    conn, ch = channel()
    for name in (QUEUE, QUEUE + ".DQ", QUEUE + ".XQ", "bench_batch"):
        try:
            ch.queue_purge(name)
        except pika.exceptions.ChannelClosedByBroker:
            ch = conn.channel()
    conn.close()


def declare():
    # As both sides declare it: durable, dead-lettering to default.XQ.
    conn, ch = channel()
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": QUEUE + ".XQ"}
    ch.queue_declare(QUEUE, durable=True, arguments=args)
    ch.queue_declare(QUEUE + ".DQ", durable=True, arguments=args)
    ch.queue_declare(QUEUE + ".XQ", durable=True, arguments={"x-message-ttl": 86400000 * 7})
    conn.close()


def prefill(actor):
    """N messages of `actor` in Dramatiq's JSON (not timed), then waits until all are ready."""
    conn, ch = channel()
    now = int(time.time() * 1000)
    props = pika.BasicProperties(delivery_mode=2)
    for _ in range(N):
        body = json.dumps({
            "queue_name": QUEUE, "actor_name": actor, "args": [], "kwargs": {}, "options": {},
            "message_id": str(uuid.uuid4()), "message_timestamp": now,
        })
        ch.basic_publish("", QUEUE, body, props)
    conn.close()
    while ready() != N:
        time.sleep(0.05)


def env(**extra):
    e = os.environ.copy()
    e.update(BENCH_RABBITMQ_URL=URL, RABBITMQ_URL=URL, BENCH_REDIS_URL=REDIS_URL,
             BENCH_N=str(N), PYTHONPATH=HERE, RUST_LOG="warn")
    e.pop("REDIS_URL", None)
    e.pop("BROKER", None)
    e.update(extra)
    return e


def python_enqueue(confirm):
    n = CONFIRM_N if confirm else N
    code = (
        "import time, rabbit_bench_module as m\n"
        "m.broker.declare_queue('default')\n"
        f"t = time.perf_counter()\nfor _ in range({n}): m.noop.send()\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env(BENCH_CONFIRM="1" if confirm else "0"),
                         capture_output=True, text=True, check=True).stdout
    purge()
    return n / float(out.strip().splitlines()[-1])


def rust_enqueue(confirm):
    extra = dict(BENCH_BATCH="1", RABBITMQ_CONFIRMS="1" if confirm else "0")
    if confirm:
        extra["BENCH_SINGLE_N"] = str(CONFIRM_N)
    out = subprocess.run([RUST_ENQUEUE], env=env(**extra), capture_output=True,
                         text=True, check=True).stdout
    purge()
    kv = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return float(kv["enqueue_msgs_per_s"]), float(kv["enqueue_batch_msgs_per_s"])


def drain(impl, P, T, actor):
    purge()
    side.delete("bench:count")
    prefill(actor)
    if impl == "python":
        argv = [sys.executable, "-m", "dramatiq", "rabbit_bench_module", "--path", HERE,
                "-p", str(P), "-t", str(T)]
    else:
        argv = [RUST_WORKER, "--processes", str(P), "--threads", str(T)]
    proc = subprocess.Popen(argv, env=env(), cwd=HERE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    conn, ch = channel()
    try:
        t_first = None
        deadline = time.monotonic() + 600
        while True:
            left = ch.queue_declare(QUEUE, passive=True).method.message_count
            now = time.monotonic()
            if t_first is None and left < N:
                t_first = now
            done = int(side.get("bench:count") or 0) >= N if actor == "count" else left == 0
            if done:
                return N / (now - t_first)
            if now > deadline:
                raise RuntimeError(f"{impl} {P}x{T} {actor}: {left} left after 600 s")
            time.sleep(0.002)
    finally:
        conn.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def print_rows(rows):
    print(f"| N = {N:,}, medians of {REPEATS} | Python Dramatiq 2.2.1 | actor-runtime | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def median(f, *args):
    runs = [f(*args) for _ in range(REPEATS)]
    return statistics.median(runs)


def main():
    for path in (RUST_WORKER, RUST_ENQUEUE):
        if not os.path.exists(path):
            sys.exit(f"missing {path}: cargo build --release -p actor-examples "
                     "--example bench_worker --example bench_enqueue")
    ctl("delete_vhost", VHOST)
    ctl("add_vhost", VHOST)
    ctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    try:
        declare()
        rows = []
        py_plain = median(python_enqueue, False)
        py_conf = median(python_enqueue, True)
        rs_plain = [rust_enqueue(False) for _ in range(REPEATS)]
        rs_conf = [rust_enqueue(True) for _ in range(REPEATS)]
        med = lambda runs, i: statistics.median(r[i] for r in runs)
        rows.append(("enqueue, one awaited send at a time, confirms off (Dramatiq's default)",
                     f"{py_plain:,.0f} msg/s", f"{med(rs_plain, 0):,.0f} msg/s",
                     f"{med(rs_plain, 0) / py_plain:.1f}x"))
        rows.append((f"enqueue, one awaited send at a time, confirms on ({CONFIRM_N:,} sends)",
                     f"{py_conf:,.0f} msg/s", f"{med(rs_conf, 0):,.0f} msg/s",
                     f"{med(rs_conf, 0) / py_conf:.1f}x"))
        rows.append(("enqueue, Broker::enqueue_batch, confirms on", "(no batch API)",
                     f"{med(rs_conf, 1):,.0f} msg/s", ""))
        if os.environ.get("BENCH_ONLY") == "enqueue":
            print_rows(rows)
            return
        for actor in ("noop", "count"):
            for P, T in ((2, 1), (2, 8)):
                py = median(drain, "python", P, T, actor)
                rs_ = median(drain, "rust", P, T, actor)
                rows.append((f"drain {N:,} `{actor}`, {P} x {T}", f"{py:,.0f} msg/s",
                             f"{rs_:,.0f} msg/s", f"{rs_ / py:.1f}x"))
        print_rows(rows)
    finally:
        ctl("delete_vhost", VHOST)


if __name__ == "__main__":
    main()
