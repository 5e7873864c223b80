//! What middleware sees of a message being processed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::actor::ActorFailure;
use crate::message::Message;
use crate::registry::Registration;

/// Returned by [`Middleware::before_process_message`](super::Middleware::before_process_message)
/// to skip a message without running its actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip;

/// What becomes of a processed message. Middleware decides it (Retries chooses between a
/// retry and a dead letter), the worker carries it out and logs it, once.
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::middleware::Fate;
///
/// let fate = Fate::Retry { delay: Duration::from_secs(15) };
/// assert!(!matches!(fate, Fate::Ack));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// Done: the message leaves the broker. The default, unless the actor fails.
    #[default]
    Ack,
    /// Run again after `delay`: the message (with the options middleware wrote) is
    /// enqueued to the delay queue, then this copy is acked.
    Retry {
        /// How long until the retry is due.
        delay: Duration,
    },
    /// Failed for good: dead-lettered with this reason.
    DeadLetter(String),
}

/// A message being processed, with its actor, as middleware sees it.
///
/// Middleware may change the message's options (Retries writes `retries` and `traceback`),
/// decide its [`Fate`] (a retry, or a dead letter), or set the time limit.
pub struct MessageContext {
    /// The message (middleware may edit its options; retries re-enqueue this copy).
    pub message: Message,
    queue: Arc<str>,
    actor: &'static Registration,
    fate: Fate,
    time_limit: Option<Duration>,
    interrupt_on_shutdown: bool,
    shutdown: CancellationToken,
    result: Option<Value>,
    error: Option<ActorFailure>,
    payload_size: usize,
    cancel: Option<CancelFlag>,
    cancelled: bool,
    /// When this run started, as the job records saw it.
    #[cfg(feature = "postgres")]
    pub(crate) record_start: Option<crate::records::RunStart>,
}

impl std::fmt::Debug for MessageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageContext")
            .field("message_id", &self.message.message_id)
            .field("actor", &self.actor.name)
            .field("fate", &self.fate)
            .finish()
    }
}

impl MessageContext {
    pub(crate) fn new(
        message: Message,
        queue: Arc<str>,
        actor: &'static Registration,
        shutdown: CancellationToken,
    ) -> Self {
        MessageContext {
            message,
            queue,
            actor,
            fate: Fate::Ack,
            time_limit: None,
            interrupt_on_shutdown: false,
            shutdown,
            result: None,
            error: None,
            payload_size: 0,
            cancel: None,
            cancelled: false,
            #[cfg(feature = "postgres")]
            record_start: None,
        }
    }

    /// Whether the message was cancelled: skipped because a cancel was requested before it
    /// ran, or aborted while it ran (see the `cancel` module, feature `redis`). A cancelled
    /// message is acked, never retried nor dead-lettered.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Marks the message cancelled (see [`is_cancelled`](Self::is_cancelled)).
    pub(crate) fn mark_cancelled(&mut self) {
        self.cancelled = true;
    }

    /// The cancel flag the actor runs under, where cancellation is on.
    pub(crate) fn cancel_flag(&self) -> Option<&CancelFlag> {
        self.cancel.as_ref()
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_cancel_flag(&mut self, flag: CancelFlag) {
        self.cancel = Some(flag);
    }

    /// The message's encoded size in bytes, as the broker handed it to the worker (what
    /// the [`Prometheus`](crate::middleware::Prometheus) size histogram counts).
    pub fn payload_size(&self) -> usize {
        self.payload_size
    }

    pub(crate) fn set_payload_size(&mut self, size: usize) {
        self.payload_size = size;
    }

    /// The queue the message was fetched from (its canonical name, without `.DQ`).
    ///
    /// Unlike the message's own `queue_name`, which its producer wrote, this is one of the
    /// queues the worker consumes: label metrics and the like with it.
    pub fn queue(&self) -> &str {
        crate::message::canonical_queue(&self.queue)
    }

    /// The queue the message was fetched from, as the consumer names it (with `.DQ` for a
    /// delayed message): shared, not copied.
    #[cfg(feature = "postgres")]
    pub(crate) fn queue_shared(&self) -> &Arc<str> {
        &self.queue
    }

    /// The actor that runs the message.
    pub fn actor(&self) -> &'static Registration {
        self.actor
    }

    /// Marks the message failed for good: it is dead-lettered with `reason`, cut to about
    /// 1 KB (it may quote a producer's data, such as an argument serde could not read).
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.fate = Fate::DeadLetter(crate::truncate::truncated(reason.into()));
    }

    /// Schedules the message to run again after `delay` (with the options as middleware
    /// left them), unless it already failed for good.
    pub fn retry_in(&mut self, delay: Duration) {
        if !self.is_failed() {
            self.fate = Fate::Retry { delay };
        }
    }

    /// What becomes of the message, as decided so far.
    pub fn fate(&self) -> &Fate {
        &self.fate
    }

    /// Whether the message failed for good.
    pub fn is_failed(&self) -> bool {
        matches!(self.fate, Fate::DeadLetter(_))
    }

    /// Why it failed for good.
    pub fn failure_reason(&self) -> Option<&str> {
        match &self.fate {
            Fate::DeadLetter(reason) => Some(reason),
            _ => None,
        }
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

    /// The worker's shutdown signal, raised when it begins shutting down.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown(self.shutdown.clone())
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

/// A running message's cancel flag: raised once, when a cancel (or a Python
/// `dramatiq_abort.abort`) asks for the message to stop. From
/// [`cancel_requested`](crate::middleware::cancel_requested) inside an actor, where the
/// `cancel::Cancellation` middleware (feature `redis`) is on.
///
/// An `async` actor is stopped at its next await point once the abort is due (at once, or
/// after the abort's grace period); a plain `fn` actor cannot be stopped from outside, so it
/// polls [`is_requested`](Self::is_requested) and returns.
#[derive(Clone, Debug)]
pub struct CancelFlag {
    pub(crate) requested: CancellationToken,
    pub(crate) abort: CancellationToken,
}

impl CancelFlag {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new() -> CancelFlag {
        CancelFlag {
            requested: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// Whether a cancel was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.is_cancelled()
    }

    /// Completes when a cancel is requested (at once if it was).
    pub async fn requested(&self) {
        self.requested.cancelled().await
    }
}

/// A worker's shutdown signal: raised once, when the worker begins shutting down. Cheap to
/// clone; from [`shutdown_requested`](crate::middleware::shutdown_requested) inside an actor, or
/// [`RunningWorker::shutdown_signal`](crate::worker::RunningWorker::shutdown_signal).
///
/// ```
/// use actor_runtime::actor;
/// use actor_runtime::middleware::shutdown_requested;
///
/// #[actor(time_limit = "1h")]
/// async fn poll_mailbox() {
///     let shutdown = shutdown_requested().expect("inside an actor");
///     loop {
///         tokio::select! {
///             _ = shutdown.requested() => return, // the worker is stopping
///             _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
///                 // ... poll once
///             }
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Shutdown(pub(crate) CancellationToken);

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes when shutdown begins (at once if it has).
    pub async fn requested(&self) {
        self.0.cancelled().await
    }
}
