//! The Redis rate-limiter backend: raw keys, shared with Python Dramatiq's.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{BackendError, RateLimiterBackend};
use crate::broker::redis::conn::{error_text, evalsha, timeout_secs, Conn};
use crate::broker::redis::RedisConfig;
use crate::error::Error;

/// Limiter counters and barrier events in Redis, under the raw keys the limiters name (no
/// namespace), so Rust and Python limiters on the same key share one limit.
///
/// `add` is `SET NX PX`; `incr`, `decr` and `incr_and_sum` are small Lua scripts (atomic, one
/// round trip, called by SHA as the broker's are); barrier waits are `BLMOVE` on a dedicated
/// connection (woken by the server, no polling; sub-second timeouts work). A call that may
/// have run is never sent twice (a counter must not count twice), so a lost reply is a
/// [`BackendError`]; refused connections are retried for [`RedisConfig::retry_timeout`].
///
/// Building it does no I/O: it connects on first use. Built
/// [`from_config`](Self::from_config) with the broker's config (or a clone), it shares the
/// broker's connections.
///
/// ```no_run
/// use std::sync::Arc;
/// use actor_runtime::rate_limits::{ConcurrentRateLimiter, RedisRateLimiterBackend};
///
/// # fn demo() -> Result<(), actor_runtime::rate_limits::BackendError> {
/// let backend = Arc::new(RedisRateLimiterBackend::new("redis://127.0.0.1:6379/0")?);
/// let mutex = ConcurrentRateLimiter::new(backend, "nightly-report", 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RedisRateLimiterBackend {
    conn: Arc<Conn>,
}

static INCR: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/incr.lua")));
static DECR: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/decr.lua")));
static INCR_AND_SUM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/incr_and_sum.lua")));

fn backend_error(err: Error) -> BackendError {
    BackendError(error_text(err))
}

fn ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl RedisRateLimiterBackend {
    /// Limiters in the Redis at `url` (see [`RedisConfig::new`]), with the default
    /// connection settings. Checks the URL but does not connect.
    pub fn new(url: impl Into<String>) -> Result<Self, BackendError> {
        Self::from_config(&RedisConfig::new(url))
    }

    /// Limiters in the Redis of `config`, with its connection settings (keys stay raw: its
    /// namespace does not apply). Shares the connections of whatever else was built from
    /// `config` or a clone of it, such as the broker. Checks the URL but does not connect.
    pub fn from_config(config: &RedisConfig) -> Result<Self, BackendError> {
        Ok(RedisRateLimiterBackend {
            conn: Conn::for_config(config).map_err(backend_error)?,
        })
    }

    async fn bounded(
        &self,
        what: &str,
        script: &Script,
        key: &str,
        amount: i64,
        bound: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let mut cmd = evalsha(script, &[key]);
        cmd.arg(amount).arg(bound).arg(ms(ttl));
        let changed: i64 = self
            .conn
            .eval_once(what, script, &cmd)
            .await
            .map_err(backend_error)?;
        Ok(changed == 1)
    }
}

#[async_trait]
impl RateLimiterBackend for RedisRateLimiterBackend {
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool, BackendError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ms(ttl)).arg("NX");
        let set: Option<String> = self
            .conn
            .query_once("rate limit add", &cmd)
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
        self.bounded("rate limit incr", &INCR, key, amount, maximum, ttl)
            .await
    }

    async fn decr(
        &self,
        key: &str,
        amount: i64,
        minimum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.bounded("rate limit decr", &DECR, key, amount, minimum, ttl)
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
        let all: Vec<&str> = std::iter::once(key)
            .chain(keys.iter().map(String::as_str).filter(|k| *k != key))
            .collect();
        let mut cmd = evalsha(&INCR_AND_SUM, &all);
        cmd.arg(amount).arg(maximum).arg(ms(ttl));
        let changed: i64 = self
            .conn
            .eval_once("rate limit incr_and_sum", &INCR_AND_SUM, &cmd)
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
        let event: Option<Vec<u8>> = self
            .conn
            .blocking("barrier wait", &cmd)
            .await
            .map_err(backend_error)?;
        Ok(event.as_deref() == Some(b"x"))
    }

    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(key, "x")
            .ignore()
            .pexpire(key, ms(ttl) as i64)
            .ignore();
        // Each event releases one waiter: never push it twice.
        self.conn
            .pipe_once::<()>("barrier notify", &pipe)
            .await
            .map_err(backend_error)
    }
}
