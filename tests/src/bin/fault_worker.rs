//! A worker process for the fault tests: the tests start it, kill it, cut its Redis, and count
//! what its actors recorded. Configured from the environment (`REDIS_URL`,
//! `DRAMATIQ_NAMESPACE`, `HEARTBEAT_TIMEOUT_MS`, ...; `WORKER_THREADS`, `WORKER_PREFETCH`).
//!
//! Actors record into Redis under the namespace: `SADD {ns}:done <id>` and `INCR {ns}:runs`
//! per successful run, `INCR {ns}:poison_runs` per poison attempt, `HSET {ns}:blobs <id> <len>`
//! per blob.

use std::sync::OnceLock;
use std::time::Duration;

use actor_runtime::worker::wait_for_signal;
use actor_runtime::{actor, Broker, Worker};
use redis::AsyncCommands;

fn namespace() -> String {
    std::env::var("DRAMATIQ_NAMESPACE").unwrap_or_else(|_| "dramatiq".into())
}

async fn side_connection() -> redis::aio::MultiplexedConnection {
    static CLIENT: OnceLock<redis::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        let url = std::env::var("REDIS_URL").expect("REDIS_URL");
        redis::Client::open(url).expect("valid REDIS_URL")
    });
    loop {
        // The fault tests restart Redis: keep trying until it is back.
        match client.get_multiplexed_async_connection().await {
            Ok(conn) => return conn,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Sleeps `millis`, then records that message `id` ran.
#[actor(
    queue_name = "faults",
    max_retries = 5,
    min_backoff = 20,
    max_backoff = 200
)]
async fn work(id: u64, millis: u64) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    let ns = namespace();
    let mut conn = side_connection().await;
    let _: () = redis::pipe()
        .sadd(format!("{ns}:done"), id)
        .incr(format!("{ns}:runs"), 1)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Panics every time.
#[actor(
    queue_name = "faults",
    max_retries = 2,
    min_backoff = 10,
    max_backoff = 40
)]
async fn poison(id: u64) {
    let mut conn = side_connection().await;
    let _: Result<i64, _> = conn.incr(format!("{}:poison_runs", namespace()), 1).await;
    panic!("poison message {id}");
}

/// Records the length of a large argument (the delayed-memory tests send 1 MB ones).
#[actor(queue_name = "faults")]
async fn blob(id: u64, data: String) -> Result<(), String> {
    let mut conn = side_connection().await;
    conn.hset::<_, _, _, ()>(format!("{}:blobs", namespace()), id, data.len())
        .await
        .map_err(|e| e.to_string())
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let broker = Broker::redis(actor_runtime::broker::RedisConfig::from_env()?)?;
    let worker = Worker::new(broker.clone())
        .threads(env_usize("WORKER_THREADS", 4))
        .prefetch(env_usize("WORKER_PREFETCH", 8))
        .shutdown_timeout(Duration::from_millis(
            env_usize("SHUTDOWN_TIMEOUT_MS", 10_000) as u64,
        ))
        .queues(["faults"])
        .start()
        .await?;
    println!("ready {}", broker.worker_id().unwrap_or_default());
    let signal = wait_for_signal().await?;
    eprintln!("received {signal}");
    let report = worker.stop().await?;
    println!("stopped {report:?}");
    Ok(())
}
