"""The Dramatiq RabbitmqBroker the RabbitMQ interop scripts use, built from the environment:
RABBITMQ_URL, RABBITMQ_MAX_PRIORITY, and RABBITMQ_QUEUE_TYPE=quorum for quorum queues.

Dramatiq 2.2.1 declares classic queues only. A Python team on quorum queues adds
`x-queue-type = quorum` to every declaration (`Q`, `Q.DQ` and `Q.XQ`), as below: RabbitMQ
refuses a redeclaration whose queue type differs, so both sides must declare the same type."""

import os

from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import xq_name


class QuorumRabbitmqBroker(RabbitmqBroker):
    """RabbitmqBroker declaring quorum queues."""

    def _build_queue_arguments(self, queue_name):
        arguments = super()._build_queue_arguments(queue_name)
        arguments["x-queue-type"] = "quorum"
        return arguments

    def _declare_xq_queue(self, queue_name):
        return self.channel.queue_declare(
            queue=xq_name(queue_name),
            durable=True,
            arguments={"x-message-ttl": DEAD_MESSAGE_TTL, "x-queue-type": "quorum"},
        )


def from_env():
    max_priority = int(os.environ.get("RABBITMQ_MAX_PRIORITY") or 0) or None
    kind = os.environ.get("RABBITMQ_QUEUE_TYPE") or "classic"
    cls = {"classic": RabbitmqBroker, "quorum": QuorumRabbitmqBroker}[kind]
    return cls(url=os.environ["RABBITMQ_URL"], max_priority=max_priority)
