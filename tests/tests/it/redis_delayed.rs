//! Delayed messages on Redis surface only when due, moved to their queue in one step, and go
//! back to the delay queue when their consumer closes. They cost a worker memory by count, not
//! by size: it holds ids and due times, reads payloads when they are due, and still runs (or
//! dead-letters, with a reason) whatever a Python or Rust producer put in the delay queue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actor_runtime::{actor, current_message, Message, Worker};
use redis::AsyncCommands;
use serde_json::json;

use crate::support::fault_worker::{producer, WorkerProcess, QUEUE};
use crate::support::redis::{args, broker, cleanup, config, fetch_n, msg, raw};
use crate::support::{eventually, namespace, now_ms, redis_url, resident_mb};

/// Deletes a namespace's keys even when the test fails: 300 MB should not outlive it.
struct FlushOnDrop(String, String);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(self.0.as_str()).and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> =
            match redis::Commands::scan_match(&mut conn, format!("{}:*", self.1)) {
                Ok(keys) => keys.filter_map(Result::ok).collect(),
                Err(_) => return,
            };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::Commands::del(&mut conn, keys);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_message_surfaces_only_when_due_and_moves_atomically() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    let consumer = broker.consume("later", 10).await.unwrap();
    let sent = broker
        .enqueue(msg("later", 7), Some(Duration::from_millis(400)))
        .await
        .unwrap();
    let old_rid = sent.options["redis_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = Instant::now();
    let early = consumer
        .fetch(10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(early.is_empty(), "a delayed message surfaced early");
    // Held in this worker's delay ack set meanwhile, and still counted as delayed.
    let dq_acks = format!("{ns}:__acks__.{}.later.DQ", broker.worker_id().unwrap());
    let held: Vec<String> = conn.smembers(&dq_acks).await.unwrap();
    assert_eq!(held, [old_rid.as_str()]);
    assert_eq!(broker.stats("later").await.unwrap().delayed, 1);

    let batch = fetch_n(&*consumer, 1).await;
    assert!(
        start.elapsed() >= Duration::from_millis(350),
        "{:?}",
        start.elapsed()
    );
    let m = batch[0].message.as_ref().unwrap();
    assert_eq!(m.message_id, sent.message_id);
    assert_eq!(m.queue_name, "later");
    assert!(m.options.get("eta").is_none());
    assert_ne!(batch[0].tag.id, old_rid);
    assert_eq!(m.options["redis_message_id"], batch[0].tag.id.as_str());
    assert_eq!(&*batch[0].tag.queue, "later");
    // The delay queue and its ack set are empty: the move was one step.
    let dq_len: u64 = conn.llen(format!("{ns}:later.DQ")).await.unwrap();
    let dq_msgs: u64 = conn.hlen(format!("{ns}:later.DQ.msgs")).await.unwrap();
    let held: Vec<String> = conn.smembers(&dq_acks).await.unwrap();
    assert_eq!((dq_len, dq_msgs, held.len()), (0, 0, 0));
    consumer.ack(&[batch[0].tag.clone()]).await.unwrap();

    // A `.DQ` message without eta (or one already due) runs at once.
    let mut raw_msg = msg("later.DQ", 8);
    raw_msg
        .options
        .insert("redis_message_id".into(), "no-eta".into());
    let _: () = conn
        .hset(format!("{ns}:later.DQ.msgs"), "no-eta", raw_msg.encode())
        .await
        .unwrap();
    let _: () = conn
        .rpush(format!("{ns}:later.DQ"), "no-eta")
        .await
        .unwrap();
    let batch = fetch_n(&*consumer, 1).await;
    assert_eq!(args(&batch), [json!(8)]);
    consumer.ack(&[batch[0].tag.clone()]).await.unwrap();
    broker
        .join("later", Some(Duration::from_secs(5)), true)
        .await
        .unwrap();
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_held_delayed_messages_to_the_delay_queue() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    let consumer = broker.consume("held", 10).await.unwrap();
    broker
        .enqueue(msg("held", 1), Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(consumer
        .fetch(10, Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
    let dq_acks = format!("{ns}:__acks__.{}.held.DQ", broker.worker_id().unwrap());
    let held: u64 = conn.scard(&dq_acks).await.unwrap();
    assert_eq!(held, 1);
    consumer.close().await.unwrap();
    let held: u64 = conn.scard(&dq_acks).await.unwrap();
    let dq: u64 = conn.llen(format!("{ns}:held.DQ")).await.unwrap();
    assert_eq!((held, dq), (0, 1));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_holding_300_delayed_1mb_messages_stays_under_50mb() {
    let (url, ns) = (redis_url(), namespace());
    let _flush = FlushOnDrop(url.clone(), ns.clone());
    let producer = producer(&url, &ns);
    let total = 300u64;
    let data = "x".repeat(1 << 20);
    for chunk in (0..total).step_by(10) {
        let batch = (chunk..chunk + 10)
            .map(|id| Message::new(QUEUE, "blob", vec![id.into(), data.clone().into()]))
            .collect();
        producer
            .enqueue_batch(batch, Some(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    drop(data);
    let mut conn = crate::support::redis::connection(&url).await;
    let started = Instant::now();
    let mut worker = WorkerProcess::start(&url, &ns, &[]).await;
    let dq_acks = format!("{ns}:__acks__.{}.{QUEUE}.DQ", worker.worker_id);
    eventually(
        Duration::from_secs(60),
        "the worker to claim every delayed message",
        || {
            let mut conn = conn.clone();
            let (dq, dq_acks) = (format!("{ns}:{QUEUE}.DQ"), dq_acks.clone());
            async move {
                // A busy server may time a check out; it counts as not yet.
                let left: Option<u64> = conn.llen(dq).await.ok();
                let held: Option<u64> = conn.scard(dq_acks).await.ok();
                left == Some(0) && held == Some(total)
            }
        },
    )
    .await;
    let claimed_in = started.elapsed();
    // The last claim's reply may still be on its way: the highest of 2 s of samples.
    let pid = worker.child.id().expect("running");
    let mut rss = 0;
    for _ in 0..20 {
        rss = rss.max(resident_mb(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "idle worker holding {total} delayed 1 MB messages (claimed within {claimed_in:?} of \
         starting): {rss} MB resident"
    );
    assert!(rss < 50, "the idle worker is {rss} MB resident");
    let stored: u64 = conn.hlen(format!("{ns}:{QUEUE}.DQ.msgs")).await.unwrap();
    assert_eq!(stored, total, "the payloads stay in Redis");

    worker.signal("-TERM");
    assert!(worker.wait(Duration::from_secs(20)).await.success());
    let back: u64 = conn.llen(format!("{ns}:{QUEUE}.DQ")).await.unwrap();
    assert_eq!(back, total, "a stopping worker returns what it held");
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claims_no_more_delayed_messages_than_its_delay_prefetch() {
    let ns = namespace();
    let broker = broker(config(&ns).delay_prefetch(5));
    let q = "redis_delayed_capped";
    let mut conn = raw().await;
    let batch = (0..12)
        .map(|n| Message::new(q, "anyone", vec![n.into()]))
        .collect();
    broker
        .enqueue_batch(batch, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    let consumer = broker.consume(q, 10).await.unwrap();
    for _ in 0..3 {
        let batch = consumer.fetch(10, Duration::from_millis(50)).await.unwrap();
        assert!(batch.is_empty());
    }
    let dq_acks = format!("{ns}:__acks__.{}.{q}.DQ", broker.worker_id().unwrap());
    let held: u64 = conn.scard(&dq_acks).await.unwrap();
    let left: u64 = conn.llen(format!("{ns}:{q}.DQ")).await.unwrap();
    assert_eq!((held, left), (5, 7));
    consumer.close().await.unwrap();
    let held: u64 = conn.scard(&dq_acks).await.unwrap();
    let left: u64 = conn.llen(format!("{ns}:{q}.DQ")).await.unwrap();
    assert_eq!((held, left), (0, 12));
    cleanup(&broker, 0).await;
}

/// What the actors below saw, by test key: (n, message id, blob).
type Runs = HashMap<String, Vec<(i64, String, String)>>;

fn runs() -> &'static Mutex<Runs> {
    static RUNS: std::sync::OnceLock<Mutex<Runs>> = std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn runs_of(key: &str) -> Vec<(i64, String, String)> {
    runs().lock().unwrap().get(key).cloned().unwrap_or_default()
}

#[actor(queue_name = "redis_delayed")]
async fn delayed_record(key: String, n: i64, blob: String) {
    let id = current_message()
        .map(|m| m.message_id.clone())
        .unwrap_or_default();
    runs()
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push((n, id, blob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_run_once_in_eta_order_with_payloads_intact() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let q = "redis_delayed";
    let key = uuid::Uuid::new_v4().to_string();
    let worker = Worker::new(broker.clone())
        .queues([q])
        .threads(1)
        .start()
        .await
        .unwrap();
    // Sent out of eta order, small and 1 MB ones mixed, each blob different.
    let delays = [900u64, 300, 1500, 600, 1200];
    let start = Instant::now();
    let mut sent = HashMap::new();
    for (n, delay) in delays.iter().enumerate() {
        let n = n as i64;
        let blob: String = if n % 3 == 0 {
            format!("small {n}")
        } else {
            format!("{n}-").repeat(1 << 19)
        };
        let message = delayed_record::message(key.clone(), n, blob.clone())
            .delay(Duration::from_millis(*delay))
            .broker(broker.clone())
            .send()
            .await
            .unwrap()
            .into_message();
        let eta = message.eta().expect("a delayed message has an eta");
        sent.insert(n, (message.message_id, blob, eta));
    }
    // Sending a 1 MB message takes a while on a loaded machine: the order is the etas' (ties
    // in sending order), which are the delays' unless a send took hundreds of ms.
    let mut by_eta: Vec<i64> = sent.keys().copied().collect();
    by_eta.sort_by_key(|n| (sent[n].2, *n));
    eventually(
        Duration::from_secs(20),
        "every delayed message to run",
        || {
            let key = key.clone();
            async move { runs_of(&key).len() >= delays.len() }
        },
    )
    .await;
    assert!(start.elapsed() >= Duration::from_millis(1500));
    broker
        .join(q, Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    // Long enough for a duplicate to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = runs_of(&key);
    let order: Vec<i64> = runs.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(order, by_eta, "once each, in eta order");
    for (n, id, blob) in &runs {
        let (sent_id, sent_blob, _) = &sent[n];
        assert_eq!(id, sent_id, "message {n} kept its message_id");
        assert!(blob == sent_blob, "message {n} arrived intact");
    }
    let mut conn = raw().await;
    let dq_acks = format!("{ns}:__acks__.{}.{q}.DQ", broker.worker_id().unwrap());
    let (dq, dq_msgs, held, msgs): (u64, u64, u64, u64) = redis::pipe()
        .llen(format!("{ns}:{q}.DQ"))
        .hlen(format!("{ns}:{q}.DQ.msgs"))
        .scard(&dq_acks)
        .hlen(format!("{ns}:{q}.msgs"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((dq, dq_msgs, held, msgs), (0, 0, 0, 0));
    let report = worker.stop().await.unwrap();
    assert_eq!(report.succeeded, delays.len() as u64);
    cleanup(&broker, 0).await;
}

/// What `delayed_floats` saw, by test key: (nan, inf).
type Floats = HashMap<String, Vec<(Option<f64>, f64)>>;

fn floats() -> &'static Mutex<Floats> {
    static FLOATS: std::sync::OnceLock<Mutex<Floats>> = std::sync::OnceLock::new();
    FLOATS.get_or_init(Default::default)
}

#[actor(queue_name = "redis_delayed_floats")]
async fn delayed_floats(key: String, nan: Option<f64>, inf: f64) {
    floats()
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push((nan, inf));
}

/// Python's `json` writes `NaN` and `Infinity`. Redis 7's cjson reads them, so the first
/// message's eta comes from the claim script; its `eta: NaN` is no time cjson can give,
/// so the second one's comes from our decoder, as any payload cjson refuses does (servers or
/// builds whose cjson rejects such tokens send the first one there too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_python_payloads_with_nan_and_infinity_run() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let q = "redis_delayed_floats";
    let key = uuid::Uuid::new_v4().to_string();
    let mut conn = raw().await;
    let due = now_ms() + 300;
    let python = |id: &str, eta: &str| {
        format!(
            r#"{{"queue_name":"{q}.DQ","actor_name":"delayed_floats","args":["{key}",NaN,Infinity],"kwargs":{{}},"options":{{"redis_message_id":"{id}","eta":{eta}}},"message_id":"{id}-mid","message_timestamp":{due}}}"#
        )
    };
    for (id, eta) in [
        ("plain-eta", due.to_string()),
        ("nan-eta", "NaN".to_owned()),
    ] {
        let _: () = conn
            .hset(format!("{ns}:{q}.DQ.msgs"), id, python(id, &eta))
            .await
            .unwrap();
        let _: () = conn.rpush(format!("{ns}:{q}.DQ"), id).await.unwrap();
    }
    let worker = Worker::new(broker.clone())
        .queues([q])
        .start()
        .await
        .unwrap();
    broker
        .join(q, Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    let seen = floats().lock().unwrap().get(&key).cloned().unwrap();
    assert_eq!(seen, [(None, f64::MAX), (None, f64::MAX)]);
    let report = worker.stop().await.unwrap();
    assert_eq!(report.succeeded, 2);
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_delayed_payloads_are_dead_lettered_with_their_reason() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let q = "redis_delayed_junk";
    let mut conn = raw().await;
    // Not JSON at all: dead-lettered when claimed. JSON that cjson reads (eta included) but
    // that is no Dramatiq message (an extra top-level key): dead-lettered when due.
    let not_json = "{\"queue_name\": ".to_owned();
    let mut extra = json!(Message::new(&format!("{q}.DQ"), "anyone", vec![]));
    extra["options"]["eta"] = json!(now_ms() + 200);
    extra["extra"] = json!(1);
    for (id, body) in [("not-json", not_json), ("extra-key", extra.to_string())] {
        let _: () = conn
            .hset(format!("{ns}:{q}.DQ.msgs"), id, body)
            .await
            .unwrap();
        let _: () = conn.rpush(format!("{ns}:{q}.DQ"), id).await.unwrap();
    }
    let consumer = broker.consume(q, 10).await.unwrap();
    let start = Instant::now();
    while broker.stats(q).await.unwrap().dead < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not dead-lettered"
        );
        let batch = consumer
            .fetch(10, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(batch.is_empty(), "an undecodable message was delivered");
    }
    let mut letters = broker.dead_letters(q, 10).await.unwrap();
    letters.sort_by(|a, b| a.id.cmp(&b.id));
    let reasons: Vec<String> = letters
        .iter()
        .map(|l| l.reason.clone().unwrap_or_default())
        .collect();
    assert_eq!(letters[0].id, "extra-key");
    assert!(reasons[0].starts_with("undecodable message"), "{reasons:?}");
    assert!(reasons[0].contains("extra"), "{reasons:?}");
    assert_eq!(letters[1].id, "not-json");
    assert!(reasons[1].starts_with("undecodable message"), "{reasons:?}");
    let dq_acks = format!("{ns}:__acks__.{}.{q}.DQ", broker.worker_id().unwrap());
    let held: u64 = conn.scard(&dq_acks).await.unwrap();
    let stored: u64 = conn.hlen(format!("{ns}:{q}.DQ.msgs")).await.unwrap();
    assert_eq!((held, stored), (0, 0));
    cleanup(&broker, 0).await;
}
