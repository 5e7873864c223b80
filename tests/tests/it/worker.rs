//! The worker and the default middleware, each scenario on the stub broker and on Redis (in a
//! namespace of its own): running actors, bad input, retries, limits, callbacks, priority,
//! shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_runtime::broker::StubBackend;
use actor_runtime::worker::RunningWorker;
use actor_runtime::{actor, current_message, Broker, Error, Message, Worker};

use crate::support::namespace;
use crate::support::redis::{broker as redis_broker, cleanup, config};
use serde_json::{json, Value};

/// What actors recorded, by test key.
fn log() -> &'static Mutex<HashMap<String, Vec<Value>>> {
    static LOG: std::sync::OnceLock<Mutex<HashMap<String, Vec<Value>>>> =
        std::sync::OnceLock::new();
    LOG.get_or_init(Mutex::default)
}

fn record(key: &str, value: Value) {
    log()
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push(value);
}

fn recorded(key: &str) -> Vec<Value> {
    log().lock().unwrap().get(key).cloned().unwrap_or_default()
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[actor(queue_name = "stub_basic")]
async fn add_and_record(key: String, x: i64, y: Option<i64>) -> i64 {
    let sum = x + y.unwrap_or(100);
    record(&key, json!(sum));
    sum
}

#[actor(queue_name = "stub_basic")]
fn blocking_record(key: String, n: u32) -> Result<u32, String> {
    record(
        &key,
        json!(std::thread::current().name().map(str::to_owned)),
    );
    Ok(n)
}

#[actor(queue_name = "stub_slow")]
async fn slow(key: String, millis: u64) {
    started(&key).add_permits(1);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    record(&key, json!(millis));
}

#[actor(queue_name = "stub_prio", priority = 10)]
async fn low_priority(key: String) {
    record(&key, json!("low"));
}

#[actor(queue_name = "stub_prio", priority = -10)]
async fn high_priority(key: String) {
    record(&key, json!("high"));
}

#[actor(
    queue_name = "stub_fail",
    max_retries = 3,
    min_backoff = 1,
    max_backoff = 20
)]
async fn flaky(key: String, failures: usize) -> Result<String, String> {
    let message = current_message().expect("inside an actor");
    record(&key, json!(message.retries()));
    if recorded(&key).len() <= failures {
        Err(format!("failure #{}", recorded(&key).len()))
    } else {
        Ok("finally".into())
    }
}

#[derive(Debug)]
struct Fatal;
impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fatal, do not retry")
    }
}

#[actor(queue_name = "stub_fail", max_retries = 5, min_backoff = 1, throws = [Fatal])]
async fn throws_fatal(key: String) -> Result<(), Fatal> {
    record(&key, json!("ran"));
    Err(Fatal)
}

#[actor(
    queue_name = "stub_fail",
    max_retries = 2,
    min_backoff = 1,
    max_backoff = 10
)]
async fn panics(key: String) {
    record(&key, json!("ran"));
    panic!("poison message");
}

#[actor(queue_name = "stub_fail", max_retries = 0, time_limit = 50)]
async fn too_slow(key: String) {
    record(&key, json!("started"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    record(&key, json!("finished"));
}

#[actor(queue_name = "stub_fail", max_age = "1s")]
async fn perishable(key: String) {
    record(&key, json!("ran"));
}

#[actor(queue_name = "stub_callbacks")]
async fn on_ok(message: Value, result: Value) {
    let id = message["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    record(&id, json!({"ok": result, "actor": message["actor_name"]}));
}

#[actor(queue_name = "stub_callbacks")]
async fn on_err(message: Value, error: Value) {
    let id = message["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    record(&id, json!({"err": error}));
}

#[actor(queue_name = "stub_callbacks", max_retries = 0)]
async fn with_callbacks(fail: bool) -> Result<u32, String> {
    if fail {
        Err("nope".into())
    } else {
        Ok(7)
    }
}

/// One permit per start of an actor recording under `key`.
fn started(key: &str) -> Arc<tokio::sync::Semaphore> {
    static STARTED: std::sync::OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>> =
        std::sync::OnceLock::new();
    let map = STARTED.get_or_init(Mutex::default);
    map.lock()
        .unwrap()
        .entry(key.to_owned())
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(0)))
        .clone()
}

/// Waits until actors recording under `key` started `n` times.
async fn wait_started(key: &str, n: u32) {
    started(key).acquire_many(n).await.unwrap().forget();
}

#[actor(
    queue_name = "stub_shutdown",
    notify_shutdown = true,
    min_backoff = 60000
)]
async fn interruptible(key: String) {
    record(&key, json!("started"));
    started(&key).add_permits(1);
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Runs each named scenario `async fn name(broker: Broker)` as two tests: on a fresh
/// stub broker, and on Redis in a fresh namespace (deleted afterwards).
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod on_stub {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(actor_runtime::Broker::stub()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let broker = super::redis_broker(super::config(&super::namespace()));
                    super::$name(broker.clone()).await;
                    super::cleanup(&broker, 0).await;
                }
            )*
        }
    };
}

on_both_brokers!(
    runs_actors_with_positional_keyword_and_default_arguments,
    plain_fn_actors_run_on_the_workers_thread_pool,
    join_fail_fast_surfaces_the_actors_error,
    failures_are_retried_with_backoff_then_succeed,
    exhausted_retries_dead_letter_the_message_with_its_error,
    a_panicking_actor_is_retried_then_dead_lettered_and_the_worker_survives,
    time_limit_cancels_the_actor,
    messages_older_than_max_age_are_dead_lettered_unrun,
    callbacks_receive_the_message_and_the_result_or_error,
    prefetched_messages_run_by_priority,
    a_worker_holds_at_most_its_prefetch_across_all_its_queues,
    an_idle_queue_never_keeps_a_busy_one_waiting,
    graceful_shutdown_finishes_running_and_returns_prefetched_messages,
    shutdown_timeout_cancels_and_requeues_running_messages,
    notify_shutdown_actors_are_interrupted_and_retried_later,
);

async fn worker(broker: &Broker, queue: &str) -> RunningWorker {
    Worker::new(broker.clone())
        .threads(4)
        .queues([queue])
        .start()
        .await
        .unwrap()
}

async fn runs_actors_with_positional_keyword_and_default_arguments(broker: Broker) {
    let k = key();
    let w = worker(&broker, "stub_basic").await;
    let sent = add_and_record::message(k.clone(), 1, Some(2))
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.actor_name, "add_and_record");
    assert_eq!(sent.args, vec![json!(k), json!(1), json!(2)]);
    // A Python producer calling add_and_record.send(key, x=5): y missing is None.
    let mut python = Message::new("stub_basic", "add_and_record", vec![json!(k)]);
    python.kwargs.insert("x".into(), json!(5));
    broker.enqueue(python, None).await.unwrap();
    broker
        .join("stub_basic", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    let report = w.stop().await.unwrap();
    let mut sums = recorded(&k);
    sums.sort_by_key(|v| v.as_i64());
    assert_eq!(sums, vec![json!(3), json!(105)]);
    assert_eq!(report.succeeded, 2);
}

async fn plain_fn_actors_run_on_the_workers_thread_pool(broker: Broker) {
    let k = key();
    let w = worker(&broker, "stub_basic").await;
    blocking_record::message(k.clone(), 3)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker
        .join("stub_basic", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    w.stop().await.unwrap();
    let threads = recorded(&k);
    assert_eq!(threads.len(), 1);
    // Not a runtime thread, nor tokio's blocking pool: the worker's own.
    assert!(
        threads[0]
            .as_str()
            .is_some_and(|name| name.starts_with("actor-blocking-")),
        "{threads:?}"
    );
}

#[tokio::test]
async fn bad_messages_are_dead_lettered_and_the_worker_goes_on() {
    let broker = Broker::stub();
    let k = key();
    let w = worker(&(broker.clone() as Broker), "stub_basic").await;
    broker
        .backend_as::<StubBackend>()
        .unwrap()
        .enqueue_bytes("stub_basic", b"not json at all".to_vec())
        .unwrap();
    broker
        .enqueue(Message::new("stub_basic", "no_such_actor", vec![]), None)
        .await
        .unwrap();
    broker
        .enqueue(
            Message::new("stub_basic", "add_and_record", vec![json!(k), json!("x")]),
            None,
        )
        .await
        .unwrap();
    broker
        .enqueue(
            Message::new(
                "stub_basic",
                "add_and_record",
                vec![json!(k), json!(1), json!(2), json!(3)],
            ),
            None,
        )
        .await
        .unwrap();
    add_and_record::message(k.clone(), 40, Some(2))
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker
        .join("stub_basic", Some(Duration::from_secs(10)), false)
        .await
        .unwrap();
    let report = w.stop().await.unwrap();

    assert_eq!(recorded(&k), vec![json!(42)], "the good message still ran");
    let dead = broker.dead_letters("stub_basic", 10).await.unwrap();
    let reasons: Vec<String> = dead.iter().map(|d| d.reason.clone().unwrap()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].starts_with("undecodable message"), "{reasons:?}");
    assert_eq!(reasons[1], "unknown actor `no_such_actor`");
    assert!(
        reasons[2].contains("argument `x` of `add_and_record` has the wrong type"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("takes 3 argument(s)"), "{reasons:?}");
    assert_eq!(report.dead_lettered, 4);
}

async fn join_fail_fast_surfaces_the_actors_error(broker: Broker) {
    let k = key();
    let w = worker(&broker, "stub_fail").await;
    throws_fatal::message(k.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let err = broker
        .join("stub_fail", Some(Duration::from_secs(10)), true)
        .await
        .unwrap_err();
    w.stop().await.unwrap();
    match err {
        Error::DeadLettered { actor, reason, .. } => {
            assert_eq!(actor, "throws_fatal");
            assert_eq!(reason, "Fatal: fatal, do not retry");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(recorded(&k).len(), 1, "`throws` errors are not retried");
}

async fn failures_are_retried_with_backoff_then_succeed(broker: Broker) {
    let k = key();
    let w = worker(&broker, "stub_fail").await;
    flaky::message(k.clone(), 2)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker
        .join("stub_fail", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    let report = w.stop().await.unwrap();
    // Each run saw the retry count so far.
    assert_eq!(recorded(&k), vec![json!(0), json!(1), json!(2)]);
    assert_eq!(
        (report.failed, report.succeeded, report.dead_lettered),
        (2, 1, 0)
    );
}

async fn exhausted_retries_dead_letter_the_message_with_its_error(broker: Broker) {
    let k = key();
    let w = worker(&broker, "stub_fail").await;
    flaky::message(k.clone(), 100)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let err = broker
        .join("stub_fail", Some(Duration::from_secs(10)), true)
        .await
        .unwrap_err();
    w.stop().await.unwrap();
    assert_eq!(recorded(&k).len(), 4, "max_retries = 3 means 4 attempts");
    let dead = broker.dead_letters("stub_fail", 10).await.unwrap();
    let message = dead[0].message.as_ref().unwrap();
    assert!(matches!(err, Error::DeadLettered { .. }));
    assert!(dead[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("retries exhausted after 3 retries"));
    // The dead letter is the last enqueued copy: it carries 3 retries.
    assert_eq!(message.retries(), 3);
}

async fn a_panicking_actor_is_retried_then_dead_lettered_and_the_worker_survives(broker: Broker) {
    let k = key();
    let k2 = key();
    let w = worker(&broker, "stub_fail").await;
    panics::message(k.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let _ = broker
        .join("stub_fail", Some(Duration::from_secs(10)), false)
        .await;
    perishable::message(k2.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker
        .join("stub_fail", Some(Duration::from_secs(10)), false)
        .await
        .unwrap();
    w.stop().await.unwrap();
    assert_eq!(recorded(&k).len(), 3);
    assert_eq!(
        recorded(&k2).len(),
        1,
        "the worker still runs actors after panics"
    );
    let dead = broker.dead_letters("stub_fail", 10).await.unwrap();
    assert!(
        dead[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("panic: poison message"),
        "{dead:?}"
    );
}

async fn time_limit_cancels_the_actor(broker: Broker) {
    let k = key();
    let w = worker(&broker, "stub_fail").await;
    too_slow::message(k.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let err = broker
        .join("stub_fail", Some(Duration::from_secs(10)), true)
        .await
        .unwrap_err();
    w.stop().await.unwrap();
    assert_eq!(recorded(&k), vec![json!("started")]);
    assert!(err.to_string().contains("TimeLimitExceeded"), "{err}");
}

async fn messages_older_than_max_age_are_dead_lettered_unrun(broker: Broker) {
    let k = key();
    let w = worker(&broker, "stub_fail").await;
    let mut old = perishable::message(k.clone()).build().unwrap();
    old.message_timestamp -= 5_000;
    broker.enqueue(old, None).await.unwrap();
    let err = broker
        .join("stub_fail", Some(Duration::from_secs(10)), true)
        .await
        .unwrap_err();
    w.stop().await.unwrap();
    assert!(recorded(&k).is_empty());
    assert!(err.to_string().contains("AgeLimitExceeded"), "{err}");
}

async fn callbacks_receive_the_message_and_the_result_or_error(broker: Broker) {
    let w = worker(&broker, "stub_callbacks").await;
    let mut ids = Vec::new();
    for fail in [false, true] {
        let sent = with_callbacks::message(fail)
            .option("on_success", "on_ok")
            .option("on_failure", "on_err")
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
        ids.push(sent.message_id.clone());
    }
    broker
        .join("stub_callbacks", Some(Duration::from_secs(10)), false)
        .await
        .unwrap();
    w.stop().await.unwrap();
    assert_eq!(
        recorded(&ids[0]),
        vec![json!({"ok": 7, "actor": "with_callbacks"})]
    );
    assert_eq!(
        recorded(&ids[1]),
        vec![json!({"err": {"type": "String", "message": "nope"}})]
    );
}

async fn prefetched_messages_run_by_priority(broker: Broker) {
    let k = key();
    for _ in 0..3 {
        low_priority::message(k.clone())
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
    }
    high_priority::message(k.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    // Priority orders what a worker holds; a fixed prefetch makes it hold all four.
    let w = Worker::new(broker.clone())
        .threads(1)
        .prefetch(4)
        .queues(["stub_prio"])
        .start()
        .await
        .unwrap();
    broker
        .join("stub_prio", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    w.stop().await.unwrap();
    assert_eq!(recorded(&k)[0], json!("high"), "{:?}", recorded(&k));
}

/// `slow(key, millis)` messages on `queue` instead of the actor's own.
async fn send_slow_to(broker: &Broker, queue: &str, key: &str, millis: u64, n: usize) {
    for _ in 0..n {
        let mut message = slow::message(key.to_owned(), millis).build().unwrap();
        message.queue_name = queue.to_owned();
        broker.enqueue(message, None).await.unwrap();
    }
}

async fn a_worker_holds_at_most_its_prefetch_across_all_its_queues(broker: Broker) {
    let k = key();
    let queues = ["stub_budget_a", "stub_budget_b"];
    for queue in queues {
        send_slow_to(&broker, queue, &k, 50, 6).await;
    }
    let w = Worker::new(broker.clone())
        .threads(1)
        .prefetch(2)
        .queues(queues)
        .start()
        .await
        .unwrap();
    // The queues are read one after the other, so one sample can count a message acked on
    // one queue and its successor fetched on the other; a real excess lasts a message's run
    // time (50 ms), several samples.
    let (mut previous, mut most_held) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while recorded(&k).len() < 12 {
        let mut held = 0;
        for queue in queues {
            held += broker.stats(queue).await.unwrap().in_flight;
        }
        most_held = most_held.max(held.min(previous));
        previous = held;
        assert!(
            std::time::Instant::now() < deadline,
            "ran {:?}",
            recorded(&k)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.stop().await.unwrap();
    assert!(most_held <= 2, "held {most_held} with a prefetch of 2");
}

async fn an_idle_queue_never_keeps_a_busy_one_waiting(broker: Broker) {
    let k = key();
    let w = Worker::new(broker.clone())
        .threads(1)
        .queues(["stub_idle", "stub_busy"])
        .start()
        .await
        .unwrap();
    send_slow_to(&broker, "stub_busy", &k, 50, 4).await;
    // An idle queue's fetcher waits for messages without holding the one-message budget.
    broker
        .join("stub_busy", Some(Duration::from_secs(4)), true)
        .await
        .unwrap();
    w.stop().await.unwrap();
    assert_eq!(recorded(&k).len(), 4);
}

async fn graceful_shutdown_finishes_running_and_returns_prefetched_messages(broker: Broker) {
    let k = key();
    let total = 20;
    for _ in 0..total {
        slow::message(k.clone(), 200)
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
    }
    let w = Worker::new(broker.clone())
        .threads(2)
        .prefetch(10)
        .queues(["stub_slow"])
        .start()
        .await
        .unwrap();
    // Two messages run; the rest of the prefetch (one batch of 10) waits in memory.
    wait_started(&k, 2).await;
    let report = w.stop().await.unwrap();
    let stats = broker.stats("stub_slow").await.unwrap();
    let done = recorded(&k).len() as u64;
    assert_eq!(report.succeeded, done);
    assert!(done >= 2, "running messages finished: {report:?}");
    assert_eq!(stats.in_flight, 0, "nothing left unacked");
    assert_eq!(
        done + stats.ready,
        total,
        "no message lost: {report:?} {stats:?}"
    );
    assert_eq!(report.requeued, 10 - done, "{report:?}");
}

async fn shutdown_timeout_cancels_and_requeues_running_messages(broker: Broker) {
    let k = key();
    slow::message(k.clone(), 30_000)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let w = Worker::new(broker.clone())
        .threads(1)
        .queues(["stub_slow"])
        .shutdown_timeout(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    wait_started(&k, 1).await;
    let report = w.stop().await.unwrap();
    assert_eq!(report.cancelled, 1);
    let stats = broker.stats("stub_slow").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (1, 0), "back in the queue");
}

async fn notify_shutdown_actors_are_interrupted_and_retried_later(broker: Broker) {
    let k = key();
    interruptible::message(k.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let w = worker(&broker, "stub_shutdown").await;
    wait_started(&k, 1).await;
    let report = w.stop().await.unwrap();
    assert_eq!(report.cancelled, 0, "interrupted, not cut off");
    let stats = broker.stats("stub_shutdown").await.unwrap();
    assert_eq!(stats.delayed, 1, "scheduled for retry: {stats:?}");
}
