//! The Redis broker's timers: a dead worker's messages come back, expired dead letters go, and
//! the heartbeat carries on when the runtime that started it is gone. Each test has its own
//! namespace.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::json;

use crate::support::redis::{args, broker, cleanup, config, fetch_n, msg, raw};
use crate::support::{eventually, namespace, now_ms};

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
