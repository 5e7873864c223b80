//! TimeLimit: actors running past their limit are cancelled and fail.

use crate::broker::Broker;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{MessageContext, Middleware, Skip};

/// Cancels an actor at its deadline; the failure (`TimeLimitExceeded`) is retried like any
/// other. The limit is the message's `time_limit` option, else the actor's, else this default
/// (10 minutes); Python's `float("inf")` means none.
///
/// An `async fn` actor is cancelled at its next `.await`; a plain `fn` actor cannot be
/// interrupted: its message fails at the deadline and the call finishes on its thread.
///
/// ```
/// use actor_runtime::actor;
///
/// #[actor(time_limit = "30s")]
/// async fn fetch_page(url: String) -> usize {
///     url.len()
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TimeLimit {
    /// Default limit in ms.
    pub time_limit: u64,
}

impl Default for TimeLimit {
    fn default() -> Self {
        TimeLimit {
            time_limit: 600_000,
        }
    }
}

#[async_trait]
impl Middleware for TimeLimit {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn before_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
    ) -> Result<(), Skip> {
        let limit = match ctx
            .message
            .options
            .get("time_limit")
            .and_then(Value::as_f64)
        {
            Some(ms) => ms,
            None => ctx.actor().options.time_limit.unwrap_or(self.time_limit) as f64,
        };
        // Python writes `Infinity`, which decodes to f64::MAX: no limit.
        let limit = (limit.is_finite() && limit > 0.0 && limit < 1e15)
            .then(|| Duration::from_millis(limit as u64));
        ctx.set_time_limit(limit);
        Ok(())
    }
}
