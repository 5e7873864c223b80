"""A Python producer for the Rust worker on RabbitMQ: positional args, kwargs, a delayed message
and a retry scheduled as Dramatiq's Retries middleware does (through the `.DQ` queue); prints
their message ids as JSON. With `declare` as argument, only declares the queue (with
RABBITMQ_MAX_PRIORITY and RABBITMQ_QUEUE_TYPE, see rabbit_broker.py) and prints `{}`. Reads
RABBITMQ_URL, RABBIT_QUEUE and INTEROP_KEY."""

import json
import os
import sys
import time

import dramatiq

import rabbit_broker

broker = rabbit_broker.from_env()
dramatiq.set_broker(broker)
QUEUE = os.environ["RABBIT_QUEUE"]
KEY = os.environ.get("INTEROP_KEY", "")


# Declarations of the Rust actors (the bodies never run in Python).
@dramatiq.actor(queue_name=QUEUE)
def rabbit_rs_add(key, x, y):
    raise NotImplementedError


@dramatiq.actor(queue_name=QUEUE)
def rabbit_rs_greet(key, name, punctuation="."):
    raise NotImplementedError


if sys.argv[1:] == ["declare"]:
    # Declares QUEUE, QUEUE.DQ and QUEUE.XQ on the server, as the first send would.
    broker.declare_queue(QUEUE, ensure=True)
    print("{}")
    sys.exit(0)

sent = {}
sent["positional"] = rabbit_rs_add.send(KEY, 1, 2).message_id
sent["kwargs"] = rabbit_rs_add.send_with_options(args=(KEY, 3), kwargs={"y": 4}).message_id
sent["greet"] = rabbit_rs_greet.send_with_options(
    args=(KEY,), kwargs={"name": "Ada", "punctuation": "!"}
).message_id
sent["delayed"] = rabbit_rs_add.send_with_options(args=(KEY, 5, 6), delay=300).message_id

# A retry, as Retries.after_process_message schedules it: the same message with the retry
# bookkeeping, re-enqueued with a delay (so through `.DQ`).
first = rabbit_rs_add.message(KEY, 7, 8)
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
