//! The Redis broker against a real server: Dramatiq's key layout, the consumer's semantics,
//! delayed messages, maintenance, wake-ups and faults. Each test has its own namespace.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actor_runtime::broker::Consumer;
use actor_runtime::broker::Delivery;
use actor_runtime::broker::RedisConfig;
use actor_runtime::{actor, Broker, Error, Message, Worker};
use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::common::{namespace, redis_url};
use support::*;

/// Raw Redis access and setup shared with the interop tests.
pub(crate) mod support {
    use super::*;

    /// The test server's URL with database `db`.
    pub(crate) fn url_with_db(db: i64) -> String {
        let url = redis_url();
        let base = match url.rsplit_once('/') {
            Some((base, tail))
                if base.contains("://")
                    && !base.ends_with('/')
                    && tail.chars().all(|c| c.is_ascii_digit()) =>
            {
                base.to_owned()
            }
            _ => url.trim_end_matches('/').to_owned(),
        };
        format!("{base}/{db}")
    }

    /// A random number in `range`.
    pub(crate) fn random(range: std::ops::Range<u64>) -> u64 {
        range.start + (uuid::Uuid::new_v4().as_u128() % u128::from(range.end - range.start)) as u64
    }

    /// A raw connection to the test server's `db`.
    pub(crate) async fn raw_db(db: i64) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url_with_db(db))
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("the tests need Redis at TEST_REDIS_URL or 127.0.0.1:6379")
    }

    /// A raw connection to the test server.
    pub(crate) async fn raw() -> redis::aio::MultiplexedConnection {
        raw_db(0).await
    }

    /// Quick timers, so maintenance and polling tests finish fast.
    pub(crate) fn config(ns: &str) -> RedisConfig {
        RedisConfig::new(redis_url()).namespace(ns)
    }

    pub(crate) fn broker(config: RedisConfig) -> Broker {
        Broker::redis(config).expect("valid config")
    }

    /// Deletes every key of the namespace and closes the broker.
    pub(crate) async fn cleanup(broker: &Broker, db: i64) {
        broker.close().await;
        let mut conn = raw_db(db).await;
        let keys: Vec<String> = conn
            .keys(format!("{}:*", broker.describe().namespace.unwrap()))
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.unwrap();
        }
    }

    /// The payload stored for `id` in `hash`, as JSON.
    pub(crate) async fn payload(
        conn: &mut redis::aio::MultiplexedConnection,
        hash: &str,
        id: &str,
    ) -> Value {
        let raw: Option<String> = conn.hget(hash, id).await.unwrap();
        serde_json::from_str(&raw.unwrap_or_else(|| panic!("no payload for {id} in {hash}")))
            .unwrap()
    }

    /// Polls `check` every 10 ms until it holds, failing after `within`.
    pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(start.elapsed() < within, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn now_ms() -> u64 {
        actor_runtime::message::now_ms()
    }
}

fn msg(queue: &str, n: i64) -> Message {
    Message::new(queue, "redis_noop", vec![n.into()])
}

fn ids(batch: &[Delivery]) -> Vec<String> {
    batch.iter().map(|d| d.tag.id.clone()).collect()
}

fn args(batch: &[Delivery]) -> Vec<Value> {
    batch
        .iter()
        .map(|d| d.message.as_ref().unwrap().args[0].clone())
        .collect()
}

async fn fetch_n(consumer: &dyn Consumer, n: usize) -> Vec<Delivery> {
    let mut all = Vec::new();
    let start = Instant::now();
    while all.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "fetched only {}",
            all.len()
        );
        all.extend(
            consumer
                .fetch(n - all.len(), Duration::from_secs(2))
                .await
                .unwrap(),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_writes_dramatiqs_layout() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;

    let sent = broker.enqueue(msg("jobs", 1), None).await.unwrap();
    let rid = sent.options["redis_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        rid, sent.message_id,
        "redis_message_id must differ from message_id"
    );
    let list: Vec<String> = conn.lrange(format!("{ns}:jobs"), 0, -1).await.unwrap();
    assert_eq!(list, [rid.as_str()]);
    let stored = payload(&mut conn, &format!("{ns}:jobs.msgs"), &rid).await;
    let mut keys: Vec<_> = stored.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "actor_name",
            "args",
            "kwargs",
            "message_id",
            "message_timestamp",
            "options",
            "queue_name"
        ]
    );
    assert_eq!(stored["queue_name"], "jobs");
    assert_eq!(stored["options"]["redis_message_id"], rid.as_str());
    assert_eq!(stored["message_id"], sent.message_id.as_str());

    // Every enqueue mints a new redis id, even of the same message.
    let again = broker.enqueue(sent.clone(), None).await.unwrap();
    assert_ne!(
        again.options["redis_message_id"],
        sent.options["redis_message_id"]
    );
    assert_eq!(again.message_id, sent.message_id);

    let delayed = broker
        .enqueue(msg("jobs", 2), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let drid = delayed.options["redis_message_id"].as_str().unwrap();
    assert_eq!(delayed.queue_name, "jobs.DQ");
    let dq: Vec<String> = conn.lrange(format!("{ns}:jobs.DQ"), 0, -1).await.unwrap();
    assert_eq!(dq, [drid.to_owned()]);
    let stored = payload(&mut conn, &format!("{ns}:jobs.DQ.msgs"), drid).await;
    assert_eq!(stored["queue_name"], "jobs.DQ");
    let eta = stored["options"]["eta"].as_u64().unwrap();
    assert!(
        eta >= now_ms() + 50_000 && eta <= now_ms() + 60_000,
        "eta {eta}"
    );

    let stats = broker.stats("jobs").await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight, stats.dead),
        (2, 1, 0, 0)
    );
    assert!(broker.queues().contains(&"jobs".to_owned()));
    assert!(matches!(
        broker.enqueue(msg("bad name", 1), None).await,
        Err(Error::InvalidQueueName(_))
    ));

    // The heartbeat of this process is in Dramatiq's zset.
    let wid = broker.worker_id().unwrap().to_owned();
    eventually(Duration::from_secs(5), "heartbeat", || {
        let mut conn = conn.clone();
        let (ns, wid) = (ns.clone(), wid.clone());
        async move {
            let score: Option<f64> = conn
                .zscore(format!("{ns}:__heartbeats__"), wid)
                .await
                .unwrap();
            score.is_some()
        }
    })
    .await;
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_enqueue_keeps_order_across_queues_and_chunks() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    // 2500 to one queue (three script calls), then two to another, then a delayed batch.
    let mut batch: Vec<Message> = (0..2500).map(|n| msg("bulk", n)).collect();
    batch.extend([msg("other", 1), msg("other", 2)]);
    let sent = broker.enqueue_batch(batch, None).await.unwrap();
    assert_eq!(sent.len(), 2502);
    let rids: Vec<String> = sent[..2500]
        .iter()
        .map(|m| m.options["redis_message_id"].as_str().unwrap().to_owned())
        .collect();
    let list: Vec<String> = conn.lrange(format!("{ns}:bulk"), 0, -1).await.unwrap();
    assert_eq!(list, rids, "stored in order");
    let hlen: u64 = conn.hlen(format!("{ns}:bulk.msgs")).await.unwrap();
    assert_eq!(hlen, 2500);
    let other: u64 = conn.llen(format!("{ns}:other")).await.unwrap();
    assert_eq!(other, 2);
    let delayed = broker
        .enqueue_batch(
            vec![msg("bulk", 1), msg("bulk", 2)],
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(delayed
        .iter()
        .all(|m| m.queue_name == "bulk.DQ" && m.eta().is_some()));
    let stats = broker.stats("bulk").await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (2500, 2));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_ack_nack_and_requeue_use_the_ack_set() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    for n in 1..=5 {
        broker.enqueue(msg("work", n), None).await.unwrap();
    }
    let consumer = broker.consume("work", 10).await.unwrap();
    let batch = fetch_n(&*consumer, 5).await;
    assert_eq!(
        args(&batch),
        [json!(1), json!(2), json!(3), json!(4), json!(5)]
    );
    let acks_key = format!("{ns}:__acks__.{}.work", broker.worker_id().unwrap());
    let mut in_acks: Vec<String> = conn.smembers(&acks_key).await.unwrap();
    in_acks.sort();
    let mut fetched = ids(&batch);
    fetched.sort();
    assert_eq!(in_acks, fetched);
    let stats = broker.stats("work").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 5));

    // Ack a batch: gone from the ack set and the payloads.
    consumer
        .ack(&[batch[0].tag.clone(), batch[1].tag.clone()])
        .await
        .unwrap();
    let left: HashSet<String> = conn.smembers(&acks_key).await.unwrap();
    assert!(!left.contains(&batch[0].tag.id) && !left.contains(&batch[1].tag.id));
    let gone: Option<String> = conn
        .hget(format!("{ns}:work.msgs"), &batch[0].tag.id)
        .await
        .unwrap();
    assert!(gone.is_none());

    // Nack: to the canonical XQ zset + hash, with the reason on the side.
    consumer
        .nack(&batch[2].tag, "ValueError: boom")
        .await
        .unwrap();
    let score: Option<f64> = conn
        .zscore(format!("{ns}:work.XQ"), &batch[2].tag.id)
        .await
        .unwrap();
    assert!(score.is_some_and(|s| (s as u64).abs_diff(now_ms()) < 60_000));
    let dead = payload(&mut conn, &format!("{ns}:work.XQ.msgs"), &batch[2].tag.id).await;
    assert_eq!(dead["args"], json!([3]));
    let letters = broker.dead_letters("work", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.as_deref(), Some("ValueError: boom"));
    assert_eq!(letters[0].message.as_ref().unwrap().args, [json!(3)]);

    // Requeue goes back to the head, in order, ahead of newer messages.
    broker.enqueue(msg("work", 6), None).await.unwrap();
    consumer
        .requeue(&[batch[3].tag.clone(), batch[4].tag.clone()])
        .await
        .unwrap();
    let list: Vec<String> = conn.lrange(format!("{ns}:work"), 0, -1).await.unwrap();
    assert_eq!(
        &list[..2],
        &[batch[3].tag.id.clone(), batch[4].tag.id.clone()]
    );
    let again = fetch_n(&*consumer, 3).await;
    assert_eq!(args(&again), [json!(4), json!(5), json!(6)]);
    consumer
        .ack(&again.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    let left: Vec<String> = conn.smembers(&acks_key).await.unwrap();
    assert!(left.is_empty(), "{left:?}");

    // Dead letters back to the queue under a new redis id; then purge.
    assert_eq!(broker.requeue_dead_letters("work", None).await.unwrap(), 1);
    let back = fetch_n(&*consumer, 1).await;
    assert_eq!(args(&back), [json!(3)]);
    assert_ne!(back[0].tag.id, batch[2].tag.id);
    let m = back[0].message.as_ref().unwrap();
    assert_eq!(m.options["redis_message_id"], back[0].tag.id.as_str());
    consumer.nack(&back[0].tag, "again").await.unwrap();
    assert_eq!(broker.purge_dead_letters("work").await.unwrap(), 1);
    let reasons: u64 = conn.exists(format!("{ns}:work.XQ.reasons")).await.unwrap();
    assert_eq!(reasons, 0);
    assert_eq!(broker.stats("work").await.unwrap(), Default::default());
    consumer.close().await.unwrap();
    cleanup(&broker, 0).await;
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
async fn missing_payload_is_skipped_and_cleaned() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    let _: () = conn
        .rpush(format!("{ns}:ghosts"), "ghost-id")
        .await
        .unwrap();
    broker.enqueue(msg("ghosts", 1), None).await.unwrap();
    let consumer = broker.consume("ghosts", 10).await.unwrap();
    let batch = fetch_n(&*consumer, 1).await;
    assert_eq!(args(&batch), [json!(1)]);
    let acks: Vec<String> = conn
        .smembers(format!(
            "{ns}:__acks__.{}.ghosts",
            broker.worker_id().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(
        acks,
        [batch[0].tag.id.clone()],
        "the ghost id must not be held"
    );
    let list: u64 = conn.llen(format!("{ns}:ghosts")).await.unwrap();
    assert_eq!(list, 0);
    consumer.ack(&[batch[0].tag.clone()]).await.unwrap();
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payload_is_delivered_as_an_error_and_can_be_dead_lettered() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    let _: () = conn
        .hset(format!("{ns}:junk.msgs"), "bad", "{not json")
        .await
        .unwrap();
    let _: () = conn.rpush(format!("{ns}:junk"), "bad").await.unwrap();
    let consumer = broker.consume("junk", 10).await.unwrap();
    let batch = fetch_n(&*consumer, 1).await;
    assert!(batch[0].message.is_err());
    consumer
        .nack(&batch[0].tag, "undecodable message")
        .await
        .unwrap();
    let letters = broker.dead_letters("junk", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].message.is_err());
    assert!(matches!(
        broker.join("junk", Some(Duration::from_secs(1)), true).await,
        Err(Error::DeadLettered { reason, .. }) if reason == "undecodable message"
    ));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_waits_for_unacked_and_delayed_messages() {
    let ns = namespace();
    let broker = broker(config(&ns));
    broker.enqueue(msg("joined", 1), None).await.unwrap();
    broker
        .enqueue(msg("joined", 2), Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(matches!(
        broker
            .join("joined", Some(Duration::from_millis(50)), true)
            .await,
        Err(Error::JoinTimeout { .. })
    ));
    let consumer: Arc<dyn Consumer> = Arc::from(broker.consume("joined", 10).await.unwrap());
    let drain = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            let batch = fetch_n(&*consumer, 2).await;
            // Fetched but not acked still counts.
            tokio::time::sleep(Duration::from_millis(100)).await;
            consumer
                .ack(&batch.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
                .await
                .unwrap();
        }
    });
    let start = Instant::now();
    broker
        .join("joined", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    drain.await.unwrap();
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_deletes_every_message_of_the_queue() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    broker.enqueue(msg("flushed", 1), None).await.unwrap();
    broker.enqueue(msg("flushed", 2), None).await.unwrap();
    broker
        .enqueue(msg("flushed", 3), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let consumer = broker.consume("flushed", 1).await.unwrap();
    let batch = fetch_n(&*consumer, 1).await;
    consumer.nack(&batch[0].tag, "x").await.unwrap();
    broker.flush("flushed").await.unwrap();
    let keys: Vec<String> = conn.keys(format!("{ns}:*flushed*")).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(broker.stats("flushed").await.unwrap(), Default::default());
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_workers_messages_come_back_on_the_maintenance_timer() {
    let ns = namespace();
    let mut conn = raw().await;
    let dead = uuid::Uuid::new_v4().to_string();
    let alive = uuid::Uuid::new_v4().to_string();
    let hb = format!("{ns}:__heartbeats__");
    // A dead worker (Python or Rust, same layout) holding one ready and one delayed message,
    // plus an id whose payload is already gone; and a live worker holding one.
    for (queue, id) in [
        ("rescued", "r1"),
        ("rescued.DQ", "d1"),
        ("rescued", "live1"),
    ] {
        let m = msg(queue, 1);
        let _: () = conn
            .hset(format!("{ns}:{queue}.msgs"), id, m.encode())
            .await
            .unwrap();
    }
    let _: () = conn
        .sadd(format!("{ns}:__acks__.{dead}.rescued"), &["r1", "gone"])
        .await
        .unwrap();
    let _: () = conn
        .sadd(format!("{ns}:__acks__.{dead}.rescued.DQ"), "d1")
        .await
        .unwrap();
    let _: () = conn
        .sadd(format!("{ns}:__acks__.{alive}.rescued"), "live1")
        .await
        .unwrap();
    let _: () = conn.zadd(&hb, &dead, now_ms() - 10_000).await.unwrap();
    let _: () = conn.zadd(&hb, &alive, now_ms() + 60_000).await.unwrap();

    let broker = broker(
        config(&ns)
            .heartbeat_timeout(Duration::from_secs(2))
            .maintenance_interval(Duration::from_millis(100)),
    );
    // Any use starts the timers; no consumer needed.
    broker.stats("rescued").await.unwrap();
    eventually(Duration::from_secs(5), "recovery", || {
        let mut conn = conn.clone();
        let ns = ns.clone();
        async move {
            let list: Vec<String> = conn.lrange(format!("{ns}:rescued"), 0, -1).await.unwrap();
            let dq: Vec<String> = conn
                .lrange(format!("{ns}:rescued.DQ"), 0, -1)
                .await
                .unwrap();
            list == ["r1"] && dq == ["d1"]
        }
    })
    .await;
    let dead_sets: u64 = conn
        .exists(&[
            format!("{ns}:__acks__.{dead}.rescued"),
            format!("{ns}:__acks__.{dead}.rescued.DQ"),
        ])
        .await
        .unwrap();
    assert_eq!(dead_sets, 0);
    eventually(Duration::from_secs(5), "the dead worker forgotten", || {
        let mut conn = conn.clone();
        let (hb, dead) = (hb.clone(), dead.clone());
        async move {
            let score: Option<f64> = conn.zscore(&hb, &dead).await.unwrap();
            score.is_none()
        }
    })
    .await;
    let live: Vec<String> = conn
        .smembers(format!("{ns}:__acks__.{alive}.rescued"))
        .await
        .unwrap();
    assert_eq!(live, ["live1"], "a live worker's messages must stay");

    // The recovered messages run normally.
    let consumer = broker.consume("rescued", 10).await.unwrap();
    let batch = fetch_n(&*consumer, 2).await;
    assert_eq!(batch.len(), 2);
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_dead_letters_are_purged_in_every_queue() {
    let ns = namespace();
    let mut conn = raw().await;
    let now = now_ms();
    // One old and one fresh dead letter, in a queue this process never declared (as a
    // Python worker would leave them: no reason).
    for (id, at) in [("old", now - 120_000), ("fresh", now)] {
        let _: () = conn.zadd(format!("{ns}:pyq.XQ"), id, at).await.unwrap();
        let _: () = conn
            .hset(format!("{ns}:pyq.XQ.msgs"), id, msg("pyq", 1).encode())
            .await
            .unwrap();
    }
    let _: () = conn
        .hset(format!("{ns}:pyq.XQ.reasons"), "old", "why")
        .await
        .unwrap();
    let broker = broker(
        config(&ns)
            .dead_message_ttl(Duration::from_secs(60))
            .maintenance_interval(Duration::from_millis(100)),
    );
    broker.stats("pyq").await.unwrap();
    eventually(Duration::from_secs(5), "the purge", || {
        let mut conn = conn.clone();
        let ns = ns.clone();
        async move {
            let ids: Vec<String> = conn.zrange(format!("{ns}:pyq.XQ"), 0, -1).await.unwrap();
            ids == ["fresh"]
        }
    })
    .await;
    let old: Option<String> = conn.hget(format!("{ns}:pyq.XQ.msgs"), "old").await.unwrap();
    let reason: Option<String> = conn
        .hget(format!("{ns}:pyq.XQ.reasons"), "old")
        .await
        .unwrap();
    assert!(old.is_none() && reason.is_none());
    let fresh: Option<String> = conn
        .hget(format!("{ns}:pyq.XQ.msgs"), "fresh")
        .await
        .unwrap();
    assert!(fresh.is_some());
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_wakes_on_a_raw_push() {
    let ns = namespace();
    // Polling so slow that only a notification can wake the consumer within the test.
    let broker = broker(
        config(&ns)
            .poll_interval(Duration::from_secs(30))
            .safety_poll_interval(Duration::from_secs(30)),
    );
    let mut conn = raw().await;
    let consumer: Arc<dyn Consumer> = Arc::from(broker.consume("wake", 10).await.unwrap());
    // Let the subscription settle, so the fetch below is truly idle.
    assert!(consumer
        .fetch(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    let mut latencies = Vec::new();
    for (i, queue) in ["wake", "wake.DQ", "wake"].into_iter().enumerate() {
        let waiting = tokio::spawn({
            let consumer = consumer.clone();
            async move {
                let batch = consumer.fetch(10, Duration::from_secs(20)).await.unwrap();
                (batch, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A producer that is not us (as Python would): raw HSET + RPUSH.
        let id = format!("raw-{i}");
        let mut m = msg(queue, i as i64);
        m.options
            .insert("redis_message_id".into(), id.clone().into());
        let _: () = conn
            .hset(format!("{ns}:{queue}.msgs"), &id, m.encode())
            .await
            .unwrap();
        let pushed = Instant::now();
        let _: () = conn.rpush(format!("{ns}:{queue}"), &id).await.unwrap();
        let (batch, got) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("an idle consumer must wake on a push")
            .unwrap();
        assert_eq!(args(&batch), [json!(i)]);
        latencies.push(got.duration_since(pushed));
        consumer.ack(&[batch[0].tag.clone()]).await.unwrap();
    }
    println!("pickup latency after a raw RPUSH: {latencies:?}");
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_fetches_lose_nothing() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let consumer = broker.consume("cancel", 10).await.unwrap();
    let total = 60;
    let mut seen = Vec::new();
    for n in 0..total {
        broker.enqueue(msg("cancel", n), None).await.unwrap();
        // Cut the fetch short at random points: before, during or after its script.
        let cut = Duration::from_micros(random(0..1500));
        if let Ok(Ok(batch)) =
            tokio::time::timeout(cut, consumer.fetch(10, Duration::from_secs(1))).await
        {
            seen.extend(batch);
        }
    }
    let start = Instant::now();
    while seen.len() < total as usize && start.elapsed() < Duration::from_secs(10) {
        seen.extend(
            consumer
                .fetch(100, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    let mut got: Vec<i64> = args(&seen)
        .into_iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        (0..total).collect::<Vec<_>>(),
        "every message exactly once"
    );
    consumer
        .ack(&seen.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    broker
        .join("cancel", Some(Duration::from_secs(5)), true)
        .await
        .unwrap();
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_a_connection_error_in_bounded_time() {
    let broker = Broker::redis(
        RedisConfig::new("redis://127.0.0.1:1/0")
            .connect_timeout(Duration::from_millis(300))
            .retry_timeout(Duration::from_millis(800)),
    )
    .expect("building does not connect");
    let start = Instant::now();
    let err = broker.enqueue(msg("q", 1), None).await.unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let err = broker.stats("q").await.unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err}");
    broker.close().await;
    assert!(matches!(
        broker.enqueue(msg("q", 1), None).await,
        Err(Error::Closed)
    ));

    // Wrong credentials are not worth retrying: a prompt, clear error.
    let broker = Broker::redis(RedisConfig::new(format!(
        "redis://nobody:wrong@{}",
        url_with_db(0).trim_start_matches("redis://")
    )))
    .unwrap();
    let start = Instant::now();
    let err = broker.stats("q").await.unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}: {err}",
        start.elapsed()
    );
    assert!(
        !err.to_string().contains("wrong"),
        "the password leaked: {err}"
    );
    broker.close().await;

    // rediss:// without the `tls` feature is refused up front, saying why.
    if let Err(err) = Broker::redis(RedisConfig::new("rediss://127.0.0.1:6380")) {
        assert!(
            matches!(&err, Error::Config(m) if m.contains("`tls` feature")),
            "{err}"
        );
    }
}

/// Redis ids of this test's connections (those on `db`), excluding `except`.
async fn clients_on_db(
    conn: &mut redis::aio::MultiplexedConnection,
    db: i64,
    except: i64,
) -> Vec<i64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    list.lines()
        .filter(|line| line.split(' ').any(|f| f == format!("db={db}")))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .and_then(|id| id.parse().ok())
        })
        .filter(|id| *id != except)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_nothing_and_ack_nothing_twice() {
    // A database of its own, so the killer can tell this test's connections from others'.
    const DB: i64 = 9;
    let ns = namespace();
    let broker = broker(
        RedisConfig::new(url_with_db(DB))
            .namespace(&ns)
            .max_connections(2)
            .retry_timeout(Duration::from_secs(10)),
    );
    let mut admin = raw().await;
    let admin_id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut admin)
        .await
        .unwrap();
    let consumer: Arc<dyn Consumer> = Arc::from(broker.consume("flaky", 20).await.unwrap());
    let total = 400i64;
    let producer = tokio::spawn({
        let broker = broker.clone();
        async move {
            for n in 0..total {
                let delay = (n % 10 == 0).then(|| Duration::from_millis(50));
                broker.enqueue(msg("flaky", n), delay).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(random(100..300))).await;
                for id in clients_on_db(&mut admin, DB, admin_id).await {
                    let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("ID")
                        .arg(id)
                        .query_async(&mut admin)
                        .await;
                    kills += 1;
                }
            }
            kills
        }
    });
    let mut runs: HashMap<i64, u32> = HashMap::new();
    let start = Instant::now();
    while runs.len() < total as usize {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {total} arrived",
            runs.len()
        );
        let batch = match consumer.fetch(20, Duration::from_millis(500)).await {
            Ok(batch) => batch,
            Err(err) => {
                println!("fetch failed (expected while killing): {err}");
                continue;
            }
        };
        for d in &batch {
            *runs
                .entry(d.message.as_ref().unwrap().args[0].as_i64().unwrap())
                .or_default() += 1;
        }
        let tags: Vec<_> = batch.iter().map(|d| d.tag.clone()).collect();
        while let Err(err) = consumer.ack(&tags).await {
            println!("ack failed (expected while killing): {err}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.await.unwrap();
    producer.await.unwrap();
    println!("killed {kills} connections");
    assert!(kills > 0);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    broker
        .join("flaky", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    let mut conn = raw_db(DB).await;
    let acks: u64 = conn
        .scard(format!(
            "{ns}:__acks__.{}.flaky",
            broker.worker_id().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(acks, 0);
    consumer.close().await.unwrap();
    cleanup(&broker, DB).await;
}

// ---- A running Worker on Redis -------------------------------------------------------------

/// What the actors below saw, by test key.
fn seen() -> &'static Mutex<HashMap<String, Vec<Value>>> {
    static SEEN: std::sync::OnceLock<Mutex<HashMap<String, Vec<Value>>>> =
        std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
}

fn seen_by(key: &str) -> Vec<Value> {
    seen().lock().unwrap().get(key).cloned().unwrap_or_default()
}

#[actor(queue_name = "redis_worker")]
async fn redis_record(key: String, n: i64) {
    seen()
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push(json!(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_letters_bad_payloads_and_runs_the_rest() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let key = uuid::Uuid::new_v4().to_string();
    let mut conn = raw().await;
    let q = "redis_worker";
    let raw_push = |id: &'static str, body: String| {
        let mut conn = conn.clone();
        let ns = ns.clone();
        async move {
            let _: () = conn.hset(format!("{ns}:{q}.msgs"), id, body).await.unwrap();
            let _: () = conn.rpush(format!("{ns}:{q}"), id).await.unwrap();
        }
    };
    redis_record::message(key.clone(), 1)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    raw_push("not-json", "{\"queue_name\": ".into()).await;
    let mut unknown = Message::new(q, "redis_nobody_has_this", vec![]);
    unknown
        .options
        .insert("redis_message_id".into(), "unknown-actor".into());
    raw_push(
        "unknown-actor",
        String::from_utf8(unknown.encode()).unwrap(),
    )
    .await;
    let mut wrong = Message::new(q, "redis_record", vec![json!("k"), json!("not a number")]);
    wrong
        .options
        .insert("redis_message_id".into(), "wrong-args".into());
    raw_push("wrong-args", String::from_utf8(wrong.encode()).unwrap()).await;
    redis_record::message(key.clone(), 2)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();

    let worker = Worker::new(broker.clone())
        .queues([q])
        .threads(2)
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the good messages", || {
        let key = key.clone();
        async move { seen_by(&key).len() == 2 }
    })
    .await;
    eventually(Duration::from_secs(10), "three dead letters", || {
        let broker = broker.clone();
        async move { broker.stats(q).await.unwrap().dead == 3 }
    })
    .await;
    broker
        .join(q, Some(Duration::from_secs(10)), false)
        .await
        .unwrap();
    let report = worker.stop().await.unwrap();
    assert_eq!(report.succeeded, 2);
    let mut seen_args = seen_by(&key);
    seen_args.sort_by_key(|v| v.as_i64());
    assert_eq!(seen_args, [json!(1), json!(2)]);
    let letters = broker.dead_letters(q, 10).await.unwrap();
    let mut reasons: Vec<String> = letters.iter().map(|l| l.reason.clone().unwrap()).collect();
    reasons.sort();
    assert!(reasons[0].starts_with("bad arguments"), "{reasons:?}");
    assert!(reasons[1].starts_with("undecodable message"), "{reasons:?}");
    assert!(reasons[2].contains("unknown actor"), "{reasons:?}");
    // Where a Python operator looks: ZSET `.XQ` + `.XQ.msgs`.
    let xq: Vec<String> = conn.zrange(format!("{ns}:{q}.XQ"), 0, -1).await.unwrap();
    let xq_msgs: u64 = conn.hlen(format!("{ns}:{q}.XQ.msgs")).await.unwrap();
    assert_eq!((xq.len(), xq_msgs), (3, 3));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_delayed_messages_when_due() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let key = uuid::Uuid::new_v4().to_string();
    let worker = Worker::new(broker.clone())
        .queues(["redis_worker"])
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    redis_record::message(key.clone(), 5)
        .delay(Duration::from_millis(300))
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    redis_record::message(key.clone(), 6)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker
        .join("redis_worker", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(seen_by(&key), [json!(6), json!(5)]);
    worker.stop().await.unwrap();
    cleanup(&broker, 0).await;
}

#[actor(queue_name = "redis_bench")]
async fn redis_bench_noop(_n: u64) {}

/// Figures, not a check: `cargo test --release -p actor-tests --test it throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn throughput() {
    const N: u64 = 10_000;
    let ns = namespace();
    let broker = broker(config(&ns));
    let start = Instant::now();
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let broker = broker.clone();
            tokio::spawn(async move {
                for n in (p..N).step_by(16) {
                    broker.enqueue(msg("bench", n as i64), None).await.unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let enqueue = start.elapsed();
    let consumer = broker.consume("bench", 100).await.unwrap();
    let start = Instant::now();
    let mut done = 0;
    while done < N as usize {
        let batch = consumer.fetch(100, Duration::from_secs(1)).await.unwrap();
        done += batch.len();
        consumer
            .ack(&batch.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    let fetch_ack = start.elapsed();
    let per_sec = |d: Duration| (N as f64 / d.as_secs_f64()) as u64;
    println!(
        "enqueue {N} (16 concurrent producers): {enqueue:?} = {}/s; fetch+ack in batches of 100: {fetch_ack:?} = {}/s",
        per_sec(enqueue),
        per_sec(fetch_ack)
    );

    for n in 0..N {
        redis_bench_noop::message(n)
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
    }
    let start = Instant::now();
    let worker = Worker::new(broker.clone())
        .queues(["redis_bench"])
        .start()
        .await
        .unwrap();
    broker
        .join("redis_bench", Some(Duration::from_secs(120)), true)
        .await
        .unwrap();
    let drained = start.elapsed();
    worker.stop().await.unwrap();
    println!(
        "a Worker (8 threads) drained {N} no-op messages in {drained:?} = {}/s",
        per_sec(drained)
    );
    cleanup(&broker, 0).await;
}

/// A global broker outlives the runtime that first used it (each `#[tokio::test]` has its
/// own): its heartbeat and consumers must carry on in the next runtime.
#[test]
fn a_broker_keeps_working_across_runtimes() {
    let ns = namespace();
    let broker = broker(config(&ns).heartbeat_interval(Duration::from_millis(50)));
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let heartbeat = |rt: &tokio::runtime::Runtime| {
        let (ns, wid) = (ns.clone(), broker.worker_id().unwrap().to_owned());
        rt.block_on(async move {
            let mut conn = raw().await;
            let score: Option<f64> = conn
                .zscore(format!("{ns}:__heartbeats__"), wid)
                .await
                .unwrap();
            score.map_or(0, |s| s as u64)
        })
    };
    let first = runtime();
    first.block_on(async {
        broker.enqueue(msg("hop", 1), None).await.unwrap();
        let consumer = broker.consume("hop", 1).await.unwrap();
        assert_eq!(fetch_n(&*consumer, 1).await.len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    drop(first);
    let dropped_at = now_ms();
    let second = runtime();
    second.block_on(async {
        broker.enqueue(msg("hop", 2), None).await.unwrap();
        let consumer = broker.consume("hop", 1).await.unwrap();
        let batch = fetch_n(&*consumer, 1).await;
        assert_eq!(args(&batch), [json!(2)]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    assert!(
        heartbeat(&second) > dropped_at,
        "the heartbeat stopped with the first runtime"
    );
    second.block_on(cleanup(&broker, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_an_idle_consumer_polls() {
    let ns = namespace();
    let broker = broker(
        config(&ns)
            .keyspace_notifications(false)
            .poll_interval(Duration::from_millis(50)),
    );
    let mut conn = raw().await;
    let consumer: Arc<dyn Consumer> = Arc::from(broker.consume("polled", 10).await.unwrap());
    let waiting = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.fetch(10, Duration::from_secs(20)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = msg("polled", 1);
    let _: () = conn
        .hset(format!("{ns}:polled.msgs"), "p1", m.encode())
        .await
        .unwrap();
    let _: () = conn.rpush(format!("{ns}:polled"), "p1").await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("polling picks the message up")
        .unwrap();
    assert_eq!(args(&batch), [json!(1)]);
    consumer.ack(&[batch[0].tag.clone()]).await.unwrap();
    cleanup(&broker, 0).await;
}
