//! OpenTelemetry across the queue (feature `opentelemetry`): a send inside a trace carries
//! its W3C context in `trace_ctx`, each attempt is a consumer span under it, and what an
//! actor sends continues the trace. Spans go to an in-memory exporter installed once as the
//! global provider; each test picks out its own trace.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use actor_runtime::composition::TypedPipeline;
use actor_runtime::testing::TestBroker;
use actor_runtime::{actor, Worker};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{global, Context, Value as OtelValue};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;

use crate::interop::run_script;
use crate::support::redis::{broker, cleanup, config};
use crate::support::{eventually, namespace};

fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        global::set_tracer_provider(provider);
        exporter
    })
}

/// The finished spans of `trace`.
fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

/// The finished spans about message `id`.
fn spans_about(id: &str) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| attribute(s, "messaging.message.id").as_deref() == Some(id))
        .collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            OtelValue::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// Runs `f` inside a fresh root span `name`; returns its output and the span's ids.
async fn in_root_span<F: std::future::Future>(
    name: &'static str,
    f: F,
) -> (F::Output, TraceId, SpanId) {
    let tracer = global::tracer("otel-tests");
    let cx = Context::current_with_span(tracer.start(name));
    let (trace, span) = {
        let s = cx.span();
        (s.span_context().trace_id(), s.span_context().span_id())
    };
    let out = f.with_context(cx.clone()).await;
    cx.span().end();
    (out, trace, span)
}

#[actor(queue_name = "otel_steps")]
async fn otel_double(x: i64) -> i64 {
    x * 2
}

#[actor(queue_name = "otel_steps")]
async fn otel_inc(x: i64) -> i64 {
    x + 1
}

#[tokio::test]
async fn a_pipeline_sent_inside_a_trace_is_one_trace() {
    exporter();
    let test = TestBroker::new();
    let chain = TypedPipeline::new(otel_double::message(3))
        .then(otel_inc::pipe())
        .broker(test.broker());
    let (sent, trace, root) = in_root_span("webhook", chain.run()).await;
    sent.unwrap();
    let drained = test.drain().await.unwrap();
    drained.assert_no_dead_letters();
    assert_eq!(drained.runs.len(), 2);
    let (first, second) = (&drained.runs[0].message_id, &drained.runs[1].message_id);

    let spans = spans_of(trace);
    let find = |kind: SpanKind, id: &str| {
        spans
            .iter()
            .find(|s| {
                s.span_kind == kind && attribute(s, "messaging.message.id").as_deref() == Some(id)
            })
            .unwrap_or_else(|| panic!("a {kind:?} span of {id} in the trace: {spans:#?}"))
    };
    let send_1 = find(SpanKind::Producer, first);
    let process_1 = find(SpanKind::Consumer, first);
    let send_2 = find(SpanKind::Producer, second);
    let process_2 = find(SpanKind::Consumer, second);
    // webhook -> send step 1 -> process step 1 -> send step 2 -> process step 2.
    assert_eq!(send_1.parent_span_id, root);
    assert_eq!(process_1.parent_span_id, send_1.span_context.span_id());
    assert_eq!(send_2.parent_span_id, process_1.span_context.span_id());
    assert_eq!(process_2.parent_span_id, send_2.span_context.span_id());
    assert_eq!(spans.len(), 5, "{spans:#?}");
    assert_eq!(process_1.name, "process otel_steps");
    assert_eq!(
        attribute(process_1, "messaging.system").as_deref(),
        Some("stub")
    );
    assert_eq!(
        attribute(process_2, "messaging.dramatiq.actor").as_deref(),
        Some("otel_inc")
    );
    assert!(matches!(process_2.status, Status::Unset | Status::Ok));
}

fn attempts() -> &'static Mutex<std::collections::HashMap<String, u32>> {
    static ATTEMPTS: OnceLock<Mutex<std::collections::HashMap<String, u32>>> = OnceLock::new();
    ATTEMPTS.get_or_init(Default::default)
}

#[actor(
    queue_name = "otel_retry",
    max_retries = 3,
    min_backoff = 1,
    max_backoff = 1
)]
async fn otel_flaky(key: String) -> Result<(), String> {
    let mut attempts = attempts().lock().unwrap();
    let n = attempts.entry(key).or_default();
    *n += 1;
    if *n == 1 {
        Err("first attempt fails".into())
    } else {
        Ok(())
    }
}

#[tokio::test]
async fn each_attempt_is_a_consumer_span_under_the_one_send() {
    exporter();
    let test = TestBroker::new().skip_delays();
    let key = uuid::Uuid::new_v4().to_string();
    let (sent, trace, _) = in_root_span("request", test.scope(otel_flaky::send(key.clone()))).await;
    let id = sent.unwrap().message_id.clone();
    let drained = test.drain().await.unwrap();
    drained.assert_no_dead_letters();
    assert_eq!(drained.runs.len(), 2, "a failure, then a success");

    let spans = spans_about(&id);
    let sends: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Producer)
        .collect();
    let mut attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Consumer)
        .collect();
    assert_eq!(sends.len(), 1, "the retry is not another send: {spans:#?}");
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    attempts.sort_by_key(|s| attribute(s, "messaging.dramatiq.retries"));
    for attempt in &attempts {
        assert_eq!(attempt.span_context.trace_id(), trace);
        assert_eq!(attempt.parent_span_id, sends[0].span_context.span_id());
    }
    match &attempts[0].status {
        Status::Error { description } => {
            assert!(description.contains("first attempt fails"), "{description}")
        }
        other => panic!("the failed attempt's status: {other:?}"),
    }
    assert!(matches!(attempts[1].status, Status::Unset | Status::Ok));
}

#[actor(queue_name = "otel_plain")]
async fn otel_plain(n: i64) -> i64 {
    n
}

#[tokio::test]
async fn a_send_outside_a_trace_carries_no_context_and_bad_contexts_are_ignored() {
    exporter();
    let test = TestBroker::new();
    // Outside any span: no trace_ctx.
    let plain = test.scope(otel_plain::send(1)).await.unwrap();
    assert!(
        plain.options.get("trace_ctx").is_none(),
        "{:?}",
        plain.options
    );
    // Producers may write anything in trace_ctx.
    let mut ids = Vec::new();
    for bad in [
        json!("00-not-a-context"),
        json!({"traceparent": 42}),
        json!({"traceparent": "00-zzzz-yyyy-01"}),
        json!({"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"}),
    ] {
        let mut message = otel_plain::message(2).build().unwrap();
        message.options.insert("trace_ctx".into(), bad);
        ids.push(
            test.broker()
                .enqueue(message, None)
                .await
                .unwrap()
                .message_id,
        );
    }
    let drained = test.drain().await.unwrap();
    drained.assert_no_dead_letters();
    assert_eq!(drained.runs.len(), 5);
    for id in ids.iter().chain([&plain.message_id]) {
        let spans = spans_about(id);
        assert_eq!(spans.len(), 1, "one attempt, no send: {spans:#?}");
        assert_eq!(spans[0].span_kind, SpanKind::Consumer);
        assert_eq!(spans[0].parent_span_id, SpanId::INVALID, "a root span");
        assert!(spans[0].span_context.is_valid());
    }
}

fn python_runs() -> &'static Mutex<HashSet<String>> {
    static RUNS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

#[actor(queue_name = "otel_py")]
async fn otel_py(key: String) {
    python_runs().lock().unwrap().insert(key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producers_trace_continues_in_our_worker() {
    exporter();
    let ns = namespace();
    let broker = broker(config(&ns));
    let worker = Worker::new(broker.clone())
        .queues(["otel_py"])
        .start()
        .await
        .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let sent = run_script(&ns, &["otel_produce.py"], &[("OTEL_KEY", &key)]).await;
    eventually(Duration::from_secs(30), "the Python message ran", || {
        let key = key.clone();
        async move { python_runs().lock().unwrap().contains(&key) }
    })
    .await;
    worker.stop().await.unwrap();
    let id = sent["message_id"].as_str().unwrap();
    let spans = spans_about(id);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let attempt = &spans[0];
    assert_eq!(attempt.span_kind, SpanKind::Consumer);
    assert_eq!(
        attempt.span_context.trace_id(),
        TraceId::from_hex(sent["trace_id"].as_str().unwrap()).unwrap(),
        "Python's trace"
    );
    assert_eq!(
        attempt.parent_span_id,
        SpanId::from_hex(sent["span_id"].as_str().unwrap()).unwrap(),
        "under Python's span"
    );
    assert_eq!(
        attribute(attempt, "messaging.system").as_deref(),
        Some("redis")
    );
    cleanup(&broker, 0).await;
}
