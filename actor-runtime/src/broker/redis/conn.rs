//! Connections: a lazily built pool of auto-reconnecting multiplexed connections, and
//! bounded retries of timeouts and dropped connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::io::tcp::{socket2, TcpSettings};
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError, RetryMethod, Script};
use tokio::time::Instant;

use super::config::{invalid_url, redact, RedisConfig};
use crate::error::{Error, Result};

/// The broker's way to Redis. Building it does no I/O; connections open on first use.
pub(crate) struct Conn {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    pool: OnceLock<Vec<ConnectionManager>>,
    next: AtomicUsize,
    size: usize,
    connect_timeout: Duration,
    retry_timeout: Duration,
    /// For errors: the URL without its password.
    url: String,
}

impl Conn {
    pub(crate) fn new(config: &RedisConfig) -> Result<Conn> {
        let url = redact(&config.url);
        let invalid = |e: RedisError| Error::Config(invalid_url(&config.url, &e));
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(invalid)?;
        let mut tcp = TcpSettings::default().set_nodelay(true);
        if let Some(idle) = config.tcp_keepalive {
            tcp = tcp.set_keepalive(socket2::TcpKeepalive::new().with_time(idle));
        }
        let client = redis::Client::open(info.set_tcp_settings(tcp)).map_err(invalid)?;
        // One connection attempt per call: `run` owns the retry policy and its bound.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.read_timeout))
            .set_number_of_retries(0);
        Ok(Conn {
            client,
            manager_config,
            pool: OnceLock::new(),
            next: AtomicUsize::new(0),
            size: config.max_connections.max(1),
            connect_timeout: config.connect_timeout,
            retry_timeout: config.retry_timeout,
            url,
        })
    }

    /// The database index, for keyspace notification channels.
    pub(crate) fn db(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }

    /// Whether the pool was ever used (so there may be something to clean up).
    pub(crate) fn is_used(&self) -> bool {
        self.pool.get().is_some()
    }

    /// A pooled connection, round robin. Must run inside the tokio runtime.
    fn manager(&self) -> Result<ConnectionManager> {
        if let Some(pool) = self.pool.get() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % pool.len();
            return Ok(pool[i].clone());
        }
        let mut pool = Vec::with_capacity(self.size);
        for _ in 0..self.size {
            pool.push(self.dedicated()?);
        }
        let _ = self.pool.set(pool);
        self.manager()
    }

    /// A connection of its own, outside the pool (heartbeats use one).
    pub(crate) fn dedicated(&self) -> Result<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager_config.clone())
            .map_err(|e| self.error("connect", &e))
    }

    /// One `PING` on a connection of its own, not retried: does the server answer now?
    pub(crate) async fn ping(&self) -> Result<()> {
        let mut conn = self.dedicated()?;
        let reply: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        reply.map(drop).map_err(|e| self.error("ping", &e))
    }

    /// A pub/sub connection, for keyspace notifications.
    pub(crate) async fn pubsub(&self) -> Result<PubSub> {
        match tokio::time::timeout(self.connect_timeout, self.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(e)) => Err(self.error("subscribe", &e)),
            Err(_) => Err(Error::Connection(format!(
                "subscribe: no connection to {} within {:?}",
                self.url, self.connect_timeout
            ))),
        }
    }

    /// Runs `cmd`, retrying connection failures and timeouts within the retry bound.
    pub(crate) async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T> {
        let mut retry = Retry::new(self.retry_timeout);
        let mut conn = self.manager()?;
        loop {
            if !retry.same_connection() {
                conn = self.manager()?;
            }
            match cmd.query_async(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) => retry.after(&err).await.map_err(|e| self.error(what, e))?,
            }
        }
    }

    /// Runs `pipe` (use `.atomic()` for MULTI/EXEC), retrying like [`query`](Self::query).
    pub(crate) async fn pipe<T: FromRedisValue>(&self, what: &str, pipe: &Pipeline) -> Result<T> {
        let mut retry = Retry::new(self.retry_timeout);
        let mut conn = self.manager()?;
        loop {
            if !retry.same_connection() {
                conn = self.manager()?;
            }
            match pipe.query_async(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) => retry.after(&err).await.map_err(|e| self.error(what, e))?,
            }
        }
    }

    /// Runs a script call built with [`evalsha`], loading the script on `NOSCRIPT`, retrying
    /// like [`query`](Self::query). Every script is safe to retry (see `lua/`).
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        cmd: &Cmd,
    ) -> Result<T> {
        self.eval_noting_retries(what, script, cmd, &mut false)
            .await
    }

    /// [`eval`](Self::eval), setting `retried` when an attempt failed in a way that may
    /// have run the script anyway (for fetches, whose lost replies strand ids).
    pub(crate) async fn eval_noting_retries<T: FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        cmd: &Cmd,
        retried: &mut bool,
    ) -> Result<T> {
        let mut retry = Retry::new(self.retry_timeout);
        let mut conn = self.manager()?;
        loop {
            if !retry.same_connection() {
                conn = self.manager()?;
            }
            let result = match cmd.query_async(&mut conn).await {
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    match script.load_async(&mut conn).await {
                        Ok(_) => cmd.query_async(&mut conn).await,
                        Err(err) => Err(err),
                    }
                }
                other => other,
            };
            match result {
                Ok(value) => return Ok(value),
                Err(err) => {
                    *retried = true;
                    retry.after(&err).await.map_err(|e| self.error(what, e))?
                }
            }
        }
    }

    /// Runs a script call built with [`evalsha`] once on `conn`, loading the script on
    /// `NOSCRIPT`, without retrying (heartbeats).
    pub(crate) async fn eval_once<T: FromRedisValue>(
        &self,
        what: &str,
        conn: &mut ConnectionManager,
        script: &Script,
        cmd: &Cmd,
    ) -> Result<T> {
        let result = match cmd.query_async(conn).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                match script.load_async(conn).await {
                    Ok(_) => cmd.query_async(conn).await,
                    Err(err) => Err(err),
                }
            }
            other => other,
        };
        result.map_err(|e| self.error(what, &e))
    }

    pub(crate) fn error(&self, what: &str, err: &RedisError) -> Error {
        let text = format!("redis {what} on {}: {err}", self.url);
        if err.code() == Some("OOM") {
            Error::OutOfMemory(text)
        } else if is_transient(err) || err.kind() == redis::ErrorKind::AuthenticationFailed {
            Error::Connection(text)
        } else {
            Error::Broker(text)
        }
    }
}

/// `EVALSHA <sha> <n> keys...`; append the ARGV with `.arg(..)`.
pub(crate) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

/// Whether a failed call may succeed if tried again: timeouts, dropped or refused
/// connections, and transient server states (loading, busy, failover).
pub(crate) fn is_transient(err: &RedisError) -> bool {
    if err.kind() == redis::ErrorKind::AuthenticationFailed {
        return false;
    }
    err.is_timeout() || err.is_io_error() || !matches!(err.retry_method(), RetryMethod::NoRetry)
}

/// Exponential backoff with jitter, within a total time bound.
pub(crate) struct Retry {
    start: Instant,
    bound: Duration,
    backoff: Duration,
    /// The last retry was the immediate one after a dropped connection.
    just_reconnected: bool,
}

impl Retry {
    pub(crate) fn new(bound: Duration) -> Retry {
        Retry {
            start: Instant::now(),
            bound,
            backoff: Duration::from_millis(20),
            just_reconnected: false,
        }
    }

    /// Sleeps before the next attempt, or gives the error back when it is permanent or the
    /// bound is spent.
    pub(crate) async fn after<'e>(&mut self, err: &'e RedisError) -> Result<(), &'e RedisError> {
        if !is_transient(err) {
            return Err(err);
        }
        // A connection is only found dead on use, and its replacement is already on the way:
        // retry at once, on the same pooled slot.
        if err.is_unrecoverable_error() && !std::mem::replace(&mut self.just_reconnected, true) {
            tracing::debug!(error = %err, "redis connection dropped; retrying on its replacement");
            return Ok(());
        }
        self.just_reconnected = false;
        let wait = self.backoff.mul_f64(1.0 + fastrand::f64());
        if self.start.elapsed() + wait > self.bound {
            return Err(err);
        }
        tracing::debug!(error = %err, wait_ms = wait.as_millis() as u64, "redis call failed; retrying");
        tokio::time::sleep(wait).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
        Ok(())
    }

    /// Whether the next attempt should reuse the connection that just failed.
    pub(crate) fn same_connection(&self) -> bool {
        self.just_reconnected
    }
}
