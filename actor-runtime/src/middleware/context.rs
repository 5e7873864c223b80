//! What middleware sees of a message being processed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::actor::ActorFailure;
use crate::broker::Broker;
use crate::message::Message;
use crate::registry::Registration;

/// Returned by [`Middleware::before_process_message`](super::Middleware::before_process_message)
/// to skip a message without running its actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip;

/// A message being processed, with its actor and broker, as middleware sees it.
///
/// Middleware may change the message's options (Retries writes `retries` and `traceback`),
/// mark it failed (it is then dead-lettered), or set the time limit.
pub struct MessageContext {
    /// The message (middleware may edit its options; retries re-enqueue this copy).
    pub message: Message,
    queue: Arc<str>,
    broker: Arc<dyn Broker>,
    actor: &'static Registration,
    failed: Option<String>,
    retry_scheduled: bool,
    time_limit: Option<Duration>,
    interrupt_on_shutdown: bool,
    shutdown: CancellationToken,
    result: Option<Value>,
    error: Option<ActorFailure>,
}

impl std::fmt::Debug for MessageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageContext")
            .field("message_id", &self.message.message_id)
            .field("actor", &self.actor.name)
            .field("failed", &self.failed)
            .field("retry_scheduled", &self.retry_scheduled)
            .finish()
    }
}

impl MessageContext {
    pub(crate) fn new(
        message: Message,
        queue: Arc<str>,
        broker: Arc<dyn Broker>,
        actor: &'static Registration,
        shutdown: CancellationToken,
    ) -> Self {
        MessageContext {
            message,
            queue,
            broker,
            actor,
            failed: None,
            retry_scheduled: false,
            time_limit: None,
            interrupt_on_shutdown: false,
            shutdown,
            result: None,
            error: None,
        }
    }

    /// The queue the message was fetched from (its canonical name, without `.DQ`).
    ///
    /// Unlike the message's own `queue_name`, which its producer wrote, this is one of the
    /// queues the worker consumes: label metrics and the like with it.
    pub fn queue(&self) -> &str {
        crate::message::canonical_queue(&self.queue)
    }

    /// The broker the message came from (to enqueue follow-up messages).
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The actor that runs the message.
    pub fn actor(&self) -> &'static Registration {
        self.actor
    }

    /// Marks the message failed for good: it is dead-lettered with `reason`, cut to about
    /// 1 KB (it may quote a producer's data, such as an argument serde could not read).
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.failed = Some(crate::truncate::truncated(reason.into()));
    }

    /// Whether the message failed for good.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Why it failed for good.
    pub fn failure_reason(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Records that a failure was handled by scheduling a retry: the message is then acked
    /// rather than dead-lettered.
    pub fn mark_retry_scheduled(&mut self) {
        self.retry_scheduled = true;
    }

    /// Whether a retry was scheduled.
    pub fn retry_scheduled(&self) -> bool {
        self.retry_scheduled
    }

    /// Cancels the actor after `limit` (`None`: no limit).
    pub fn set_time_limit(&mut self, limit: Option<Duration>) {
        self.time_limit = limit;
    }

    /// The time limit the actor will run under.
    pub fn time_limit(&self) -> Option<Duration> {
        self.time_limit
    }

    /// Cancel the actor when worker shutdown begins (it then fails with `Shutdown` and is
    /// retried).
    pub fn set_interrupt_on_shutdown(&mut self, interrupt: bool) {
        self.interrupt_on_shutdown = interrupt;
    }

    pub(crate) fn interrupt_on_shutdown(&self) -> bool {
        self.interrupt_on_shutdown
    }

    /// Cancelled when the worker begins shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The actor's serialised return value, once it succeeded.
    pub fn result(&self) -> Option<&Value> {
        self.result.as_ref()
    }

    pub(crate) fn set_result(&mut self, value: Value) {
        self.result = Some(value);
    }

    /// The actor's error, once it failed (this run; it may still be retried).
    pub fn error(&self) -> Option<&ActorFailure> {
        self.error.as_ref()
    }

    pub(crate) fn set_error(&mut self, failure: ActorFailure) {
        self.error = Some(failure);
    }

    /// A numeric option in ms or count: the message's own, else `actor_value`.
    pub fn option_or(&self, key: &str, actor_value: Option<u64>) -> Option<u64> {
        self.message.option_u64(key).or(actor_value)
    }

    /// A boolean option: the message's own, else `actor_value`.
    pub fn flag_or(&self, key: &str, actor_value: Option<bool>) -> Option<bool> {
        self.message
            .options
            .get(key)
            .and_then(Value::as_bool)
            .or(actor_value)
    }

    /// A string option (an actor name): the message's own, else `actor_value`.
    pub fn name_or(&self, key: &str, actor_value: Option<&'static str>) -> Option<String> {
        self.message
            .options
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(actor_value.map(str::to_owned))
    }
}
