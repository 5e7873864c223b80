//! Job records in PostgreSQL (feature `postgres`): every state a message goes through,
//! written by a real worker on Redis, each test in a schema of its own.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use actor_runtime::records::{JobFilter, JobRecord, JobState, Records};
use actor_runtime::{actor, current_message, Broker, Message, Worker};

use crate::support::postgres::{builder, cleanup, database_url, schema_name};
use crate::support::redis::{broker, cleanup as cleanup_redis, config};
use crate::support::{eventually, namespace};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Fatal(String);
impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fatal: {}", self.0)
    }
}

#[actor(queue_name = "rec_states")]
async fn rec_ok(n: i64) -> i64 {
    n * 2
}

#[actor(
    queue_name = "rec_states",
    max_retries = 3,
    min_backoff = 10,
    max_backoff = 20
)]
async fn rec_flaky() -> Result<(), String> {
    match current_message().map(|m| m.retries()) {
        Some(0) => Err("first try fails".into()),
        _ => Ok(()),
    }
}

#[actor(
    queue_name = "rec_states",
    max_retries = 1,
    min_backoff = 10,
    max_backoff = 20
)]
async fn rec_always_fails() -> Result<(), String> {
    Err("always broken".into())
}

#[actor(queue_name = "rec_states", max_retries = 5, throws = [Fatal])]
async fn rec_throws() -> Result<(), Fatal> {
    Err(Fatal("no point retrying".into()))
}

/// Keys whose `rec_wait` may finish.
fn released() -> &'static Mutex<HashSet<String>> {
    static RELEASED: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    RELEASED.get_or_init(Default::default)
}

#[actor(queue_name = "rec_states")]
async fn rec_wait(key: String) {
    while !released().lock().unwrap().contains(&key) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A Redis broker in a fresh namespace recording into a fresh schema.
async fn setup() -> (Broker, Records) {
    let broker = broker(config(&namespace()));
    let records = builder(&database_url(), &schema_name())
        .record_args_of(["rec_ok"])
        .build()
        .await
        .unwrap();
    broker.add_middleware(records.recorder());
    (broker, records)
}

/// Waits until the record of `id` is in `state`, and returns it.
pub(crate) async fn wait_state(records: &Records, id: &str, state: JobState) -> JobRecord {
    let mut last = None;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Some(job)) = records.job(id).await {
                if job.state == state {
                    return job;
                }
                last = Some(job);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{id} never became {state}; last seen: {last:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_a_worker_reaches_is_recorded() {
    let (broker, records) = setup().await;
    // Waiting: one ready in a queue no worker consumes, one delayed far ahead.
    let waiting = broker
        .enqueue(Message::new("rec_nobody", "rec_ok", vec![1.into()]), None)
        .await
        .unwrap();
    let delayed = rec_ok::message(2)
        .delay(Duration::from_secs(600))
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let worker = Worker::new(broker.clone())
        .queues(["rec_states"])
        .threads(4)
        .start()
        .await
        .unwrap();
    let ok = rec_ok::message(21)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let flaky = rec_flaky::message()
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let dead = rec_always_fails::message()
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let failed = rec_throws::message()
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let running = rec_wait::message(key.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let mut old = rec_ok::message(3).build().unwrap();
    old.message_timestamp -= 3_600_000;
    old.options.insert("max_age".into(), 1000.into());
    let skipped = broker.enqueue(old, None).await.unwrap();

    let job = wait_state(&records, &waiting.message_id, JobState::Enqueued).await;
    assert_eq!((job.queue_name.as_str(), job.attempt), ("rec_nobody", 1));
    assert!(job.enqueued_at.is_some() && job.started_at.is_none());
    let job = wait_state(&records, &delayed.message_id, JobState::Delayed).await;
    assert!(job.eta.is_some(), "a delayed record says when it is due");
    assert_eq!(
        job.queue_name, "rec_states",
        "the canonical queue, not `.DQ`"
    );

    let job = wait_state(&records, &ok.message_id, JobState::Succeeded).await;
    assert_eq!((job.actor_name.as_str(), job.attempt), ("rec_ok", 1));
    assert!(job.started_at.is_some() && job.finished_at.is_some() && job.duration_ms.is_some());
    assert!(job.worker_id.is_some());
    assert_eq!(
        job.args,
        Some(serde_json::json!({"args": [21], "kwargs": {}}))
    );
    assert_eq!(
        job.max_retries,
        Some(20),
        "the Retries middleware's default"
    );

    let job = wait_state(&records, &flaky.message_id, JobState::Succeeded).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].attempt, 1);
    assert!(job.errors[0].message.contains("first try fails"));
    assert_eq!(
        job.args, None,
        "arguments are recorded only for opted-in actors"
    );

    let job = wait_state(&records, &dead.message_id, JobState::Dead).await;
    assert_eq!((job.attempt, job.max_retries), (2, Some(1)));
    assert_eq!(
        job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(job.last_error.as_deref().unwrap().contains("always broken"));

    let job = wait_state(&records, &failed.message_id, JobState::Failed).await;
    assert_eq!(job.attempt, 1, "a `throws` error is not retried");
    assert!(job
        .last_error
        .as_deref()
        .unwrap()
        .contains("no point retrying"));

    let job = wait_state(&records, &skipped.message_id, JobState::Skipped).await;
    assert!(job.started_at.is_none(), "skipped unrun");

    wait_state(&records, &running.message_id, JobState::Running).await;
    released().lock().unwrap().insert(key);
    wait_state(&records, &running.message_id, JobState::Succeeded).await;

    // Queries: by actor, by state, by error text, by time.
    let dead_ones = records
        .jobs(&JobFilter::new().state(JobState::Dead))
        .await
        .unwrap();
    assert_eq!(dead_ones.len(), 1);
    let of_ok = records
        .jobs(&JobFilter::new().actor("rec_ok"))
        .await
        .unwrap();
    assert_eq!(of_ok.len(), 4);
    let broken = records
        .jobs(&JobFilter::new().error("ALWAYS BROKEN"))
        .await
        .unwrap();
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].message_id, dead.message_id);
    let future = records
        .jobs(&JobFilter::new().since(SystemTime::now() + Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(future.is_empty());
    assert!(records.stats().written >= 8);
    assert_eq!(records.stats().dropped, 0);

    worker.stop().await.unwrap();
    cleanup_redis(&broker, 0).await;
    cleanup(&records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_dead_letter_goes_back_to_enqueued_then_runs_again() {
    let (broker, records) = setup().await;
    let worker = Worker::new(broker.clone())
        .queues(["rec_states"])
        .start()
        .await
        .unwrap();
    let dead = rec_always_fails::message()
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    wait_state(&records, &dead.message_id, JobState::Dead).await;
    eventually(WAIT, "the dead letter", || async {
        broker.stats("rec_states").await.unwrap().dead == 1
    })
    .await;
    worker.stop().await.unwrap();

    let moved = records
        .requeue_dead_letters(&broker, "rec_states", None)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let job = records.job(&dead.message_id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Enqueued, 2));
    assert!(job.finished_at.is_none());

    // It runs again: the broker requeues the payload as it was last enqueued (`retries` 1),
    // so the same attempt runs and fails again; its history keeps all three errors.
    let worker = Worker::new(broker.clone())
        .queues(["rec_states"])
        .start()
        .await
        .unwrap();
    let job = wait_state(&records, &dead.message_id, JobState::Dead).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors.len(), 3);
    assert_eq!(
        job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2, 2]
    );
    worker.stop().await.unwrap();
    cleanup_redis(&broker, 0).await;
    cleanup(&records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_steps_record_their_parent() {
    let (broker, records) = setup().await;
    let worker = Worker::new(broker.clone())
        .queues(["rec_states"])
        .start()
        .await
        .unwrap();
    let chain = actor_runtime::composition::Pipeline::new()
        .then(rec_ok::message(1))
        .then_ignore(rec_ok::message(2))
        .then_ignore(rec_ok::message(3))
        .broker(broker.clone());
    let ids: Vec<String> = chain.message_ids().iter().map(|s| s.to_string()).collect();
    chain.run().await.unwrap();
    let mut parents = Vec::new();
    for id in &ids {
        parents.push(
            wait_state(&records, id, JobState::Succeeded)
                .await
                .parent_id,
        );
    }
    assert_eq!(parents, [None, Some(ids[0].clone()), Some(ids[1].clone())]);
    worker.stop().await.unwrap();
    cleanup_redis(&broker, 0).await;
    cleanup(&records).await;
}
