"""What a Python operator sees: for each queue named on the command line, Dramatiq's own
`qsize` (what RedisBroker.join waits on), the raw counts, and the dead letters decoded with
dramatiq.Message. Prints JSON. Reads REDIS_URL and DRAMATIQ_NAMESPACE."""

import json
import os
import sys

import dramatiq
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ["DRAMATIQ_NAMESPACE"]
broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=NAMESPACE)
client = broker.client

report = {}
for queue in sys.argv[1:]:
    dead = []
    for rid, score in client.zrange(f"{NAMESPACE}:{queue}.XQ", 0, -1, withscores=True):
        data = client.hget(f"{NAMESPACE}:{queue}.XQ.msgs", rid)
        message = dramatiq.Message.decode(data) if data is not None else None
        dead.append(
            {
                "redis_message_id": rid.decode(),
                "dead_at": int(score),
                "message_id": message and message.message_id,
                "actor_name": message and message.actor_name,
                "args": message and list(message.args),
            }
        )
    report[queue] = {
        "qsize": broker.do_qsize(queue),
        "ready": client.llen(f"{NAMESPACE}:{queue}"),
        "delayed": client.hlen(f"{NAMESPACE}:{queue}.DQ.msgs"),
        "dead": client.zcard(f"{NAMESPACE}:{queue}.XQ"),
        "dead_letters": dead,
    }
print(json.dumps(report))
