//! The cancel events in Redis, in the layout of the `dramatiq-abort` package's Redis backend,
//! so Python services and workers using its `Abortable` middleware and ours see each other's
//! cancels.
//!
//! An event is a Redis LIST `{namespace}{mode}:{message_id}` (namespace `dramatiq:aborts:` by
//! default, mode `cancel` or `abort`) holding one JSON object per request, with a TTL:
//!
//! | key | value | read by |
//! |---|---|---|
//! | `dramatiq:aborts:cancel:<id>` | `{}` | a worker about to run the message: skip it |
//! | `dramatiq:aborts:abort:<id>` | `{"abort_timeout": <ms>}` | the worker running it: stop it after the grace period |
//!
//! A cancel writes both (Python's `abort(id)` in its default mode does the same), with
//! `RPUSH` then `PEXPIRE` in one transaction. Python workers pop the `cancel` event when they
//! skip the message; ours only check that it exists, so a retried copy stays cancelled until
//! the TTL. Both pop the `abort` event of a message they run.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::broker::redis::conn::Conn;
use crate::error::Result;

/// The cancel events of one namespace.
#[derive(Clone)]
pub(crate) struct Events {
    conn: Arc<Conn>,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(conn: Arc<Conn>, namespace: String) -> Events {
        Events { conn, namespace }
    }

    pub(crate) fn conn(&self) -> Arc<Conn> {
        self.conn.clone()
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    fn cancel_key(&self, message_id: &str) -> String {
        format!("{}cancel:{message_id}", self.namespace)
    }

    fn abort_key(&self, message_id: &str) -> String {
        format!("{}abort:{message_id}", self.namespace)
    }

    /// Requests the cancel of `message_id`: both events, living `ttl`, with `abort_timeout`
    /// (ms) the grace a running `async` actor gets before it is stopped.
    pub(crate) async fn notify(
        &self,
        message_id: &str,
        ttl: Duration,
        abort_timeout: u64,
    ) -> Result<()> {
        let ttl_ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(self.cancel_key(message_id), "{}")
            .ignore()
            .pexpire(self.cancel_key(message_id), ttl_ms)
            .ignore()
            .rpush(
                self.abort_key(message_id),
                format!("{{\"abort_timeout\": {abort_timeout}}}"),
            )
            .ignore()
            .pexpire(self.abort_key(message_id), ttl_ms)
            .ignore();
        self.conn.pipe_once("cancel", &pipe).await
    }

    /// Makes the events of `message_id` live `ttl` from now (a delayed message's cancel must
    /// outlive its eta).
    pub(crate) async fn extend(&self, message_id: &str, ttl: Duration) -> Result<()> {
        let ttl_ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut pipe = redis::pipe();
        pipe.pexpire(self.cancel_key(message_id), ttl_ms)
            .ignore()
            .pexpire(self.abort_key(message_id), ttl_ms)
            .ignore();
        self.conn.pipe("cancel ttl", &pipe).await
    }

    /// Whether a cancel was requested for each of `ids`, in one round trip.
    pub(crate) async fn cancelled(&self, ids: &[String]) -> Result<Vec<bool>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.exists(self.cancel_key(id));
        }
        self.conn.pipe("cancel check", &pipe).await
    }

    /// Pops the abort event of each of `ids`, in one round trip: the grace period (ms) of
    /// those with one.
    pub(crate) async fn take_aborts(&self, ids: &[String]) -> Result<Vec<Option<u64>>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.lpop(self.abort_key(id), None);
        }
        let popped: Vec<Option<Vec<u8>>> = self.conn.pipe_once("abort poll", &pipe).await?;
        Ok(popped
            .into_iter()
            .map(|value| value.map(|v| abort_timeout(&v)))
            .collect())
    }
}

/// The grace period of an abort event: its `abort_timeout` (ms), 0 when it has none or it
/// does not read as one (the event still counts, as in Python, which reads any JSON object).
fn abort_timeout(value: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(value)
        .ok()
        .and_then(|v| v.get("abort_timeout").and_then(Value::as_f64))
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(0, |t| t.min(u64::MAX as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::abort_timeout;

    #[test]
    fn abort_events_read_as_pythons_write_them() {
        assert_eq!(abort_timeout(br#"{"abort_timeout": 0}"#), 0);
        assert_eq!(abort_timeout(br#"{"abort_timeout": 1500}"#), 1500);
        assert_eq!(abort_timeout(br#"{}"#), 0);
        assert_eq!(abort_timeout(b"not json"), 0);
        assert_eq!(abort_timeout(br#"{"abort_timeout": -5}"#), 0);
    }
}
