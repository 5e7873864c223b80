//! Consuming from Redis: fetch, ack, nack and requeue through the worker's ack set, payloads
//! missing or undecodable, fetches cut short, join and flush. Each test has its own namespace.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actor_runtime::broker::Consumer;
use actor_runtime::broker::Delivery;
use actor_runtime::Error;
use redis::AsyncCommands;
use serde_json::json;

use crate::support::redis::{args, broker, cleanup, config, fetch_n, msg, payload, raw};
use crate::support::{namespace, now_ms, random};

fn ids(batch: &[Delivery]) -> Vec<String> {
    batch.iter().map(|d| d.tag.id.clone()).collect()
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
