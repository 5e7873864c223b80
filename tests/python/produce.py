"""A Python producer for the Rust worker: sends positional args, kwargs, a delayed message and a
retry exactly as Dramatiq's Retries middleware schedules one, then prints their message ids
as JSON. Reads REDIS_URL, DRAMATIQ_NAMESPACE and INTEROP_KEY (passed to every actor)."""

import json
import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["DRAMATIQ_NAMESPACE"])
dramatiq.set_broker(broker)
KEY = os.environ["INTEROP_KEY"]


# Declarations of the Rust actors (the bodies never run in Python).
@dramatiq.actor(queue_name="interop_rs")
def interop_rs_add(key, x, y):
    raise NotImplementedError


@dramatiq.actor(queue_name="interop_rs")
def interop_rs_greet(key, name, punctuation="."):
    raise NotImplementedError


sent = {}
sent["positional"] = interop_rs_add.send(KEY, 1, 2).message_id
sent["kwargs"] = interop_rs_add.send_with_options(args=(KEY, 3), kwargs={"y": 4}).message_id
# `time_limit=inf` puts a bare `Infinity` token in the JSON, as Python's encoder writes it.
sent["greet"] = interop_rs_greet.send_with_options(
    args=(KEY,), kwargs={"name": "Ada", "punctuation": "!"}, time_limit=float("inf")
).message_id
sent["delayed"] = interop_rs_add.send_with_options(args=(KEY, 5, 6), delay=300).message_id

# A retry, as Retries.after_process_message schedules it: same message, bookkeeping options,
# re-enqueued with a delay (so through the `.DQ` queue, under a new redis_message_id).
first = interop_rs_add.message(KEY, 7, 8)
retry = first.copy(
    options={
        **first.options,
        "retries": 1,
        "traceback": "Traceback (most recent call last):\n  ...\nValueError: boom\n",
        "requeue_timestamp": int(time.time() * 1000),
    }
)
broker.enqueue(retry, delay=200)
sent["retry"] = retry.message_id

print(json.dumps(sent))
