//! The `GroupCallbacks` middleware: the member that completes a group enqueues its callbacks.

use crate::broker::Broker;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::actor::ActorFailure;
use crate::message::Message;
use crate::middleware::{MessageContext, Middleware};
use crate::rate_limits::{Barrier, RateLimiterBackend};

/// Runs [`Group`](super::Group) completion callbacks (Dramatiq's `GroupCallbacks`; not in the
/// default stack). When a member's message succeeds and carries `group_completion_uuid`, it
/// arrives at that barrier in `backend`; the member that clears it enqueues every message of
/// `group_completion_callbacks`. The barrier lives `barrier_ttl` (default 1 day).
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::composition::GroupCallbacks;
/// use actor_runtime::rate_limits::StubRateLimiterBackend;
/// use actor_runtime::Broker;
///
/// let broker = Broker::stub();
/// broker.middleware().add(Arc::new(GroupCallbacks::new(Arc::new(StubRateLimiterBackend::new()))));
/// ```
#[derive(Clone)]
pub struct GroupCallbacks {
    backend: Arc<dyn RateLimiterBackend>,
    barrier_ttl: Duration,
}

impl std::fmt::Debug for GroupCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCallbacks")
            .field("barrier_ttl", &self.barrier_ttl)
            .finish_non_exhaustive()
    }
}

impl GroupCallbacks {
    /// Barriers in `backend` (Redis in production, so every worker shares them).
    pub fn new(backend: Arc<dyn RateLimiterBackend>) -> Self {
        GroupCallbacks {
            backend,
            barrier_ttl: Duration::from_millis(86_400_000),
        }
    }

    /// How long a group's barrier lives: a group not completed by then never calls back.
    pub fn with_barrier_ttl(mut self, ttl: Duration) -> Self {
        self.barrier_ttl = ttl;
        self
    }

    /// The barrier backend.
    pub fn backend(&self) -> &Arc<dyn RateLimiterBackend> {
        &self.backend
    }

    /// How long a group's barrier lives.
    pub fn barrier_ttl(&self) -> Duration {
        self.barrier_ttl
    }
}

#[async_trait]
impl Middleware for GroupCallbacks {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn after_process_message(
        &self,
        broker: &Broker,
        ctx: &mut MessageContext,
        result: &Result<Value, ActorFailure>,
    ) {
        if result.is_err() || ctx.is_failed() {
            return;
        }
        let options = &ctx.message.options;
        let Some(uuid) = options.get("group_completion_uuid").and_then(Value::as_str) else {
            return;
        };
        let Some(callbacks) = options
            .get("group_completion_callbacks")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        else {
            return;
        };
        let barrier = Barrier::new(self.backend.clone(), uuid).ttl(self.barrier_ttl);
        match barrier.wait(false, None).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::error!(message_id = %ctx.message.message_id, group = uuid, error = %err, "could not arrive at the group barrier; the group's callbacks will not run");
                return;
            }
        }
        for callback in callbacks.clone() {
            let message: Message = match serde_json::from_value(callback) {
                Ok(message) => message,
                Err(err) => {
                    tracing::error!(message_id = %ctx.message.message_id, error = %err, "malformed group completion callback; skipped");
                    continue;
                }
            };
            if let Err(err) = broker.enqueue(message, None).await {
                tracing::error!(message_id = %ctx.message.message_id, error = %err, "could not enqueue a group completion callback");
            }
        }
    }
}
