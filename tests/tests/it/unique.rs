//! Unique jobs on Redis: one message per key waits or runs at a time; the key is released
//! when the message finishes for good, and expires after its bound when its worker dies.
//! Each test has its own namespace and keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actor_runtime::{actor, Broker, Message, Worker};

use crate::support::fault_worker::{producer, WorkerProcess, QUEUE};
use crate::support::redis::{broker, cleanup, config};
use crate::support::{eventually, namespace, redis_url};

/// Runs per test key.
fn runs() -> &'static Mutex<HashMap<String, u32>> {
    static RUNS: std::sync::OnceLock<Mutex<HashMap<String, u32>>> = std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn runs_of(key: &str) -> u32 {
    runs().lock().unwrap().get(key).copied().unwrap_or(0)
}

fn count_run(key: &str) {
    *runs().lock().unwrap().entry(key.to_owned()).or_default() += 1;
}

fn email_key(email_id: &String, _body: &String) -> String {
    format!("email:{email_id}")
}

/// The webhook handler of the README: a provider may deliver one inbound email twice.
#[actor(queue_name = "unique_emails", unique_key = email_key, unique_ttl = "1m")]
async fn process_email(email_id: String, body: String) {
    let _ = body;
    tokio::time::sleep(Duration::from_millis(50)).await;
    count_run(&email_id);
}

#[actor(queue_name = "unique_sync")]
async fn sync_account(test: String) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    count_run(&test);
}

#[actor(
    queue_name = "unique_flaky",
    max_retries = 1,
    min_backoff = 300,
    max_backoff = 300
)]
async fn flaky_sync(test: String) -> Result<(), String> {
    count_run(&test);
    Err("the partner API is down".into())
}

async fn holder(broker: &Broker, key: &str) -> Option<String> {
    broker
        .backend()
        .unique_keys()
        .unwrap()
        .holder(key)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sends_of_one_key_give_one_run_and_a_later_send_runs_again() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let test = uuid::Uuid::new_v4().to_string();
    let key = format!("account:{test}");
    let sends: Vec<_> = (0..50)
        .map(|_| {
            let (broker, test, key) = (broker.clone(), test.clone(), key.clone());
            tokio::spawn(async move {
                sync_account::message(test)
                    .unique_key(key)
                    .broker(broker)
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut sent = Vec::new();
    for send in sends {
        sent.push(send.await.unwrap());
    }
    let originals: Vec<_> = sent.iter().filter(|s| !s.is_duplicate()).collect();
    assert_eq!(originals.len(), 1, "exactly one send enqueued");
    let id = originals[0].message_id.clone();
    assert!(
        sent.iter().all(|s| s.message_id == id),
        "every duplicate returned the enqueued message's id"
    );
    assert_eq!(broker.stats("unique_sync").await.unwrap().ready, 1);
    assert_eq!(holder(&broker, &key).await, Some(id.clone()));

    let worker = Worker::new(broker.clone())
        .queues(["unique_sync"])
        .start()
        .await
        .unwrap();
    broker
        .join("unique_sync", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the key to be released", || {
        let (broker, key) = (broker.clone(), key.clone());
        async move { holder(&broker, &key).await.is_none() }
    })
    .await;
    assert_eq!(runs_of(&test), 1);

    let again = sync_account::message(test.clone())
        .unique_key(key.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert!(!again.is_duplicate(), "a send after the run enqueues again");
    assert_ne!(again.message_id, id);
    broker
        .join("unique_sync", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    assert_eq!(runs_of(&test), 2);
    worker.stop().await.unwrap();
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivered_twice_processes_the_email_once() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let email_id = uuid::Uuid::new_v4().to_string();
    let worker = Worker::new(broker.clone())
        .queues(["unique_emails"])
        .start()
        .await
        .unwrap();
    // The two deliveries of the webhook, handled concurrently.
    let deliver = || {
        process_email::message(email_id.clone(), "Subject: hello".into())
            .broker(broker.clone())
            .send()
    };
    let (first, second) = tokio::join!(deliver(), deliver());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.message_id, second.message_id);
    assert!(first.is_duplicate() != second.is_duplicate());
    assert_eq!(first.options["unique_key"], format!("email:{email_id}"));
    assert_eq!(first.options["unique_ttl"], 60_000);
    broker
        .join("unique_emails", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    assert_eq!(runs_of(&email_id), 1);
    worker.stop().await.unwrap();
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_keeps_the_key_and_the_dead_letter_releases_it() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let test = uuid::Uuid::new_v4().to_string();
    let key = format!("flaky:{test}");
    let send = || {
        flaky_sync::message(test.clone())
            .unique_key(key.clone())
            .broker(broker.clone())
            .send()
    };
    let first = send().await.unwrap();
    let worker = Worker::new(broker.clone())
        .queues(["unique_flaky"])
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the first attempt", || async {
        runs_of(&test) >= 1
    })
    .await;
    // While the retry waits in the delay queue, the key stays the first message's.
    let during = send().await.unwrap();
    assert_eq!(runs_of(&test), 1, "still waiting for its retry");
    assert!(during.is_duplicate());
    assert_eq!(during.message_id, first.message_id);
    eventually(Duration::from_secs(10), "the dead letter", || {
        let broker = broker.clone();
        async move { broker.stats("unique_flaky").await.unwrap().dead == 1 }
    })
    .await;
    eventually(Duration::from_secs(5), "the key to be released", || {
        let (broker, key) = (broker.clone(), key.clone());
        async move { holder(&broker, &key).await.is_none() }
    })
    .await;
    assert_eq!(runs_of(&test), 2, "one attempt and one retry");
    let after = send().await.unwrap();
    assert!(!after.is_duplicate());
    worker.stop().await.unwrap();
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_releases_the_key_within_its_bound() {
    let (url, ns) = (redis_url(), namespace());
    let broker = producer(&url, &ns);
    let bound = Duration::from_secs(2);
    let unique = |id: u64| {
        let mut message = Message::new(QUEUE, "work", vec![id.into(), 60_000.into()]);
        message.options.insert("unique_key".into(), "report".into());
        message
            .options
            .insert("unique_ttl".into(), (bound.as_millis() as u64).into());
        message
    };
    let first = broker.send_message(unique(1), None).await.unwrap();
    assert!(!first.duplicate);
    let mut worker = WorkerProcess::start(&url, &ns, &[]).await;
    eventually(Duration::from_secs(10), "the worker to fetch it", || {
        let broker = broker.clone();
        async move {
            let stats = broker.stats(QUEUE).await.unwrap();
            stats.ready == 0 && stats.in_flight == 1
        }
    })
    .await;
    worker.signal("-KILL");
    worker.wait(Duration::from_secs(5)).await;
    let killed_at = std::time::Instant::now();
    let during = broker.send_message(unique(2), None).await.unwrap();
    assert!(during.duplicate, "the killed run still holds the key");
    assert_eq!(during.message.message_id, first.message.message_id);
    eventually(bound + Duration::from_secs(1), "the key to expire", || {
        let broker = broker.clone();
        async move { holder(&broker, "report").await.is_none() }
    })
    .await;
    assert!(killed_at.elapsed() <= bound + Duration::from_secs(1));
    let after = broker.send_message(unique(3), None).await.unwrap();
    assert!(!after.duplicate, "a send after the bound enqueues");
    broker.close().await;
    crate::faults::cleanup(&url, &ns).await;
}

#[tokio::test]
async fn bad_unique_options_are_refused_and_store_nothing() {
    let ns = namespace();
    let broker = broker(config(&ns));
    for (key, ttl) in [
        (serde_json::json!(""), None),
        (serde_json::json!(42), None),
        (serde_json::json!("k"), Some(serde_json::json!(-5))),
        (serde_json::json!("k"), Some(serde_json::json!("soon"))),
    ] {
        let mut message = Message::new("unique_bad", "nobody", vec![]);
        message.options.insert("unique_key".into(), key.clone());
        if let Some(ttl) = ttl {
            message.options.insert("unique_ttl".into(), ttl);
        }
        let err = broker.enqueue(message, None).await.unwrap_err();
        assert!(
            matches!(err, actor_runtime::Error::InvalidOption { .. }),
            "{key}: {err}"
        );
    }
    assert_eq!(broker.stats("unique_bad").await.unwrap().ready, 0);
    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn a_batch_with_unique_keys_stores_one_message_per_key() {
    let broker = Broker::stub();
    let keyed = |key: &str| {
        let mut message = Message::new("unique_batch", "nobody", vec![]);
        message.options.insert("unique_key".into(), key.into());
        message
    };
    let batch = vec![
        keyed("a"),
        keyed("a"),
        Message::new("unique_batch", "nobody", vec![]),
        keyed("b"),
    ];
    let sent = broker.enqueue_batch(batch, None).await.unwrap();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        sent[1].message_id, sent[0].message_id,
        "the duplicate names the holder"
    );
    assert_ne!(sent[3].message_id, sent[0].message_id);
    assert_eq!(broker.stats("unique_batch").await.unwrap().ready, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_named_like_queue_keys_are_not_taken_for_queues() {
    // A key is the sender's text: `{ns}:__unique__.<key>` may end like a queue's keys.
    let ns = namespace();
    let broker = broker(config(&ns));
    for key in ["k.XQ", "k.XQ.reasons", "k.msgs", "k.DQ.msgs"] {
        let mut message = Message::new("unique_names", "nobody", vec![]);
        message.options.insert("unique_key".into(), key.into());
        broker
            .enqueue(message, Some(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    let (recovered, purged) = broker
        .backend_as::<actor_runtime::broker::RedisBackend>()
        .unwrap()
        .run_maintenance()
        .await
        .expect("maintenance skips the uniqueness keys");
    assert_eq!((recovered, purged), (0, 0));
    assert!(holder(&broker, "k.XQ").await.is_some(), "the key is kept");
    assert_eq!(broker.stats("unique_names").await.unwrap().delayed, 4);
    cleanup(&broker, 0).await;
}
