//! Results: stored by the `Results` middleware, read typed from the enqueued message, on the
//! in-memory backend and on Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actor_runtime::middleware::MessageContext;
use actor_runtime::middleware::Skip;
use actor_runtime::results::{
    get_result, result_handle, RedisResultBackend, ResultBackend, ResultError, Results,
    StubResultBackend,
};
use actor_runtime::{actor, current_message, Broker, Middleware, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::results::{delete_keys, key, record, recorded};
use crate::support::{namespace, redis_url};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Invoice {
    id: u64,
    cents: i64,
}

#[actor(queue_name = "results_q", store_results = true)]
async fn make_invoice(id: u64, cents: i64) -> Invoice {
    Invoice { id, cents }
}

#[actor(
    queue_name = "results_q",
    store_results = true,
    max_retries = 1,
    min_backoff = 1,
    max_backoff = 5
)]
async fn always_fails(reason: String) -> Result<u32, String> {
    Err(reason)
}

/// Fails on its first run only: its failure must not be stored, its success must.
#[actor(
    queue_name = "results_q",
    store_results = true,
    max_retries = 3,
    min_backoff = 1,
    max_backoff = 5
)]
async fn fails_once(key: String) -> Result<String, String> {
    record(&key, json!(current_message().map(|m| m.retries())));
    if recorded(&key).len() == 1 {
        Err("first try fails".into())
    } else {
        Ok("second try works".into())
    }
}

#[actor(queue_name = "results_q", store_results = true)]
async fn slow_answer(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

#[actor(queue_name = "results_q")]
async fn no_store() -> u8 {
    1
}

#[actor(queue_name = "results_q", store_results = true)]
async fn skipped_by_test() -> u8 {
    unreachable!("a test middleware skips it")
}

/// Skips `skipped_by_test` without failing it.
struct SkipIt;

#[actor_runtime::middleware::async_trait]
impl Middleware for SkipIt {
    async fn before_process_message(
        &self,
        _: &Broker,
        ctx: &mut MessageContext,
    ) -> Result<(), Skip> {
        if ctx.message.actor_name == "skipped_by_test" {
            return Err(Skip);
        }
        Ok(())
    }
}

fn broker_with(backend: impl ResultBackend) -> Broker {
    let broker = Broker::stub();
    broker.middleware().add(Arc::new(Results::new(backend)));
    broker
}

async fn worker(broker: &Broker) -> actor_runtime::worker::RunningWorker {
    Worker::new(broker.clone())
        .threads(4)
        .queues(["results_q"])
        .start()
        .await
        .unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

/// The same behaviour, against any backend.
async fn typed_results_round_trip(backend: impl ResultBackend) {
    let broker = broker_with(backend);
    let invoice = make_invoice::message(7, 1250)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    match invoice.get_result(false, Duration::ZERO).await {
        Err(ResultError::Missing { message_id }) => assert_eq!(message_id, invoice.message_id),
        other => panic!("expected Missing, got {other:?}"),
    }
    let w = worker(&broker).await;
    assert_eq!(
        invoice.get_result(true, WAIT).await.unwrap(),
        Invoice { id: 7, cents: 1250 }
    );
    // Reads do not consume the result.
    assert_eq!(
        invoice.get_result(false, Duration::ZERO).await.unwrap().id,
        7
    );

    let failed = always_fails::message("disk full".into())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    match failed.get_result(true, WAIT).await {
        Err(ResultError::Failed {
            type_name, message, ..
        }) => {
            assert_eq!(type_name, "String");
            assert_eq!(message, "disk full");
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    let k = key();
    let flaky = fails_once::message(k.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    // Had the first failure been stored, this would be an error.
    assert_eq!(
        flaky.get_result(true, WAIT).await.unwrap(),
        "second try works"
    );
    assert_eq!(recorded(&k), vec![json!(0), json!(1)]);

    // By message id, e.g. from another process (Dramatiq #39).
    let by_id = result_handle::<make_invoice>(&invoice.message_id, broker.clone());
    assert_eq!(
        by_id.get_result(false, Duration::ZERO).await.unwrap().cents,
        1250
    );
    let untyped = get_result(&broker, invoice.message(), false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(untyped, json!({"id": 7, "cents": 1250}));

    let unstored = no_store::message()
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker.join("results_q", Some(WAIT), false).await.unwrap();
    assert!(matches!(
        unstored.get_result(false, Duration::ZERO).await,
        Err(ResultError::Missing { .. })
    ));
    w.stop().await.unwrap();
}

#[tokio::test]
async fn typed_results_on_the_stub_backend() {
    typed_results_round_trip(StubResultBackend::new()).await;
}

#[tokio::test]
async fn typed_results_on_redis() {
    let ns = namespace();
    let backend = RedisResultBackend::new(redis_url())
        .unwrap()
        .namespace(ns.clone())
        .plain_keys(true);
    typed_results_round_trip(backend).await;
    delete_keys(&ns).await;
}

async fn blocking_read_times_out_and_wakes_promptly(backend: impl ResultBackend + Clone) {
    let broker = broker_with(backend.clone());
    let sent = slow_answer::message(1)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();

    // No worker yet: a blocking read gives up at its (sub-second) timeout.
    let started = Instant::now();
    match sent.get_result(true, Duration::from_millis(300)).await {
        Err(ResultError::Timeout { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(300))
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );

    // A reader blocked before the result exists wakes as soon as it is stored.
    let reader = {
        let message = sent.message().clone();
        let backend = backend.clone();
        tokio::spawn(async move {
            let value = backend.get(&message, true, WAIT).await;
            (value, Instant::now())
        })
    };
    // Give the reader time to block (in BLMOVE on Redis), so the wake-up is what is measured.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stored_at = Instant::now();
    backend
        .store(sent.message(), &Ok(json!(1)), Duration::from_secs(60))
        .await
        .unwrap();
    let (value, woke_at) = reader.await.unwrap();
    assert_eq!(value.unwrap(), json!(1));
    let latency = woke_at.saturating_duration_since(stored_at);
    assert!(
        latency < Duration::from_millis(250),
        "woke {latency:?} after the store"
    );
}

#[tokio::test]
async fn blocking_reads_on_the_stub_backend() {
    blocking_read_times_out_and_wakes_promptly(StubResultBackend::new()).await;
}

#[tokio::test]
async fn blocking_reads_on_redis() {
    let ns = namespace();
    let backend = RedisResultBackend::new(redis_url())
        .unwrap()
        .namespace(ns.clone())
        .plain_keys(true);
    blocking_read_times_out_and_wakes_promptly(backend).await;
    delete_keys(&ns).await;
}

#[tokio::test]
async fn waiting_reader_gets_the_result_of_a_running_actor() {
    let broker = broker_with(StubResultBackend::new());
    let w = worker(&broker).await;
    let sent = slow_answer::message(150)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(async move { sent.get_result(true, WAIT).await });
    assert_eq!(reader.await.unwrap().unwrap(), 150);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn skipped_message_stores_null() {
    let broker = broker_with(StubResultBackend::new());
    broker.middleware().add(Arc::new(SkipIt));
    let w = worker(&broker).await;
    let sent = skipped_by_test::message()
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let value = get_result(&broker, sent.message(), true, WAIT)
        .await
        .unwrap();
    assert!(value.is_null());
    w.stop().await.unwrap();
}

#[tokio::test]
async fn without_results_middleware_get_result_says_so() {
    let broker = Broker::stub();
    let sent = make_invoice::message(1, 1)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        sent.get_result(false, Duration::ZERO).await.unwrap_err(),
        ResultError::NoBackend
    );
}

#[tokio::test]
async fn redis_layout_is_dramatiqs_md5_list_with_ttl() {
    let backend = RedisResultBackend::new(redis_url()).unwrap();
    let mut message = actor_runtime::Message::new("default.DQ", "add", vec![]);
    // A fixed id (its key is fixed too); the key is deleted at the end.
    message.message_id = "5e1f0c8e-2b8c-4a4e-9a57-3a4c1f0f7b11".into();
    // Python: hashlib.md5(b"dramatiq-results:default:add:5e1f...7b11").hexdigest()
    let key = "c3549665b7d5d2f909aa2d0292099011";
    assert_eq!(backend.keys().key(&message), key);
    backend
        .store(&message, &Ok(json!(30)), Duration::from_secs(60))
        .await
        .unwrap();
    let mut conn = crate::support::results::redis().await;
    let (kind, items, ttl): (String, Vec<String>, i64) = redis::pipe()
        .cmd("TYPE")
        .arg(key)
        .cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((kind.as_str(), items), ("list", vec!["30".to_owned()]));
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    delete_keys(key).await;
}
