//! The Redis rate-limiter backend: raw keys, shared with Python Dramatiq's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{BackendError, RateLimiterBackend};
use crate::redis_conn::{timeout_secs, RedisConn};

/// Limiter counters and barrier events in Redis, under the raw keys the limiters name (no
/// namespace), so Rust and Python limiters on the same key share one limit.
///
/// `add` is `SET NX PX`; `incr`, `decr` and `incr_and_sum` are small Lua scripts (atomic, one
/// round trip); barrier waits are `BLMOVE` on a dedicated connection (woken by the server, no
/// polling; sub-second timeouts work).
///
/// ```no_run
/// use std::sync::Arc;
/// use actor_runtime::rate_limits::{ConcurrentRateLimiter, RedisRateLimiterBackend};
///
/// # async fn demo() -> Result<(), actor_runtime::rate_limits::BackendError> {
/// let backend = Arc::new(RedisRateLimiterBackend::connect("redis://127.0.0.1:6379/0").await?);
/// let mutex = ConcurrentRateLimiter::new(backend, "nightly-report", 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RedisRateLimiterBackend {
    conn: Arc<RedisConn>,
    scripts: Arc<Scripts>,
}

#[derive(Debug)]
struct Scripts {
    incr: Script,
    decr: Script,
    incr_and_sum: Script,
}

fn backend_error(err: redis::RedisError) -> BackendError {
    BackendError(err.to_string())
}

fn ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl RedisRateLimiterBackend {
    /// Connects to the Redis at `url`.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(backend_error)?;
        Self::from_client(client).await
    }

    /// Uses an existing client.
    pub async fn from_client(client: redis::Client) -> Result<Self, BackendError> {
        let conn = RedisConn::connect(client).await.map_err(backend_error)?;
        Ok(RedisRateLimiterBackend {
            conn: Arc::new(conn),
            scripts: Arc::new(Scripts {
                incr: Script::new(include_str!("lua/incr.lua")),
                decr: Script::new(include_str!("lua/decr.lua")),
                incr_and_sum: Script::new(include_str!("lua/incr_and_sum.lua")),
            }),
        })
    }

    async fn bounded(
        &self,
        script: &Script,
        key: &str,
        amount: i64,
        bound: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let changed: i64 = script
            .key(key)
            .arg(amount)
            .arg(bound)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.shared())
            .await
            .map_err(backend_error)?;
        Ok(changed == 1)
    }
}

#[async_trait]
impl RateLimiterBackend for RedisRateLimiterBackend {
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool, BackendError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ms(ttl))
            .arg("NX")
            .query_async(&mut self.conn.shared())
            .await
            .map_err(backend_error)?;
        Ok(set.is_some())
    }

    async fn incr(
        &self,
        key: &str,
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.bounded(&self.scripts.incr, key, amount, maximum, ttl)
            .await
    }

    async fn decr(
        &self,
        key: &str,
        amount: i64,
        minimum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.bounded(&self.scripts.decr, key, amount, minimum, ttl)
            .await
    }

    async fn incr_and_sum(
        &self,
        key: &str,
        keys: &[String],
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let mut invocation = self.scripts.incr_and_sum.key(key);
        for other in keys.iter().filter(|k| k.as_str() != key) {
            invocation.key(other);
        }
        let changed: i64 = invocation
            .arg(amount)
            .arg(maximum)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.shared())
            .await
            .map_err(backend_error)?;
        Ok(changed == 1)
    }

    async fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<bool, BackendError> {
        let mut cmd = redis::cmd("BLMOVE");
        cmd.arg(key).arg(key).arg("RIGHT").arg("LEFT");
        match timeout {
            Some(timeout) => cmd.arg(timeout_secs(timeout)),
            None => cmd.arg(0),
        };
        let event: Option<Vec<u8>> = self.conn.blocking(&cmd).await.map_err(backend_error)?;
        Ok(event.as_deref() == Some(b"x"))
    }

    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<(), BackendError> {
        redis::pipe()
            .atomic()
            .rpush(key, "x")
            .ignore()
            .pexpire(key, ms(ttl) as i64)
            .ignore()
            .query_async::<()>(&mut self.conn.shared())
            .await
            .map_err(backend_error)
    }
}
