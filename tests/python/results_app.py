"""A Python Dramatiq 2.2 worker app for the results interop tests: Results and GroupCallbacks
on the Redis broker, sharing Redis with the Rust side.

Run as `python -m dramatiq results_app --path tests/python --queues results_py_q` with
REDIS_URL, DRAMATIQ_NAMESPACE (broker) and RESULTS_NAMESPACE (results) set.
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import GroupCallbacks
from dramatiq.rate_limits.backends import RedisBackend as RateLimiterBackend
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ["REDIS_URL"]
broker = RedisBroker(url=URL, namespace=os.environ["DRAMATIQ_NAMESPACE"])
broker.add_middleware(Results(backend=RedisBackend(url=URL, namespace=os.environ["RESULTS_NAMESPACE"])))
broker.add_middleware(GroupCallbacks(RateLimiterBackend(url=URL), barrier_ttl=60_000))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="results_py_q", store_results=True)
def py_results_mul(x, y):
    return x * y
