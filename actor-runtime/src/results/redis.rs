//! The Redis results backend, with Dramatiq's key layout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{decode_result, encode_result, ResultBackend, ResultError, ResultKeys};
use crate::actor::ActorFailure;
use crate::message::Message;
use crate::redis_conn::{timeout_secs, RedisConn};

/// Results in Redis, shared with Python Dramatiq's `RedisBackend`.
///
/// Each result is a one-element LIST under the md5 key (see [`ResultKeys`]), written with
/// `MULTI DEL; LPUSH; PEXPIRE`. Reads do not consume it: `LINDEX key 0`, or when blocking
/// `BLMOVE key key RIGHT LEFT <seconds>`, which returns as soon as the result is pushed
/// (Redis wakes the waiter; nothing polls). Unlike Python, sub-second timeouts are honoured.
///
/// ```no_run
/// use std::sync::Arc;
/// use actor_runtime::results::{RedisResultBackend, Results};
/// use actor_runtime::Broker;
///
/// # async fn demo() -> Result<(), actor_runtime::results::ResultError> {
/// let backend = RedisResultBackend::connect("redis://127.0.0.1:6379/0").await?;
/// let broker = Broker::stub();
/// broker.middleware().add(Arc::new(Results::new(backend)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RedisResultBackend {
    conn: Arc<RedisConn>,
    keys: ResultKeys,
}

fn connection_error(err: redis::RedisError) -> ResultError {
    ResultError::Connection(err.to_string())
}

impl RedisResultBackend {
    /// Connects to the Redis at `url` (`redis://host:port/db`).
    pub async fn connect(url: &str) -> Result<Self, ResultError> {
        let client = redis::Client::open(url).map_err(connection_error)?;
        Self::from_client(client).await
    }

    /// Uses an existing client.
    pub async fn from_client(client: redis::Client) -> Result<Self, ResultError> {
        let conn = RedisConn::connect(client).await.map_err(connection_error)?;
        Ok(RedisResultBackend {
            conn: Arc::new(conn),
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
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .lpush(&key, encode_result(result))
            .ignore()
            .pexpire(&key, ttl_ms as i64)
            .ignore()
            .query_async::<()>(&mut self.conn.shared())
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
            self.conn.blocking(&cmd).await.map_err(connection_error)?
        } else {
            redis::cmd("LINDEX")
                .arg(&key)
                .arg(0)
                .query_async(&mut self.conn.shared())
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
