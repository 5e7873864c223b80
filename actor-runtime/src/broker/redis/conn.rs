//! The one way to Redis, for the broker, the results backend and the rate limiters, all
//! configured by [`RedisConfig`]: a lazily built pool of auto-reconnecting multiplexed
//! connections, bounded retries of timeouts and dropped connections, scripts called by SHA
//! and loaded on `NOSCRIPT`, and dedicated connections for blocking commands.

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub};
use redis::io::tcp::{socket2, TcpSettings};
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError,
    RedisResult, Script,
};

use super::config::{check_url, invalid_url, redact, RedisConfig};
use super::retry::{is_transient, Replay, Retry};
use crate::error::{Error, Result, Source};

/// Idle dedicated connections kept for reuse by blocking commands.
const MAX_IDLE_BLOCKING: usize = 16;

/// The way to Redis of everything built from one [`RedisConfig`] (or its clones). Building
/// it does no I/O; connections open on first use.
pub(crate) struct Conn {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    pool: OnceLock<Vec<ConnectionManager>>,
    next: AtomicUsize,
    size: usize,
    connect_timeout: Duration,
    retry_timeout: Duration,
    /// Connections of their own for blocking commands, which would stall every command
    /// multiplexed behind them.
    idle_blocking: Mutex<Vec<MultiplexedConnection>>,
    /// For errors: the URL without its password.
    url: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("url", &self.url).finish()
    }
}

impl Conn {
    /// The connection layer for `config`: the one its clones already use, or a new one.
    /// Checks the URL but does not connect.
    pub(crate) fn for_config(config: &RedisConfig) -> Result<Arc<Conn>> {
        check_url(&config.url).map_err(Error::Config)?;
        let mut shared = config.conn.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = shared.upgrade().and_then(|any| any.downcast::<Conn>().ok()) {
            return Ok(conn);
        }
        let conn = Arc::new(Conn::new(config)?);
        let any: Arc<dyn Any + Send + Sync> = conn.clone();
        *shared = Arc::downgrade(&any);
        Ok(conn)
    }

    fn new(config: &RedisConfig) -> Result<Conn> {
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
            idle_blocking: Mutex::new(Vec::new()),
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
            Err(_) => Err(Error::connection(format!(
                "subscribe: no connection to {} within {:?}",
                self.url, self.connect_timeout
            ))),
        }
    }

    /// Runs `cmd`, retrying connection failures and timeouts within the retry bound.
    pub(crate) async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T> {
        self.run(what, Replay::Safe, &mut false, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Runs `cmd` at most once: like [`query`](Self::query), but only failures where it
    /// certainly did not run are retried (for commands that must not count twice).
    pub(crate) async fn query_once<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T> {
        self.run(
            what,
            Replay::AtMostOnce,
            &mut false,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs `pipe` (use `.atomic()` for MULTI/EXEC), retrying like [`query`](Self::query).
    pub(crate) async fn pipe<T: FromRedisValue>(&self, what: &str, pipe: &Pipeline) -> Result<T> {
        self.run(what, Replay::Safe, &mut false, |mut conn| async move {
            pipe.query_async(&mut conn).await
        })
        .await
    }

    /// Runs `pipe` at most once, retrying like [`query_once`](Self::query_once).
    pub(crate) async fn pipe_once<T: FromRedisValue>(
        &self,
        what: &str,
        pipe: &Pipeline,
    ) -> Result<T> {
        self.run(
            what,
            Replay::AtMostOnce,
            &mut false,
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs a script call built with [`evalsha`], loading the script on `NOSCRIPT`, retrying
    /// like [`query`](Self::query). Every broker script is safe to retry (see `lua/`).
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
        self.run(what, Replay::Safe, retried, |mut conn| async move {
            eval_loading(&mut conn, script, cmd).await
        })
        .await
    }

    /// A script call built with [`evalsha`], run at most once (retrying like
    /// [`query_once`](Self::query_once)), for scripts that must not count twice.
    pub(crate) async fn eval_once<T: FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        cmd: &Cmd,
    ) -> Result<T> {
        self.run(
            what,
            Replay::AtMostOnce,
            &mut false,
            |mut conn| async move { eval_loading(&mut conn, script, cmd).await },
        )
        .await
    }

    /// Runs a script call built with [`evalsha`] once on `conn`, loading the script on
    /// `NOSCRIPT`, without retrying (heartbeats).
    pub(crate) async fn eval_on<T: FromRedisValue>(
        &self,
        what: &str,
        conn: &mut ConnectionManager,
        script: &Script,
        cmd: &Cmd,
    ) -> Result<T> {
        eval_loading(conn, script, cmd)
            .await
            .map_err(|e| self.error(what, &e))
    }

    /// Runs a blocking command (`BLMOVE`) on a dedicated connection, once. Its own timeout
    /// bounds the wait, not the read timeout. The connection is reused only after a reply:
    /// a cancelled wait drops it, so no stale reply is ever read.
    pub(crate) async fn blocking<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T> {
        let pooled = self
            .idle_blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(None);
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| self.error(what, &e))?
            }
        };
        let reply = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(what, &e))?;
        let mut idle = self.idle_blocking.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(conn);
        }
        Ok(reply)
    }

    /// Runs `attempt` on pooled connections until it succeeds, fails for good, or the retry
    /// bound is spent; sets `retried` when an attempt failed.
    async fn run<T, F, Fut>(
        &self,
        what: &str,
        replay: Replay,
        retried: &mut bool,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut retry = Retry::new(self.retry_timeout, replay);
        let mut conn = self.manager()?;
        loop {
            match attempt(conn.clone()).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    *retried = true;
                    retry.after(&err).await.map_err(|e| self.error(what, e))?;
                    if !retry.same_connection() {
                        conn = self.manager()?;
                    }
                }
            }
        }
    }

    pub(crate) fn error(&self, what: &str, err: &RedisError) -> Error {
        let context = format!("redis {what} on {}", self.url);
        let source: Option<Source> = Some(Box::new(err.clone()));
        if err.code() == Some("OOM") {
            Error::OutOfMemory { context, source }
        } else if is_transient(err) || err.kind() == redis::ErrorKind::AuthenticationFailed {
            Error::Connection { context, source }
        } else {
            Error::Broker { context, source }
        }
    }
}

/// Runs `cmd`, a call of `script` by SHA, loading the script first on `NOSCRIPT`.
async fn eval_loading<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// The text of an error of this layer, for the results and rate-limiter backends' own error
/// types (whose names already say what failed).
pub(crate) fn error_text(err: Error) -> String {
    match err {
        Error::Connection { context, source } | Error::Broker { context, source } => {
            with_source(context, &source)
        }
        Error::OutOfMemory { context, source } => {
            format!("out of memory: {}", with_source(context, &source))
        }
        Error::Config(text) => text,
        other => other.to_string(),
    }
}

/// `context: source`, as the error's own message says it.
fn with_source(context: String, source: &Option<Source>) -> String {
    match source {
        Some(source) => format!("{context}: {source}"),
        None => context,
    }
}

/// A blocking timeout as Redis reads it: seconds, with millisecond precision (Redis 6+
/// accepts fractions). Never `0`, which would mean "forever".
pub(crate) fn timeout_secs(timeout: Duration) -> String {
    let ms = timeout.as_millis().max(1);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `EVALSHA <sha> <n> keys...`; append the ARGV with `.arg(..)`.
pub(crate) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_of_a_config_share_one_connection_layer_while_it_is_used() {
        let config = RedisConfig::new("redis://127.0.0.1:1/0");
        let broker = Conn::for_config(&config).unwrap();
        let results = Conn::for_config(&config.clone().namespace("other")).unwrap();
        assert!(Arc::ptr_eq(&broker, &results));
        let tuned = config.clone().read_timeout(Duration::from_secs(1));
        assert!(!Arc::ptr_eq(&broker, &Conn::for_config(&tuned).unwrap()));
        let again = Conn::for_config(&RedisConfig::new("redis://127.0.0.1:1/0")).unwrap();
        assert!(
            !Arc::ptr_eq(&broker, &again),
            "equal settings alone share nothing"
        );
    }

    #[test]
    fn a_bad_url_fails_at_construction() {
        let err = Conn::for_config(&RedisConfig::new("http://h")).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }

    #[test]
    fn blocking_timeouts_are_fractional_seconds_never_zero() {
        assert_eq!(timeout_secs(Duration::from_millis(1500)), "1.500");
        assert_eq!(timeout_secs(Duration::ZERO), "0.001");
    }
}
