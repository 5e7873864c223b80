"""Python Dramatiq's side of bench/rabbitmq_bench.py: the benchmark actors on RabbitmqBroker.

Worker side:   python -m dramatiq rabbit_bench_module --path bench -p P -t T
Producer side: import rabbit_bench_module; rabbit_bench_module.noop.send()

Reads BENCH_RABBITMQ_URL, BENCH_REDIS_URL (where `count` increments `bench:count`) and
BENCH_CONFIRM (1: publisher confirms, as ours always has; Dramatiq's default is off).
"""

import os

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

broker = RabbitmqBroker(
    url=os.environ["BENCH_RABBITMQ_URL"],
    confirm_delivery=os.environ.get("BENCH_CONFIRM") == "1",
)
dramatiq.set_broker(broker)

_side = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


@dramatiq.actor(queue_name="default", max_retries=0)
def noop():
    pass


@dramatiq.actor(queue_name="default", max_retries=0)
def count():
    _side.incr("bench:count")
