"""Python Dramatiq's side of the slow-job benchmark (`bench/slow_jobs.py`).

Worker side:   dramatiq slow_module --path <this folder> --processes P --threads T
Producer side: import slow_module; slow_module.sleep_ms.send(ms, t_send)

`sleep_ms(ms, t_send)` has the same name, queue, arguments and record as the Rust actor in
`examples/bench/actors.rs`, so either worker consumes the same enqueued messages:

  sleep_ms(ms, t_send)  sleeps ms milliseconds, then
                        RPUSH bench:slow "<pid> <t_send> <start> <end>" (wall-clock seconds)

The record goes through its own Redis connection, separate from the broker's.
"""

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

REDIS_URL = os.environ["BENCH_REDIS_URL"]

broker = RedisBroker(url=REDIS_URL)
dramatiq.set_broker(broker)

_side = redis.Redis.from_url(REDIS_URL)


@dramatiq.actor(queue_name="default", max_retries=0)
def sleep_ms(ms, t_send):
    """A slow job (think of an LLM call) that records when and where it ran."""
    start = time.time()
    time.sleep(ms / 1000)
    end = time.time()
    _side.rpush("bench:slow", f"{os.getpid()} {t_send!r} {start!r} {end!r}")
