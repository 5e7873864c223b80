"""Python Dramatiq 2.2.1's side of the results and rate-limiter interop tests.

Usage: results_interop.py COMMAND ARGS..., with REDIS_URL set. Prints one JSON object.

  get NAMESPACE MESSAGE_JSON            read a result with dramatiq's RedisBackend
  store NAMESPACE MESSAGE_JSON VALUE    store VALUE (JSON) as the message's result
  store_failure NAMESPACE MESSAGE_JSON  store a ValueError("boom from python")
  limiter KEY                           try a ConcurrentRateLimiter(limit=1) on KEY
"""

import json
import os
import sys

import redis
from dramatiq import Message
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend as RateLimiterBackend
from dramatiq.results import ResultFailure, ResultMissing
from dramatiq.results.backends import RedisBackend

TTL_MS = 60_000


def client():
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def message(raw):
    # Our JSON is Dramatiq's seven keys: Message(**fields) accepts nothing else.
    return Message(**json.loads(raw))


def main(command, *args):
    if command == "get":
        namespace, raw = args
        backend = RedisBackend(client=client(), namespace=namespace)
        msg = message(raw)
        try:
            return {"result": backend.get_result(msg), "key": backend.build_message_key(msg)}
        except ResultMissing:
            return {"missing": True, "key": backend.build_message_key(msg)}
        except ResultFailure as failure:
            return {"failure": {"type": failure.orig_exc_type, "msg": failure.orig_exc_msg}}
    if command == "store":
        namespace, raw, value = args
        RedisBackend(client=client(), namespace=namespace).store_result(
            message(raw), json.loads(value), TTL_MS
        )
        return {"stored": True}
    if command == "store_failure":
        namespace, raw = args
        RedisBackend(client=client(), namespace=namespace).store_exception(
            message(raw), ValueError("boom from python"), TTL_MS
        )
        return {"stored": True}
    if command == "limiter":
        (key,) = args
        limiter = ConcurrentRateLimiter(RateLimiterBackend(client=client()), key, limit=1)
        with limiter.acquire(raise_on_failure=False) as acquired:
            return {"acquired": acquired}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
