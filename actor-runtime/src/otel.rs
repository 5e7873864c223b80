//! OpenTelemetry tracing across the queue (feature `opentelemetry`).
//!
//! A send puts the W3C trace context (`traceparent`, `tracestate`) of a `send` span into the
//! message's `trace_ctx` option, the key Python's Dramatiq and Remoulade instrumentations
//! use, so a trace started in a Python service continues in our worker and the other way
//! round. The worker runs each attempt in a `process` span of kind consumer whose parent is
//! that context; what the actor (and the middleware after it) sends meanwhile, a pipeline's
//! next step among them, becomes its child, so a pipeline is one trace.
//!
//! Only a send inside a trace (a current span, e.g. a traced web request's) gets a `send`
//! span and a context; a message sent outside any trace has none, and each of its attempts
//! starts a trace of its own. A message keeps the context it was first sent with: a retry
//! is another `process` span under the same `send` span. A `trace_ctx` that is not an object
//! of strings, or a malformed `traceparent`, is ignored (the attempt starts a trace of its
//! own).
//!
//! Spans go to the global tracer provider (`opentelemetry::global::set_tracer_provider`);
//! without one they cost little and export nothing. The propagation format is W3C trace
//! context whatever global propagator is set, as Python's default is.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::{Map, Value};

use crate::message::Message;

/// The option holding a message's trace context.
pub(crate) const TRACE_CTX: &str = "trace_ctx";

/// The instrumentation scope of our spans.
const SCOPE: &str = "actor-runtime";

/// A message's option map as a propagation carrier.
struct Carrier<'a>(&'a mut Map<String, Value>);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

/// A received `trace_ctx`: only its string values are read.
struct Received<'a>(&'a Map<String, Value>);

impl Extractor for Received<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

fn attributes(message: &Message, system: &'static str, operation: &'static str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", system),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new(
            "messaging.destination.name",
            message.canonical_queue().to_owned(),
        ),
        KeyValue::new("messaging.message.id", message.message_id.clone()),
        KeyValue::new("messaging.dramatiq.actor", message.actor_name.clone()),
    ]
}

/// The `send` span of one message, ended by [`finish`](Send::finish).
pub(crate) struct Send(Option<Context>);

/// Starts a `send` span for a message sent inside a trace, unless the message has its
/// context already or is a retry, and writes that span's context into its `trace_ctx`.
pub(crate) fn start_send(message: &mut Message, system: &'static str) -> Send {
    if message.options.contains_key(TRACE_CTX)
        || message.retries() > 0
        || !Context::current().has_active_span()
    {
        return Send(None);
    }
    let tracer = global::tracer(SCOPE);
    let span = tracer
        .span_builder(format!("send {}", message.canonical_queue()))
        .with_kind(SpanKind::Producer)
        .with_attributes(attributes(message, system, "send"))
        .start_with_context(&tracer, &Context::current());
    let cx = Context::current_with_span(span);
    let mut carrier = Map::new();
    TraceContextPropagator::new().inject_context(&cx, &mut Carrier(&mut carrier));
    message
        .options
        .insert(TRACE_CTX.to_owned(), Value::Object(carrier));
    Send(Some(cx))
}

impl Send {
    /// Ends the span, with the send's error if it failed.
    pub(crate) fn finish<T>(self, result: &crate::Result<T>) {
        let Some(cx) = self.0 else { return };
        let span = cx.span();
        if let Err(err) = result {
            span.set_status(Status::error(err.to_string()));
        }
        span.end();
    }
}

/// The context of one attempt: a `process` span of kind consumer under the message's
/// `trace_ctx` (a root span without one).
pub(crate) fn start_process(message: &Message, system: &'static str) -> Context {
    let parent = match message.options.get(TRACE_CTX) {
        Some(Value::Object(received)) => TraceContextPropagator::new().extract(&Received(received)),
        _ => Context::new(),
    };
    let tracer = global::tracer(SCOPE);
    let mut attributes = attributes(message, system, "process");
    attributes.push(KeyValue::new(
        "messaging.dramatiq.retries",
        i64::from(message.retries()),
    ));
    let span = tracer
        .span_builder(format!("process {}", message.canonical_queue()))
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}

/// Ends an attempt's span: an error status with `failure` when the attempt failed.
pub(crate) fn finish_process(cx: &Context, failure: Option<&str>) {
    let span = cx.span();
    if let Some(failure) = failure {
        span.set_status(Status::error(failure.to_owned()));
    }
    span.end();
}
