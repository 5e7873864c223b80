//! The Redis results backend, with Dramatiq's key layout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{decode_result, encode_result, ResultBackend, ResultError, ResultKeys};
use crate::actor::ActorFailure;
use crate::broker::redis::conn::{error_text, timeout_secs, Conn};
use crate::broker::redis::RedisConfig;
use crate::error::Error;
use crate::message::Message;

/// Results in Redis, shared with Python Dramatiq's `RedisBackend`.
///
/// Each result is a one-element LIST under the md5 key (see [`ResultKeys`]), written with
/// `MULTI DEL; LPUSH; PEXPIRE`. Reads do not consume it: `LINDEX key 0`, or when blocking
/// `BLMOVE key key RIGHT LEFT <seconds>`, which returns as soon as the result is pushed
/// (Redis wakes the waiter; nothing polls). Unlike Python, sub-second timeouts are honoured.
///
/// Building it does no I/O: it connects on first use, and an unreachable server is a
/// [`ResultError::Connection`] from that use (after retrying for
/// [`RedisConfig::retry_timeout`]). Built [`from_config`](Self::from_config) with the
/// broker's config (or a clone), it shares the broker's connections.
///
/// ```no_run
/// use std::sync::Arc;
/// use actor_runtime::results::{RedisResultBackend, Results};
/// use actor_runtime::Broker;
/// use actor_runtime::broker::RedisConfig;
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RedisConfig::new("redis://127.0.0.1:6379/0");
/// let broker = Broker::redis(config.clone())?;
/// // Rides on the broker's connections.
/// let backend = RedisResultBackend::from_config(&config)?;
/// broker.middleware().add(Arc::new(Results::new(backend)));
/// // Or on connections of its own, with the default settings.
/// let other = RedisResultBackend::new("redis://127.0.0.1:6379/1")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RedisResultBackend {
    conn: Arc<Conn>,
    keys: ResultKeys,
}

fn connection_error(err: Error) -> ResultError {
    ResultError::Connection(error_text(err))
}

impl RedisResultBackend {
    /// Results in the Redis at `url` (`redis://host:port/db`, see [`RedisConfig::new`]),
    /// with the default connection settings. Checks the URL but does not connect.
    pub fn new(url: impl Into<String>) -> Result<Self, ResultError> {
        Self::from_config(&RedisConfig::new(url))
    }

    /// Results in the Redis of `config`, with its connection settings (its namespace is the
    /// broker's and does not apply: see [`namespace`](Self::namespace)). Shares the
    /// connections of whatever else was built from `config` or a clone of it, such as the
    /// broker. Checks the URL but does not connect.
    pub fn from_config(config: &RedisConfig) -> Result<Self, ResultError> {
        Ok(RedisResultBackend {
            conn: Conn::for_config(config).map_err(connection_error)?,
            keys: ResultKeys::default(),
        })
    }

    /// Keys under another namespace than `dramatiq-results` (Dramatiq's `namespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.keys.namespace = namespace.into();
        self
    }

    /// Readable `namespace:queue:actor:id` keys instead of md5 digests (Dramatiq's
    /// `use_namespace_prefix_keys=True`).
    pub fn plain_keys(mut self, plain: bool) -> Self {
        self.keys.plain = plain;
        self
    }

    /// How keys are built.
    pub fn keys(&self) -> &ResultKeys {
        &self.keys
    }
}

#[async_trait]
impl ResultBackend for RedisResultBackend {
    async fn store(
        &self,
        message: &Message,
        result: &Result<Value, ActorFailure>,
        ttl: Duration,
    ) -> Result<(), ResultError> {
        let key = self.keys.key(message);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .lpush(&key, encode_result(result))
            .ignore()
            .pexpire(&key, ttl_ms as i64)
            .ignore();
        // Idempotent: a retry after a lost reply writes the same result again.
        self.conn
            .pipe::<()>("store result", &pipe)
            .await
            .map_err(connection_error)
    }

    async fn get(
        &self,
        message: &Message,
        block: bool,
        timeout: Duration,
    ) -> Result<Value, ResultError> {
        let key = self.keys.key(message);
        let data: Option<Vec<u8>> = if block && !timeout.is_zero() {
            let mut cmd = redis::cmd("BLMOVE");
            cmd.arg(&key)
                .arg(&key)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(timeout_secs(timeout));
            self.conn
                .blocking("wait for result", &cmd)
                .await
                .map_err(connection_error)?
        } else {
            let mut cmd = redis::cmd("LINDEX");
            cmd.arg(&key).arg(0);
            self.conn
                .query("get result", &cmd)
                .await
                .map_err(connection_error)?
        };
        match data {
            Some(bytes) => decode_result(message, &bytes),
            None if block => Err(ResultError::Timeout {
                message_id: message.message_id.clone(),
                timeout,
            }),
            None => Err(ResultError::Missing {
                message_id: message.message_id.clone(),
            }),
        }
    }
}
