//! Redis connections failing: a server that is not there, wrong credentials, TLS without the
//! feature, and connections killed under load losing nothing. Each test has its own namespace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actor_runtime::broker::Consumer;
use actor_runtime::broker::RedisConfig;
use actor_runtime::{Broker, Error};
use redis::AsyncCommands;

use crate::support::redis::{broker, cleanup, msg, raw, raw_db, url_with_db};
use crate::support::{namespace, random};

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
    assert!(matches!(err, Error::Connection { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let err = broker.stats("q").await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err}");
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
    assert!(matches!(err, Error::Connection { .. }), "{err}");
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
