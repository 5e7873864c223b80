//! The `Results` middleware: stores what actors return.

use crate::broker::Broker;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{ResultBackend, DEFAULT_RESULT_TTL};
use crate::actor::ActorFailure;
use crate::middleware::{MessageContext, Middleware};

/// Stores the results of actors with `store_results` in a [`ResultBackend`] (Dramatiq's
/// `Results`; not in the default stack, add it to the broker).
///
/// - On success, the return value (as JSON).
/// - On a skipped message that did not fail, `null`.
/// - On a message that failed for good (retries exhausted, `throws`, too old...), the
///   error. While retries remain nothing is stored, so a blocking reader keeps waiting.
///
/// `store_results` and `result_ttl` come from the message's options, else the actor's, else
/// this middleware's defaults (`false`, 10 minutes).
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use actor_runtime::results::{Results, StubResultBackend};
/// use actor_runtime::Broker;
///
/// let broker = Broker::stub();
/// broker.middleware().add(Arc::new(
///     Results::new(StubResultBackend::new())
///         .store_results(true)
///         .result_ttl(Duration::from_secs(3600)),
/// ));
/// ```
#[derive(Clone)]
pub struct Results {
    backend: Arc<dyn ResultBackend>,
    store_results: bool,
    result_ttl: Duration,
}

impl std::fmt::Debug for Results {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Results")
            .field("store_results", &self.store_results)
            .field("result_ttl", &self.result_ttl)
            .finish_non_exhaustive()
    }
}

impl Results {
    /// Stores to `backend`; only actors (or messages) with `store_results` store.
    pub fn new(backend: impl ResultBackend) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    /// Stores to a shared backend.
    pub fn from_arc(backend: Arc<dyn ResultBackend>) -> Self {
        Results {
            backend,
            store_results: false,
            result_ttl: DEFAULT_RESULT_TTL,
        }
    }

    /// Default for actors that do not set `store_results`.
    pub fn store_results(mut self, store: bool) -> Self {
        self.store_results = store;
        self
    }

    /// Default lifetime of a stored result.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// The backend results go to.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.backend
    }

    fn options(&self, ctx: &MessageContext) -> Option<Duration> {
        let options = ctx.actor().options;
        let store = ctx
            .flag_or("store_results", options.store_results)
            .unwrap_or(self.store_results);
        store.then(|| {
            ctx.option_or("result_ttl", options.result_ttl)
                .map_or(self.result_ttl, Duration::from_millis)
        })
    }

    async fn store(
        &self,
        ctx: &MessageContext,
        result: &Result<Value, ActorFailure>,
        ttl: Duration,
    ) {
        if let Err(err) = self.backend.store(&ctx.message, result, ttl).await {
            tracing::error!(message_id = %ctx.message.message_id, actor = ctx.actor().name, error = %err, "could not store the result");
        }
    }
}

#[async_trait]
impl Middleware for Results {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn after_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
        result: &Result<Value, ActorFailure>,
    ) {
        match (self.options(ctx), result) {
            (Some(ttl), Ok(_)) => self.store(ctx, result, ttl).await,
            (None, Ok(value))
                if !value.is_null() && !ctx.message.options.contains_key("pipe_target") =>
            {
                tracing::debug!(message_id = %ctx.message.message_id, actor = ctx.actor().name, "the actor returned a value but does not set `store_results`; it is discarded");
            }
            _ => {}
        }
    }

    async fn after_skip_message(&self, _broker: &Broker, ctx: &mut MessageContext) {
        if let Some(ttl) = self.options(ctx) {
            if !ctx.is_failed() {
                self.store(ctx, &Ok(Value::Null), ttl).await;
            }
        }
    }

    async fn after_nack(&self, _broker: &Broker, ctx: &MessageContext) {
        let Some(ttl) = self.options(ctx) else { return };
        if !ctx.is_failed() {
            return;
        }
        let failure = ctx.error().cloned().unwrap_or_else(|| {
            // Failed without the actor failing (too old, next pipeline step not enqueued...).
            let reason = ctx.failure_reason().unwrap_or("unknown");
            let (kind, text) = reason.split_once(": ").unwrap_or(("Exception", reason));
            let kind = if kind.chars().all(|c| c.is_alphanumeric() || c == '_') {
                kind
            } else {
                "Exception"
            };
            ActorFailure::new(kind, if kind == "Exception" { reason } else { text })
        });
        self.store(ctx, &Err(failure), ttl).await;
    }
}
