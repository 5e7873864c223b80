//! Redis connections for the results and rate-limiter backends: one multiplexed, reconnecting
//! connection for ordinary commands, and a small pool of dedicated connections for blocking
//! commands (`BLMOVE`), which would otherwise stall every command queued behind them.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisResult};

/// Idle dedicated connections kept for reuse.
const MAX_IDLE_BLOCKING: usize = 16;

pub(crate) struct RedisConn {
    client: Client,
    manager: ConnectionManager,
    idle_blocking: Mutex<Vec<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("addr", &self.client.get_connection_info().addr())
            .finish()
    }
}

impl RedisConn {
    pub(crate) async fn connect(client: Client) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3);
        let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(RedisConn {
            client,
            manager,
            idle_blocking: Mutex::new(Vec::new()),
        })
    }

    /// The shared connection, for non-blocking commands.
    pub(crate) fn shared(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Runs a blocking command on a dedicated connection. The connection goes back to the
    /// pool only after a reply: a cancelled wait drops it, so no stale reply is ever read.
    pub(crate) async fn blocking<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        let pooled = self
            .idle_blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                // No response timeout: the command's own timeout bounds the wait.
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?
            }
        };
        let reply = cmd.query_async(&mut conn).await?;
        let mut idle = self.idle_blocking.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(conn);
        }
        Ok(reply)
    }
}

/// A blocking timeout as Redis reads it: seconds, with millisecond precision (Redis 6+ accepts
/// fractions). Never `0`, which would mean "forever".
pub(crate) fn timeout_secs(timeout: Duration) -> String {
    let ms = timeout.as_millis().max(1);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}
