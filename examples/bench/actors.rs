//! The benchmark harness's actors (`../shared/bench/bench_module.py`), on queue `default`:
//! `noop()`, `latency(t_send)`, `stamp()`, `count()`; and `sleep_ms(ms, t_send)` for the
//! slow-job benchmark (`bench/slow_jobs.py`, `bench/slow_module.py`). The side-effect actors
//! write to `bench:*` keys through their own connection, separate from the broker's.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actor_runtime::actor;
use redis::aio::MultiplexedConnection;

/// The Redis the harness runs (`BENCH_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390/0".into())
}

async fn side() -> Result<MultiplexedConnection, String> {
    static CONN: tokio::sync::OnceCell<MultiplexedConnection> = tokio::sync::OnceCell::const_new();
    static CLIENT: OnceLock<Result<redis::Client, String>> = OnceLock::new();
    let client = CLIENT
        .get_or_init(|| redis::Client::open(redis_url()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)?;
    CONN.get_or_try_init(|| async { client.get_multiplexed_async_connection().await })
        .await
        .cloned()
        .map_err(|e| e.to_string())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Does nothing.
#[actor(queue_name = "default", max_retries = 0)]
pub async fn noop() {}

/// Records `"<t_send> <start>"` in `bench:lat`.
#[actor(queue_name = "default", max_retries = 0)]
pub async fn latency(t_send: f64) -> Result<(), String> {
    let start = now();
    let mut conn = side().await?;
    redis::cmd("RPUSH")
        .arg("bench:lat")
        .arg(format!("{t_send} {start}"))
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// Records its start time in `bench:stamp`.
#[actor(queue_name = "default", max_retries = 0)]
pub async fn stamp() -> Result<(), String> {
    let start = now();
    let mut conn = side().await?;
    redis::cmd("RPUSH")
        .arg("bench:stamp")
        .arg(format!("{start}"))
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// Increments `bench:count`.
#[actor(queue_name = "default", max_retries = 0)]
pub async fn count() -> Result<(), String> {
    let mut conn = side().await?;
    redis::cmd("INCR")
        .arg("bench:count")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// A slow job (think of an LLM call): sleeps `ms` milliseconds, then records
/// `"<pid> <t_send> <start> <end>"` in `bench:slow`.
#[actor(queue_name = "default", max_retries = 0)]
pub async fn sleep_ms(ms: u64, t_send: f64) -> Result<(), String> {
    let start = now();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let end = now();
    let mut conn = side().await?;
    redis::cmd("RPUSH")
        .arg("bench:slow")
        .arg(format!("{} {t_send} {start} {end}", std::process::id()))
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}
