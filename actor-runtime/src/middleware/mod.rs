//! Middleware: hooks around enqueueing and processing messages, as in Dramatiq.
//!
//! A broker holds an ordered stack ([`Middlewares`]); `before_*` hooks run in order and
//! `after_*` hooks in reverse. The default stack is Dramatiq's: [`AgeLimit`], [`TimeLimit`],
//! [`ShutdownNotifications`], [`Callbacks`], [`Pipelines`], [`Retries`].

mod age_limit;
mod callbacks;
mod context;
pub(crate) mod current;
mod pipelines;
mod prometheus;
mod retries;
mod shutdown;
mod time_limit;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::actor::ActorFailure;
use crate::broker::Broker;
use crate::composition::GroupCallbacks;
use crate::error::Result;
use crate::message::Message;
use crate::results::ResultBackend;

pub use age_limit::AgeLimit;
pub use callbacks::Callbacks;
pub use context::{MessageContext, Skip};
pub use current::{current_message, shutdown_requested, CurrentMessage};
pub use pipelines::Pipelines;
pub use prometheus::{Prometheus, DURATION_BUCKETS_MS, MAX_LABEL_SETS};
pub use retries::{compute_backoff, Retries};
pub use shutdown::ShutdownNotifications;
pub use time_limit::TimeLimit;

/// Hooks the broker and worker call around every message. Every hook defaults to doing
/// nothing, so a middleware implements only what it needs; register it with
/// [`Middlewares::add`] on the broker (`broker.middleware().add(..)`).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use actor_runtime::{
///     ActorFailure, Broker, Message, MessageContext, Middleware, Result, StubBroker,
/// };
///
/// /// Stamps a tenant on every message and counts failures.
/// #[derive(Default)]
/// struct Tenant {
///     failures: AtomicU64,
/// }
///
/// #[actor_runtime::async_trait]
/// impl Middleware for Tenant {
///     async fn before_enqueue(&self, message: &mut Message, _delay: Option<Duration>) -> Result<()> {
///         message.options.insert("tenant".into(), "acme".into());
///         Ok(())
///     }
///
///     async fn after_process_message(
///         &self,
///         _ctx: &mut MessageContext,
///         result: &std::result::Result<serde_json::Value, ActorFailure>,
///     ) {
///         if result.is_err() {
///             self.failures.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let broker = StubBroker::new();
/// broker.middleware().add(Arc::new(Tenant::default()));
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Called before a message is stored; may change it or refuse it with an error.
    async fn before_enqueue(&self, message: &mut Message, delay: Option<Duration>) -> Result<()> {
        let _ = (message, delay);
        Ok(())
    }

    /// Called after a message was stored.
    async fn after_enqueue(&self, message: &Message, delay: Option<Duration>) {
        let _ = (message, delay);
    }

    /// Called before the actor runs; `Err(Skip)` skips the message (it is then acked, or
    /// dead-lettered if the middleware called [`MessageContext::fail`]).
    async fn before_process_message(&self, ctx: &mut MessageContext) -> Result<(), Skip> {
        let _ = ctx;
        Ok(())
    }

    /// Called after the actor ran, with its result.
    async fn after_process_message(
        &self,
        ctx: &mut MessageContext,
        result: &std::result::Result<Value, ActorFailure>,
    ) {
        let _ = (ctx, result);
    }

    /// Called when a `before_process_message` hook skipped the message.
    async fn after_skip_message(&self, ctx: &mut MessageContext) {
        let _ = ctx;
    }

    /// Called before the message is acked (acks are then batched).
    async fn before_ack(&self, ctx: &MessageContext) {
        let _ = ctx;
    }

    /// Called once the ack is handed to the ack batcher.
    async fn after_ack(&self, ctx: &MessageContext) {
        let _ = ctx;
    }

    /// Called before the message is dead-lettered.
    async fn before_nack(&self, ctx: &MessageContext) {
        let _ = ctx;
    }

    /// Called after the message was dead-lettered.
    async fn after_nack(&self, ctx: &MessageContext) {
        let _ = ctx;
    }

    /// Called when a worker starts, before it consumes.
    async fn before_worker_boot(&self, broker: &Arc<dyn Broker>) {
        let _ = broker;
    }

    /// Called once a worker consumes.
    async fn after_worker_boot(&self, broker: &Arc<dyn Broker>) {
        let _ = broker;
    }

    /// Called when a worker begins shutting down.
    async fn before_worker_shutdown(&self, broker: &Arc<dyn Broker>) {
        let _ = broker;
    }

    /// Called once a worker has stopped.
    async fn after_worker_shutdown(&self, broker: &Arc<dyn Broker>) {
        let _ = broker;
    }

    /// The results backend this middleware stores to, if it is
    /// [`Results`](crate::results::Results): how `get_result` finds the backend from the broker.
    fn results_backend(&self) -> Option<Arc<dyn ResultBackend>> {
        None
    }

    /// This middleware, if it is [`GroupCallbacks`]: how a
    /// group with completion callbacks finds its barrier backend.
    fn group_callbacks(&self) -> Option<&GroupCallbacks> {
        None
    }
}

/// The ordered middleware of a broker. `Middlewares::default()` is Dramatiq's default stack.
pub struct Middlewares {
    stack: RwLock<Arc<Vec<Arc<dyn Middleware>>>>,
}

impl Default for Middlewares {
    fn default() -> Self {
        Middlewares::new(default_middleware())
    }
}

/// Dramatiq's default stack, in its order.
pub fn default_middleware() -> Vec<Arc<dyn Middleware>> {
    vec![
        Arc::new(AgeLimit::default()),
        Arc::new(TimeLimit::default()),
        Arc::new(ShutdownNotifications::default()),
        Arc::new(Callbacks),
        Arc::new(Pipelines),
        Arc::new(Retries::default()),
    ]
}

impl std::fmt::Debug for Middlewares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Middlewares({})", self.snapshot().len())
    }
}

impl Middlewares {
    /// A stack of exactly these middleware.
    pub fn new(stack: Vec<Arc<dyn Middleware>>) -> Self {
        Middlewares {
            stack: RwLock::new(Arc::new(stack)),
        }
    }

    /// An empty stack: failures are dead-lettered at once, nothing is retried.
    pub fn empty() -> Self {
        Middlewares::new(Vec::new())
    }

    /// Appends a middleware: its `before_*` hooks run after those added before it.
    pub fn add(&self, middleware: Arc<dyn Middleware>) {
        let mut stack = self.stack.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::clone(&stack);
        next.push(middleware);
        *stack = Arc::new(next);
    }

    /// Replaces the whole stack.
    pub fn set(&self, middleware: Vec<Arc<dyn Middleware>>) {
        *self.stack.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(middleware);
    }

    /// The current stack, cheap to clone and stable while hooks run.
    pub fn snapshot(&self) -> Arc<Vec<Arc<dyn Middleware>>> {
        self.stack.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
