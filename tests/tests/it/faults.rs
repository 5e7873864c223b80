//! Delivery guarantees under faults, with real worker processes (`fault_worker`) on a real
//! Redis: SIGKILL mid-batch, SIGTERM with work in flight, a poison message, Redis restarting.

use std::time::Duration;

use actor_runtime::{Broker, Message};
use redis::AsyncCommands;

use crate::support::fault_worker::{producer, WorkerProcess, QUEUE};
use crate::support::redis::{connection, PrivateRedis};
use crate::support::{eventually, namespace, redis_url};

async fn count(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    conn.get::<_, Option<u64>>(key).await.unwrap().unwrap_or(0)
}

async fn done(conn: &mut redis::aio::MultiplexedConnection, ns: &str) -> u64 {
    conn.scard(format!("{ns}:done")).await.unwrap()
}

async fn send_work(broker: &Broker, ids: std::ops::Range<u64>, millis: u64) {
    for id in ids {
        let message = Message::new(QUEUE, "work", vec![id.into(), millis.into()]);
        broker.enqueue(message, None).await.unwrap();
    }
}

pub(crate) async fn cleanup(url: &str, ns: &str) {
    let mut conn = connection(url).await;
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<'_, String> =
            conn.scan_match(format!("{ns}:*")).await.unwrap();
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    };
    if !keys.is_empty() {
        let _: () = conn.del(keys).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_no_message() {
    let (url, ns) = (redis_url(), namespace());
    let broker = producer(&url, &ns);
    let total = 60;
    send_work(&broker, 0..total, 30).await;
    let mut conn = connection(&url).await;

    let mut first = WorkerProcess::start(&url, &ns, &[("WORKER_PREFETCH", "16")]).await;
    eventually(
        Duration::from_secs(20),
        "the first worker to run a few",
        || {
            let mut conn = conn.clone();
            let ns = ns.clone();
            async move { done(&mut conn, &ns).await >= 8 }
        },
    )
    .await;
    first.signal("-KILL");
    first.wait(Duration::from_secs(5)).await;
    let acks_key = format!("{ns}:__acks__.{}.{QUEUE}", first.worker_id);
    let stranded: u64 = conn.scard(&acks_key).await.unwrap();
    assert!(stranded > 0, "the killed worker held unacked messages");

    // Another worker recovers them once the first one's heartbeat is older than the timeout.
    let mut second = WorkerProcess::start(&url, &ns, &[]).await;
    eventually(Duration::from_secs(30), "every message to run", || {
        let mut conn = conn.clone();
        let ns = ns.clone();
        async move { done(&mut conn, &ns).await == total }
    })
    .await;
    let stats = broker.stats(QUEUE).await.unwrap();
    assert_eq!(stats.dead, 0, "nothing dead-lettered wrongly: {stats:?}");
    let runs = count(&mut conn, &format!("{ns}:runs")).await;
    assert!(
        runs >= total && runs <= total + 16,
        "at-least-once, duplicates only from the killed batch: {runs}"
    );
    let left: u64 = conn.exists(&acks_key).await.unwrap();
    assert_eq!(left, 0, "the dead worker's ack set was cleaned up");

    second.signal("-TERM");
    assert!(second.wait(Duration::from_secs(10)).await.success());
    cleanup(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_messages_and_returns_prefetched_ones() {
    let (url, ns) = (redis_url(), namespace());
    let broker = producer(&url, &ns);
    let total = 40;
    send_work(&broker, 0..total, 300).await;
    let mut conn = connection(&url).await;
    let mut worker = WorkerProcess::start(
        &url,
        &ns,
        &[("WORKER_THREADS", "2"), ("WORKER_PREFETCH", "10")],
    )
    .await;
    // Two running and eight prefetched: the queue holds the rest.
    eventually(Duration::from_secs(10), "a full prefetch", || {
        let mut conn = conn.clone();
        let key = format!("{ns}:{QUEUE}");
        async move { conn.llen::<_, u64>(key).await.unwrap() == total - 10 }
    })
    .await;
    worker.signal("-TERM");
    let status = worker.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "graceful exit: {status:?}");

    let finished = done(&mut conn, &ns).await;
    let stats = broker.stats(QUEUE).await.unwrap();
    assert!(finished >= 2, "running messages finished: {finished}");
    assert_eq!(stats.in_flight, 0, "nothing left unacked: {stats:?}");
    assert_eq!(finished + stats.ready, total, "no message lost: {stats:?}");
    let acks: u64 = conn
        .exists(format!("{ns}:__acks__.{}.{QUEUE}", worker.worker_id))
        .await
        .unwrap();
    assert_eq!(acks, 0, "no message left in the stopped worker's ack set");
    cleanup(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_retried_then_dead_lettered_and_the_worker_survives() {
    let (url, ns) = (redis_url(), namespace());
    let broker = producer(&url, &ns);
    broker
        .enqueue(Message::new(QUEUE, "poison", vec![1.into()]), None)
        .await
        .unwrap();
    send_work(&broker, 0..5, 0).await;
    let mut conn = connection(&url).await;
    let mut worker = WorkerProcess::start(&url, &ns, &[]).await;
    eventually(
        Duration::from_secs(20),
        "the poison message to be dead-lettered",
        || {
            let mut conn = conn.clone();
            let key = format!("{ns}:{QUEUE}.XQ");
            async move { conn.zcard::<_, u64>(key).await.unwrap() == 1 }
        },
    )
    .await;
    assert_eq!(
        count(&mut conn, &format!("{ns}:poison_runs")).await,
        3,
        "1 run + 2 retries"
    );
    assert_eq!(done(&mut conn, &ns).await, 5, "other messages ran");
    let dead = broker.dead_letters(QUEUE, 10).await.unwrap();
    let reason = dead[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("poison message 1"), "{reason}");
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "a panic never kills the worker"
    );
    worker.signal("-TERM");
    assert!(worker.wait(Duration::from_secs(10)).await.success());
    cleanup(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_and_cut_connections_lose_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("actor-faults-{}", uuid::Uuid::new_v4().simple()));
    let redis = PrivateRedis::start(port, dir.clone()).await;
    let (url, ns) = (redis.url(), namespace());
    let broker = producer(&url, &ns);
    let total = 80;
    send_work(&broker, 0..total, 20).await;
    let mut worker = WorkerProcess::start(&url, &ns, &[("HEARTBEAT_TIMEOUT_MS", "60000")]).await;
    let progress = |at_least: u64| {
        let url = url.clone();
        let ns = ns.clone();
        move || {
            let url = url.clone();
            let ns = ns.clone();
            async move {
                match redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                {
                    Ok(mut conn) => {
                        conn.scard::<_, u64>(format!("{ns}:done"))
                            .await
                            .unwrap_or(0)
                            >= at_least
                    }
                    Err(_) => false,
                }
            }
        }
    };
    eventually(Duration::from_secs(20), "some progress", progress(10)).await;
    let redis = redis.restart().await;
    eventually(
        Duration::from_secs(30),
        "progress after the restart",
        progress(40),
    )
    .await;
    let mut conn = connection(&url).await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "every message to run",
        progress(total),
    )
    .await;

    let mut conn = connection(&url).await;
    let dead: u64 = conn.zcard(format!("{ns}:{QUEUE}.XQ")).await.unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");
    eventually(Duration::from_secs(10), "every ack to land", || {
        let mut conn = conn.clone();
        let key = format!("{ns}:{QUEUE}.msgs");
        async move { conn.hlen::<_, u64>(key).await.unwrap_or(1) == 0 }
    })
    .await;
    worker.signal("-TERM");
    assert!(worker.wait(Duration::from_secs(15)).await.success());
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}
