"""A traced Python producer: inside an OpenTelemetry span, sends one message to the Rust actor
`otel_py` with the W3C trace context in its `trace_ctx` option (the key the Python
instrumentations use), then prints the trace id, the span id and the message id as JSON.
Reads REDIS_URL, DRAMATIQ_NAMESPACE and OTEL_KEY (the actor's argument)."""

import json
import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["DRAMATIQ_NAMESPACE"])
dramatiq.set_broker(broker)
trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("otel_produce")


@dramatiq.actor(queue_name="otel_py")
def otel_py(key):
    raise NotImplementedError  # runs in Rust


with tracer.start_as_current_span("webhook") as span:
    carrier = {}
    TraceContextTextMapPropagator().inject(carrier)
    message = otel_py.send_with_options(args=(os.environ["OTEL_KEY"],), trace_ctx=carrier)
    context = span.get_span_context()
    print(
        json.dumps(
            {
                "trace_id": format(context.trace_id, "032x"),
                "span_id": format(context.span_id, "016x"),
                "message_id": message.message_id,
            }
        )
    )
