#!/usr/bin/env python3
"""Slow-job benchmark: the makespan of N slow messages on P x T workers against the ideal, for
Python Dramatiq and one or more builds of our worker, on one private Redis, in one run.

Run it with a Python that has `dramatiq[redis]==2.2.1` (the project's venv), from anywhere:

    .venv/bin/python bench/slow_jobs.py                      # rust (target/release) + dramatiq
    .venv/bin/python bench/slow_jobs.py --impl base=/path/a/bench_worker \\
        --impl new=/path/b/bench_worker --impl dramatiq --repeats 3

Every message is the actor `sleep_ms(ms, t_send)` (examples/bench/actors.rs for us,
bench/slow_module.py for Dramatiq), enqueued with Python Dramatiq's `.send()`, so every
implementation consumes the same bytes. It sleeps `ms` and records
`"<pid> <t_send> <start> <end>"` in `bench:slow`; a no-op is `sleep_ms(0, t_send)`.

Workloads (`--workloads`, comma-separated):
    10x1s@2x1         batch: 10 messages of 1 s, pre-enqueued, on 2 processes x 1 thread
    200+10x1s@2x1     mixed: 10 messages of 1 s spread evenly among 200 no-ops, pre-enqueued
    20x1s/0.4s@2x1    stream: 20 messages of 1 s sent one every 0.4 s to a ready worker

Per implementation and workload: flush Redis, pre-enqueue (batch, mixed), launch the worker in
its own session, wait until every message has its record, then SIGTERM the worker and wait
(SIGKILL after --stop-timeout). For a stream the worker is launched first and is ready once a
probe message has run and --settle seconds have passed. Reported:
  * makespan: last actor end - worker launch (batch, mixed) or - first send (stream);
    "from first start": last actor end - first actor start;
  * ideal: the same messages on P x T slots taken first-come first-served with no overhead,
    i.e. ceil(N / (P x T)) x duration for a batch (no-ops count as 0 s);
  * stream: wait = actor start - t_send (p50 and max), with the ideal's;
  * split: slow messages (ms > 0) run by each worker process, most first;
  * makespan vs the reference implementation (--reference, default dramatiq).
Medians over --repeats, [min-max] when repeated (the ideal: median only). The Markdown table is printed and written
with raw.json and the worker logs to --out (default /tmp/slow-jobs/<UTC stamp>/).
"""

import argparse
import contextlib
import heapq
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECORDS = "bench:slow"
QUEUE = "dramatiq:default"
DEAD_LETTERS = "dramatiq:default.XQ"
DEFAULT_WORKLOADS = "10x1s@2x1,20x0.5s@2x1,40x0.2s@2x2,200+10x1s@2x1,20x1s/0.4s@2x1,20x1s/0.6s@2x1"
WORKLOAD_RE = re.compile(
    r"^(?:(?P<noops>\d+)\+)?(?P<count>\d+)x(?P<seconds>[\d.]+)s"
    r"(?:/(?P<interval>[\d.]+)s)?@(?P<processes>\d+)x(?P<threads>\d+)$"
)


def log(*parts):
    """Progress on stderr, so stdout carries only the final table."""
    print(time.strftime("[%H:%M:%S]"), *parts, file=sys.stderr, flush=True)


class RunFailed(Exception):
    """One implementation failed one workload; the run goes on with the next."""


@dataclass(frozen=True)
class Workload:
    """`count` messages of `seconds` on `processes` x `threads`, with `noops` no-ops spread
    among them (mixed) or sent one every `interval` seconds to a running worker (stream)."""

    spec: str
    count: int
    seconds: float
    processes: int
    threads: int
    noops: int = 0
    interval: float | None = None

    @classmethod
    def parse(cls, spec):
        """`[NOOPS+]COUNTxSECONDSs[/INTERVALs]@PxT`, e.g. `10x1s@2x1`."""
        m = WORKLOAD_RE.match(spec)
        if not m:
            raise ValueError(f"workload {spec!r}: expected [NOOPS+]COUNTxSECONDSs[/INTERVALs]@PxT")
        g = m.groupdict()
        w = cls(spec, int(g["count"]), float(g["seconds"]), int(g["processes"]), int(g["threads"]),
                int(g["noops"] or 0), float(g["interval"]) if g["interval"] else None)
        if w.noops and w.stream:
            raise ValueError(f"workload {spec!r}: a stream has no no-ops")
        if min(w.count, w.processes, w.threads) < 1 or w.seconds <= 0:
            raise ValueError(f"workload {spec!r}: counts and duration must be positive")
        return w

    @property
    def stream(self):
        """Whether messages arrive over time rather than all before the launch."""
        return self.interval is not None

    @property
    def slots(self):
        """Messages that can run at once."""
        return self.processes * self.threads

    @property
    def label(self):
        """The workload in words, for the table."""
        cfg = f"{self.processes}x{self.threads}"
        if self.stream:
            return f"{self.count} x {self.seconds:g}s, one every {self.interval:g}s, on {cfg}"
        if self.noops:
            return f"{self.noops} no-ops + {self.count} x {self.seconds:g}s on {cfg}"
        return f"{self.count} x {self.seconds:g}s on {cfg}"

    def durations_ms(self):
        """Every message's `ms` in send order: each slow one followed by its share of no-ops."""
        ms = round(self.seconds * 1000)
        out = []
        for i in range(self.count):
            out.append(ms)
            out.extend([0] * (self.noops * (i + 1) // self.count - self.noops * i // self.count))
        return out


def ideal_schedule(arrivals, durations, slots):
    """(start, end) of each message taken first-come first-served by `slots` workers with no
    overhead; `arrivals` in send order."""
    free = [0.0] * slots
    out = []
    for arrival, duration in zip(arrivals, durations):
        start = max(arrival, heapq.heappop(free))
        heapq.heappush(free, start + duration)
        out.append((start, start + duration))
    return out


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


# ------------------------------------------------------------------ processes

def children(pid):
    """Direct children of `pid`, from /proc."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


def process_tree(pid):
    """`pid` and its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            out.append(p)
            todo.extend(children(p))
    return out


def alive(pid):
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Worker:
    """A worker command launched in its own session; stopped by the pids of its tree."""

    def __init__(self, argv, env, logpath):
        with open(logpath, "w") as logf:
            self.launched_at = time.time()
            self.proc = subprocess.Popen(argv, cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.pids = {self.proc.pid}

    def check(self):
        """Record the tree's pids (for the stop) and fail if the worker has exited."""
        self.pids.update(process_tree(self.proc.pid))
        if self.proc.poll() is not None:
            raise RunFailed(f"worker exited early with status {self.proc.returncode}")

    def stop(self, timeout):
        """SIGTERM the launched process and wait; SIGKILL whatever of its tree is left after
        `timeout` s (descendants get 5 s more once it has exited)."""
        self.pids.update(process_tree(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"worker {self.proc.pid} still running {timeout:g}s after SIGTERM; SIGKILL")
        deadline = time.monotonic() + 5
        left = [p for p in self.pids if p != self.proc.pid]
        while time.monotonic() < deadline and any(alive(p) for p in left):
            time.sleep(0.05)
        for pid in [p for p in left if alive(p)] + ([self.proc.pid] if self.proc.poll() is None else []):
            log(f"SIGKILL pid {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


@contextlib.contextmanager
def private_redis(port, outdir):
    """A throw-away `redis-server` on 127.0.0.1:`port` (refused if the port answers), yielding a
    client; stopped by its pid on exit, also on error."""
    import redis

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            sys.exit(f"something already answers on 127.0.0.1:{port}; refusing to use it (see --port)")
    pidfile = f"/tmp/slow-jobs-redis-{port}.pid"
    if os.path.exists(pidfile):
        os.remove(pidfile)  # stale: nothing answers on the port
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--pidfile", pidfile,
                    "--logfile", os.path.join(outdir, "redis-server.log")], check=True)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield client
    finally:
        deadline = time.monotonic() + 10
        while not os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            with open(pidfile) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            log(f"no pid in {pidfile}: is the redis-server on port {port} still running?")
        else:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ one run

class Bench:
    """Runs workloads against the private Redis, one worker command at a time."""

    def __init__(self, client, args):
        self.r = client
        self.args = args
        url = f"redis://127.0.0.1:{args.port}/0"
        self.env = dict(os.environ, BENCH_REDIS_URL=url, REDIS_URL=url)
        os.environ["BENCH_REDIS_URL"] = url
        sys.path.insert(0, HERE)
        import slow_module  # the producer: Python Dramatiq's `.send()`

        self.sleep_ms = slow_module.sleep_ms
        self.last_send = 0.0

    def send(self, ms):
        """Enqueue `sleep_ms(ms, t_send)`; t_send is unique, as it keys the records."""
        t_send = max(time.time(), math.nextafter(self.last_send, math.inf))
        self.sleep_ms.send(ms, t_send)
        self.last_send = t_send
        return t_send

    def wait_records(self, worker, n, timeout):
        """Poll until `bench:slow` holds `n` records; return them as (pid, t_send, start, end)."""
        deadline = time.monotonic() + timeout
        while self.r.llen(RECORDS) < n:
            worker.check()
            if self.r.zcard(DEAD_LETTERS):
                raise RunFailed("a message was dead-lettered (see the worker log)")
            if time.monotonic() > deadline:
                raise RunFailed(f"timeout: {self.r.llen(RECORDS)}/{n} messages ran in {timeout:g}s")
            time.sleep(0.01)
        records = []
        for raw in self.r.lrange(RECORDS, 0, -1):
            pid, *times = raw.decode().split()
            records.append((int(pid), *map(float, times)))
        return records

    def run(self, command, w, tag):
        """One implementation (its worker command template) on one workload: a dict of figures."""
        self.r.flushdb()
        durations = w.durations_ms()
        sent = {}  # t_send -> ms
        if not w.stream:
            for ms in durations:
                sent[self.send(ms)] = ms
            if self.r.llen(QUEUE) != len(durations):
                raise RunFailed(f"pre-enqueue: {self.r.llen(QUEUE)} messages queued, not {len(durations)}")
        argv = shlex.split(command.format(P=w.processes, T=w.threads))
        worker = Worker(argv, self.env, os.path.join(self.args.out, f"worker-{tag}.log"))
        try:
            if w.stream:
                self.send(0)
                self.wait_records(worker, 1, self.args.run_timeout)
                time.sleep(self.args.settle)
                self.r.delete(RECORDS)
                begin = time.monotonic()
                for i, ms in enumerate(durations):
                    time.sleep(max(0.0, begin + i * w.interval - time.monotonic()))
                    sent[self.send(ms)] = ms
            records = self.wait_records(worker, len(durations), self.args.run_timeout)
        finally:
            worker.stop(self.args.stop_timeout)
        return figures(w, sent, records, worker.launched_at)


def figures(w, sent, records, launched_at):
    """The reported figures of one run, from the messages sent and the records of those that ran."""
    ran = sorted(r[1] for r in records)
    if ran != sorted(sent):
        raise RunFailed(f"{len(records)} records for {len(sent)} messages, not one each")
    t0 = min(sent) if w.stream else launched_at
    first_start = min(r[2] for r in records)
    last_end = max(r[3] for r in records)
    order = sorted(sent)
    arrivals = [t - t0 for t in order] if w.stream else [0.0] * len(order)
    ideal = ideal_schedule(arrivals, [sent[t] / 1000 for t in order], w.slots)
    per_pid = {}
    for pid, t_send, _, _ in records:
        if sent[t_send]:
            per_pid[pid] = per_pid.get(pid, 0) + 1
    split = sorted(per_pid.values(), reverse=True)
    split += [0] * (w.processes - len(split))
    out = {
        "makespan_s": last_end - t0,
        "from_first_start_s": last_end - first_start,
        "first_start_s": first_start - t0,
        "ideal_s": max(end for _, end in ideal),
        "split": "/".join(map(str, split)),
    }
    out["ratio"] = out["makespan_s"] / out["ideal_s"]
    if w.stream:
        waits = [(r[2] - r[1]) * 1000 for r in records]
        ideal_waits = [(start - arrival) * 1000 for (start, _), arrival in zip(ideal, arrivals)]
        out.update(wait_p50_ms=percentile(waits, 50), wait_max_ms=max(waits),
                   ideal_wait_p50_ms=percentile(ideal_waits, 50), ideal_wait_max_ms=max(ideal_waits))
    return out


# ------------------------------------------------------------------ report

def num(v):
    """Two decimals below 100 (5.03 s, 1.25 ms), none above (1405 ms)."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"


def cell(values, spread=True):
    """Median of the repeats, with [min-max] when there are several and `spread`."""
    if not values:
        return "failed"
    text = num(statistics.median(values))
    if spread and len(values) > 1:
        text += f" [{num(min(values))}–{num(max(values))}]"
    return text


def report(workloads, impls, results, reference, header):
    """The Markdown report: batch and mixed workloads, then streams, then failures."""
    batch = ["| workload | impl | makespan (s) | from first start (s) | ideal (s) | makespan/ideal | "
             f"split | makespan vs {reference} |", "|---|---|---|---|---|---|---|---|"]
    stream = ["| workload | impl | wait p50 (ms) | wait max (ms) | ideal wait p50 / max (ms) | makespan (s) | "
              f"ideal (s) | makespan/ideal | split | makespan vs {reference} |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    failures = []
    for w in workloads:
        ref = [r["makespan_s"] for r in results[w.spec].get(reference, []) if "error" not in r]
        for name in impls:
            runs = results[w.spec].get(name, [])
            ok = [r for r in runs if "error" not in r]
            failures += [f"- {name}, {w.label}: {r['error']}" for r in runs if "error" in r]

            def col(key, spread=True):
                return cell([r[key] for r in ok], spread)

            splits = " · ".join(r.get("split", "failed") for r in runs)
            vs = (f"{statistics.median(r['makespan_s'] for r in ok) / statistics.median(ref):.2f}×"
                  if ok and ref else "")
            if w.stream:
                stream.append(f"| {w.label} | {name} | {col('wait_p50_ms')} | {col('wait_max_ms')} | "
                              f"{col('ideal_wait_p50_ms', False)} / {col('ideal_wait_max_ms', False)} | "
                              f"{col('makespan_s')} | {col('ideal_s', False)} | {col('ratio')} | {splits} | {vs} |")
            else:
                batch.append(f"| {w.label} | {name} | {col('makespan_s')} | {col('from_first_start_s')} | "
                             f"{col('ideal_s', False)} | {col('ratio')} | {splits} | {vs} |")
    parts = [header]
    if len(batch) > 2:
        parts.append("Batches: makespan from the worker's launch; split = slow messages per process.\n\n"
                     + "\n".join(batch))
    if len(stream) > 2:
        parts.append("Streams: makespan from the first send; wait = actor start − send.\n\n"
                     + "\n".join(stream))
    if failures:
        parts.append("Failed runs:\n\n" + "\n".join(failures))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------ main

def parse_impls(specs):
    """`NAME=COMMAND` or a built-in `rust` / `dramatiq`, in order; a repeated name gets `#2`...
    A command without `{P}` gets `--processes {P} --threads {T}` appended."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    builtin = {
        "rust": shlex.quote(os.path.join(target, "release", "examples", "bench_worker")),
        "dramatiq": shlex.join([os.path.join(os.path.dirname(sys.executable), "dramatiq"), "slow_module",
                                "--path", HERE]),
    }
    impls = {}
    for spec in specs or ["rust", "dramatiq"]:
        name, _, cmd = spec.partition("=")
        cmd = cmd or builtin.get(name)
        if not cmd:
            sys.exit(f"--impl {spec!r}: give NAME=COMMAND (built-in names: {', '.join(builtin)})")
        if "{P}" not in cmd:
            cmd += " --processes {P} --threads {T}"
        exe = shlex.split(cmd)[0]
        if not os.access(exe, os.X_OK):
            sys.exit(f"--impl {spec!r}: {exe} is not an executable (build it: cargo build --release "
                     "-p actor-examples --example bench_worker; or run with the venv that has dramatiq)")
        label, k = name, 1
        while label in impls:
            k += 1
            label = f"{name}#{k}"
        impls[label] = cmd
    return impls


def main():
    def on_sigterm(signum, _frame):
        raise SystemExit(128 + signum)  # run the `finally:`s: stop the worker, then Redis

    signal.signal(signal.SIGTERM, on_sigterm)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", action="append", metavar="NAME[=COMMAND]",
                    help="an implementation to run, repeatable (default: rust and dramatiq); "
                         "{P} {T} in COMMAND are the processes and threads")
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS, help=f"default: {DEFAULT_WORKLOADS}")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--reference", default="dramatiq", help="the implementation ratios are taken against")
    ap.add_argument("--port", type=int, default=6391, help="port of the private redis-server")
    ap.add_argument("--settle", type=float, default=2.0, help="s between a stream's probe and its first send")
    ap.add_argument("--run-timeout", type=float, default=120.0, help="max s for one implementation's run")
    ap.add_argument("--stop-timeout", type=float, default=30.0, help="s from SIGTERM to SIGKILL")
    ap.add_argument("--out", help="folder for results.md, raw.json and logs")
    args = ap.parse_args()
    try:
        workloads = [Workload.parse(s) for s in args.workloads.split(",") if s]
    except ValueError as e:
        sys.exit(str(e))
    impls = parse_impls(args.impl)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out = args.out or os.path.join("/tmp/slow-jobs", stamp)
    os.makedirs(args.out, exist_ok=True)

    results = {w.spec: {} for w in workloads}
    with private_redis(args.port, args.out) as client:
        bench = Bench(client, args)
        # Repeats outermost and implementations innermost, so drift hits every one alike.
        for rep in range(1, args.repeats + 1):
            for w in workloads:
                for name, command in impls.items():
                    tag = f"{name}-{w.spec}-{rep}".replace("/", "per").replace("#", "")
                    log(f"{name}: {w.label} (repeat {rep}/{args.repeats})")
                    try:
                        fig = bench.run(command, w, tag)
                        log(f"  makespan {fig['makespan_s']:.2f}s, ideal {fig['ideal_s']:.2f}s, split {fig['split']}")
                    except RunFailed as e:
                        log(f"  failed: {e}")
                        fig = {"error": str(e)}
                    results[w.spec].setdefault(name, []).append(fig)
        redis_version = client.info("server")["redis_version"]

    header = (f"# Slow jobs: makespan vs ideal ({stamp})\n\n"
              f"{os.cpu_count()} CPUs, redis-server {redis_version} on port {args.port}, "
              f"{args.repeats} repeat(s). Implementations:\n\n"
              + "\n".join(f"- `{name}`: `{command}`" for name, command in impls.items()))
    table = report(workloads, list(impls), results, args.reference, header)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "raw.json"), "w") as f:
        json.dump({"args": vars(args), "impls": impls, "results": results}, f, indent=1)
    print(table)
    log(f"written to {args.out}/results.md")


if __name__ == "__main__":
    main()
