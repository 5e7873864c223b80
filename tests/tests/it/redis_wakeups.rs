//! An idle consumer on Redis wakes on any producer's push (keyspace notifications), and polls
//! when notifications are off. Each test has its own namespace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actor_runtime::broker::Consumer;
use redis::AsyncCommands;
use serde_json::json;

use crate::support::namespace;
use crate::support::redis::{args, broker, cleanup, config, msg, raw};

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
