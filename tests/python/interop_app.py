"""The Python side of the interop tests: a Dramatiq 2.2 app on the namespace the Rust test chose.

Run by the tests as `python -m dramatiq interop_app --path tests/python --processes 1 --threads 1`
with REDIS_URL and DRAMATIQ_NAMESPACE set. Actors record what they ran in the raw list
`{namespace}:interop.results` (JSON lines), which the Rust test reads.
"""

import json
import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

NAMESPACE = os.environ["DRAMATIQ_NAMESPACE"]
broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=NAMESPACE)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)

RESULTS = f"{NAMESPACE}:interop.results"


def record(**entry):
    message = CurrentMessage.get_current_message()
    entry["message_id"] = message.message_id
    entry["queue_name"] = message.queue_name
    broker.client.rpush(RESULTS, json.dumps(entry))


@dramatiq.actor(queue_name="interop_py", max_retries=0)
def interop_py_add(x, y, scale=1):
    record(actor="interop_py_add", value=(x + y) * scale)


@dramatiq.actor(queue_name="interop_py_slow", max_retries=0)
def interop_py_slow(seconds):
    record(actor="interop_py_slow", value="started")
    time.sleep(seconds)
    record(actor="interop_py_slow", value="finished")
