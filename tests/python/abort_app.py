"""A Python Dramatiq 2.2 worker app with dramatiq-abort 1.2.1's Abortable middleware, for the
cancellation interop tests, sharing Redis with the Rust side.

As a worker: `python -m dramatiq abort_app --path tests/python --queues cancel_py` with
REDIS_URL, DRAMATIQ_NAMESPACE (broker) and ABORT_NAMESPACE (cancel events) set; the actors
write what happened to them into Redis keys `<DRAMATIQ_NAMESPACE>:seen:<key>`.

As a producer: `python abort_app.py <message_id>` calls `dramatiq_abort.abort` on it.
"""

import os
import sys
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq_abort import Abort, Abortable, abort
from dramatiq_abort.backends import RedisBackend

URL = os.environ["REDIS_URL"]
NS = os.environ["DRAMATIQ_NAMESPACE"]
client = redis.Redis.from_url(URL)
abortable = Abortable(
    backend=RedisBackend(client=client, namespace=os.environ["ABORT_NAMESPACE"])
)
broker = RedisBroker(url=URL, namespace=NS)
broker.add_middleware(abortable)
dramatiq.set_broker(broker)


def seen(key, what):
    client.rpush(f"{NS}:seen:{key}", what)


@dramatiq.actor(queue_name="cancel_py", actor_name="cancel_py_long", max_retries=0)
def cancel_py_long(key):
    seen(key, "started")
    try:
        for _ in range(600):
            time.sleep(0.05)
        seen(key, "finished")
    except Abort:
        seen(key, "aborted")
        raise


@dramatiq.actor(queue_name="cancel_py", actor_name="cancel_py_quick", max_retries=0)
def cancel_py_quick(key):
    seen(key, "ran")


if __name__ == "__main__":
    abort(sys.argv[1], middleware=abortable)
