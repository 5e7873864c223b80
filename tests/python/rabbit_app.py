"""The Python side of the RabbitMQ interop tests: a Dramatiq 2.2 app on Dramatiq's RabbitmqBroker.

Run by the tests as `python -m dramatiq rabbit_app --processes 1 --threads 2` with RABBITMQ_URL,
RABBIT_QUEUE (the test's queue), RABBIT_RESULTS (a file the actors append JSON lines to) and
optionally RABBITMQ_MAX_PRIORITY and RABBITMQ_QUEUE_TYPE set (see rabbit_broker.py).
"""

import json
import os

import dramatiq
from dramatiq.middleware import CurrentMessage

import rabbit_broker

broker = rabbit_broker.from_env()
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)

QUEUE = os.environ["RABBIT_QUEUE"]
RESULTS = os.environ["RABBIT_RESULTS"]


def record(**entry):
    message = CurrentMessage.get_current_message()
    entry["message_id"] = message.message_id
    entry["retries"] = message.options.get("retries", 0)
    entry["runner"] = "python"
    with open(RESULTS, "a") as out:
        out.write(json.dumps(entry) + "\n")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def rabbit_py_add(x, y, scale=1):
    record(actor="rabbit_py_add", value=(x + y) * scale)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def rabbit_py_fail(reason):
    record(actor="rabbit_py_fail", value=reason)
    raise ValueError(reason)


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=100, max_backoff=200)
def rabbit_py_flaky(tag):
    retries = CurrentMessage.get_current_message().options.get("retries", 0)
    record(actor="rabbit_py_flaky", value=tag)
    if retries == 0:
        raise ValueError("first try fails")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def rabbit_fleet(key, n):
    record(actor="rabbit_fleet", value=n)
