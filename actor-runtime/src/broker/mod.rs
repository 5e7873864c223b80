//! The [`Broker`]: one concrete handle over a storage [`Backend`], owning the middleware and
//! the one enqueue path; the [`Middleware`] hooks it runs; the global broker.
//!
//! ```text
//!  my_actor::send ──▶ Broker::enqueue ──▶ before_enqueue hooks ─▶ delay envelope ─▶ Backend::enqueue
//!                     (validation)        (every middleware)      (eta, `q.DQ`)     (Redis, stub...)
//! ```
//!
//! A backend stores and hands out messages ([`Backend`], plus [`DeadLetters`] and
//! [`Workers`] where it can do more); everything else (hooks, envelope, checks) lives here
//! once, for every backend.

mod backend;
mod build;
mod context;
mod global;
mod inspect;
#[cfg(feature = "rabbitmq")]
pub(crate) mod rabbitmq;
#[cfg(any(feature = "redis", feature = "rabbitmq"))]
mod redact;
#[cfg(feature = "redis")]
pub(crate) mod redis;
mod stub;
mod unique;

use std::any::Any;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::actor::ActorFailure;
use crate::error::{Error, Result};
use crate::message::{canonical_queue, is_valid_queue_name, Message};

#[cfg(any(feature = "cli", feature = "rabbitmq", feature = "periodic"))]
pub(crate) use backend::human_duration;
#[cfg(feature = "redis")]
pub(crate) use backend::Wake;
pub(crate) use backend::{deadline_after, eta_for, later};
pub use backend::{
    Backend, BrokerInfo, Consumer, DeadLetter, DeadLetters, Delivery, DeliveryTag, QueueStats,
    WorkerInfo, Workers,
};
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub(crate) use build::{choose, Choice};
pub use context::{CancelFlag, Fate, MessageContext, Shutdown, Skip};
pub(crate) use global::{enter_scope, enter_scope_sync, is_production, scoped};
pub use global::{environment_is_production, get_broker, set_broker, with_broker};
#[cfg_attr(not(feature = "redis"), allow(unused_imports))]
pub(crate) use inspect::{minute_of, offset_cursor};
pub use inspect::{
    ActivityCounter, ActivityMinute, Inspect, ListedMessage, MessagePage, MessageState, Pause,
};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{QueueType, RabbitmqBackend, RabbitmqConfig};
#[cfg(any(feature = "redis", feature = "rabbitmq"))]
pub(crate) use redact::redact_url;
#[cfg(feature = "redis")]
pub use redis::{RedisBackend, RedisConfig};
pub use stub::StubBackend;
pub use unique::{
    Claim, Sent, Unique, UniqueKeys, DEFAULT_UNIQUE_TTL, MAX_UNIQUE_KEY_LEN, MAX_UNIQUE_TTL,
    UNIQUE_KEY, UNIQUE_TTL,
};

/// Where messages wait, and the hooks that run around them: a storage [`Backend`] (Redis in
/// production, the in-memory [`StubBackend`] in tests) with its middleware stack.
///
/// A `Broker` is a cheap handle: clones share one backend and one stack. App code rarely
/// calls it directly: `my_actor::send(..)` enqueues through [`get_broker`] and a
/// [`Worker`](crate::Worker) consumes.
///
/// ```
/// use actor_runtime::{Broker, Message};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
/// broker.enqueue(Message::new("default", "noop", vec![]), None).await.unwrap();
/// assert_eq!(broker.stats("default").await.unwrap().ready, 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    middleware: Middlewares,
}

/// `message` as a backend stores it: out of any delay envelope it came in, its queue name
/// checked, and with a `delay`, in its delay queue with an `eta`.
fn ready_to_store(message: Message, delay: Option<Duration>) -> Result<Message> {
    let message = message.undelayed();
    if !is_valid_queue_name(&message.queue_name) {
        return Err(Error::InvalidQueueName(message.queue_name));
    }
    Ok(match delay {
        Some(delay) => {
            let eta = eta_for(&message, delay)?;
            message.delayed(eta)
        }
        None => message,
    })
}
impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("kind", &self.kind())
            .field("middleware", &self.inner.middleware)
            .finish()
    }
}

impl Broker {
    /// A broker over `backend` running exactly the middleware in `stack` (an empty stack:
    /// failures are dead-lettered at once, nothing is retried). [`Broker::new`] starts with
    /// Dramatiq's default stack instead.
    ///
    /// ```
    /// use actor_runtime::Broker;
    /// use actor_runtime::broker::StubBackend;
    ///
    /// let broker = Broker::with_middleware(StubBackend::new(), Vec::new());
    /// assert!(broker.middleware().snapshot().is_empty());
    /// ```
    pub fn with_middleware(backend: impl Backend, stack: Vec<Arc<dyn Middleware>>) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                backend: Box::new(backend),
                middleware: Middlewares::new(stack),
            }),
        }
    }

    /// `"stub"`, `"redis"`...: the backend's [`kind`](Backend::kind).
    pub fn kind(&self) -> &'static str {
        self.inner.backend.kind()
    }

    /// Where the backend keeps its queues and how it is set up, secrets redacted (see
    /// [`Backend::describe`]).
    ///
    /// ```
    /// let info = actor_runtime::Broker::stub().describe();
    /// assert_eq!(info.kind, "stub");
    /// assert!(info.url.is_none() && info.settings.is_empty());
    /// ```
    pub fn describe(&self) -> BrokerInfo {
        self.inner.backend.describe()
    }

    /// Checks once that the backend's server answers (see [`Backend::ping`]).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(actor_runtime::Broker::stub().ping().await.is_ok());
    /// # });
    /// ```
    pub async fn ping(&self) -> Result<()> {
        self.inner.backend.ping().await
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    /// The backend, if it is a `B`: for what only one kind of backend offers.
    ///
    /// ```
    /// use actor_runtime::Broker;
    /// use actor_runtime::broker::StubBackend;
    ///
    /// let broker = Broker::stub();
    /// assert!(broker.backend_as::<StubBackend>().is_some());
    /// ```
    pub fn backend_as<B: Backend>(&self) -> Option<&B> {
        let backend: &dyn Any = &*self.inner.backend;
        backend.downcast_ref::<B>()
    }

    /// The middleware stack, run in order on enqueue and around every message.
    pub fn middleware(&self) -> &Middlewares {
        &self.inner.middleware
    }

    /// Appends `middleware` to the stack (see [`Middlewares::add`]).
    ///
    /// ```
    /// use actor_runtime::Broker;
    /// use actor_runtime::middleware::AgeLimit;
    ///
    /// let broker = Broker::stub();
    /// broker.add_middleware(AgeLimit { max_age: Some(60_000) });
    /// assert!(broker.find::<AgeLimit>().is_some());
    /// ```
    pub fn add_middleware(&self, middleware: impl Middleware) {
        self.inner.middleware.add(Arc::new(middleware));
    }

    /// The first middleware of the stack that is a `T`: how features find their parts (the
    /// results backend of [`Results`](crate::results::Results), the barrier backend of
    /// group callbacks...).
    pub fn find<T: Middleware>(&self) -> Option<Arc<T>> {
        self.inner.middleware.snapshot().iter().find_map(|m| {
            let any: Arc<dyn Any + Send + Sync> = m.clone();
            any.downcast::<T>().ok()
        })
    }

    /// Whether `self` and `other` are handles of one broker.
    ///
    /// ```
    /// let broker = actor_runtime::Broker::stub();
    /// assert!(broker.same(&broker.clone()));
    /// assert!(!broker.same(&actor_runtime::Broker::stub()));
    /// ```
    pub fn same(&self, other: &Broker) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Makes `queue` (and its delay queue) known to the broker; idempotent.
    pub async fn declare_queue(&self, queue: &str) -> Result<()> {
        self.inner.backend.declare_queue(queue).await
    }

    /// Queues declared so far, canonical names, sorted.
    pub fn queues(&self) -> Vec<String> {
        self.inner.backend.queues()
    }

    /// Enqueues `message`: runs the middleware's `before_enqueue` hooks, checks the queue
    /// name and the delay, stores it (with a `delay`, in the delay queue with an `eta`), then
    /// runs the `after_enqueue` hooks. Returns the message as stored (queue name, broker
    /// ids).
    ///
    /// A delay longer than [`MAX_DELAY`](crate::message::MAX_DELAY) is refused with
    /// [`Error::DelayTooLong`]; an invalid queue name with [`Error::InvalidQueueName`].
    ///
    /// A message with a `unique_key` option (see [`unique`](crate::unique)) whose key another
    /// message holds is not stored: the message is returned with the holder's id
    /// ([`send_message`](Broker::send_message) also says that it was a duplicate).
    pub async fn enqueue(&self, message: Message, delay: Option<Duration>) -> Result<Message> {
        Ok(self.send_message(message, delay).await?.message)
    }

    /// [`enqueue`](Broker::enqueue), telling whether the message was a duplicate: another
    /// message held its uniqueness key, so nothing was stored and the returned message
    /// carries the holder's id.
    ///
    /// ```
    /// use actor_runtime::{Broker, Message};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let broker = Broker::stub();
    /// let mut message = Message::new("default", "sync_account", vec![42.into()]);
    /// message.options.insert("unique_key".into(), "account:42".into());
    /// let first = broker.send_message(message.clone(), None).await.unwrap();
    /// let mut again = message.clone();
    /// again.message_id = "another".into();
    /// let second = broker.send_message(again, None).await.unwrap();
    /// assert!(!first.duplicate && second.duplicate);
    /// assert_eq!(second.message.message_id, first.message.message_id);
    /// # });
    /// ```
    pub async fn send_message(
        &self,
        mut message: Message,
        delay: Option<Duration>,
    ) -> Result<unique::Sent> {
        // The one-message path of `enqueue_batch`, without its vectors: concurrent sends
        // (a web server's handlers) take it per message.
        let middleware = self.inner.middleware.with_enqueue_hooks();
        for m in middleware.iter() {
            m.before_enqueue(self, &mut message, delay).await?;
        }
        if message.options.contains_key(unique::UNIQUE_KEY) {
            if let Some(unique) = unique::Unique::of(&message)? {
                return self.send_unique(message, delay, unique, &middleware).await;
            }
        }
        #[cfg(feature = "opentelemetry")]
        let send = crate::otel::start_send(&mut message, self.kind());
        let stored = self
            .inner
            .backend
            .enqueue_one(ready_to_store(message, delay)?)
            .await;
        #[cfg(feature = "opentelemetry")]
        send.finish(&stored);
        let message = stored?;
        for m in middleware.iter().rev() {
            m.after_enqueue(self, &message, delay).await;
        }
        Ok(unique::Sent {
            message,
            duplicate: false,
        })
    }

    /// The rest of [`send_message`](Broker::send_message) for a message with a uniqueness
    /// key: claimed and stored in one step by the backend.
    async fn send_unique(
        &self,
        mut message: Message,
        delay: Option<Duration>,
        unique: unique::Unique,
        middleware: &[Arc<dyn Middleware>],
    ) -> Result<unique::Sent> {
        use unique::{Claim, Sent};
        let keys = self.inner.backend.unique_keys().ok_or(Error::Unsupported {
            what: "sending a message with a `unique_key`",
            broker: self.kind(),
        })?;
        // A retry of the key's holder (the worker re-enqueues it with `retries` set) keeps
        // the key and is never refused.
        let renew = message.retries() > 0;
        #[cfg(feature = "opentelemetry")]
        let send = crate::otel::start_send(&mut message, self.kind());
        let original = message.clone();
        let claimed = keys
            .enqueue_unique(ready_to_store(message, delay)?, &unique, renew)
            .await;
        #[cfg(feature = "opentelemetry")]
        send.finish(&claimed);
        match claimed? {
            Claim::Stored(message) => {
                for m in middleware.iter().rev() {
                    m.after_enqueue(self, &message, delay).await;
                }
                Ok(Sent {
                    message,
                    duplicate: false,
                })
            }
            Claim::Held { holder } => {
                tracing::debug!(key = %unique.key, holder = %holder, "duplicate of a unique message; not enqueued");
                message = original;
                message.message_id = holder;
                Ok(Sent {
                    message,
                    duplicate: true,
                })
            }
        }
    }

    /// Enqueues many messages at once, running the middleware's enqueue hooks for each, in
    /// as few round trips as the backend allows (the Redis backend: one script call per
    /// queue and 1000 messages). Returns them as stored, in order.
    ///
    /// A batch holding a message with a `unique_key` is sent one message at a time, each as
    /// [`enqueue`](Broker::enqueue) sends it (a duplicate comes back with its holder's id),
    /// so an error may leave the messages before it stored.
    ///
    /// ```
    /// use actor_runtime::{actor, Broker};
    ///
    /// #[actor]
    /// async fn resize(image: u32) {}
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let broker = Broker::stub();
    /// let batch = (0..100).map(|i| resize::message(i).build()).collect::<Result<Vec<_>, _>>().unwrap();
    /// let sent = broker.enqueue_batch(batch, None).await.unwrap();
    /// assert_eq!(sent.len(), 100);
    /// assert_eq!(broker.stats("default").await.unwrap().ready, 100);
    /// # });
    /// ```
    pub async fn enqueue_batch(
        &self,
        mut messages: Vec<Message>,
        delay: Option<Duration>,
    ) -> Result<Vec<Message>> {
        if messages
            .iter()
            .any(|m| m.options.contains_key(unique::UNIQUE_KEY))
        {
            // Each unique message is claimed and stored in a step of its own, in order.
            let mut sent = Vec::with_capacity(messages.len());
            for message in messages {
                sent.push(self.enqueue(message, delay).await?);
            }
            return Ok(sent);
        }
        let middleware = self.inner.middleware.with_enqueue_hooks();
        if !middleware.is_empty() {
            for message in &mut messages {
                for m in middleware.iter() {
                    m.before_enqueue(self, message, delay).await?;
                }
            }
        }
        #[cfg(feature = "opentelemetry")]
        let sends: Vec<_> = messages
            .iter_mut()
            .map(|message| crate::otel::start_send(message, self.kind()))
            .collect();
        let stored = self.store(messages, delay).await;
        #[cfg(feature = "opentelemetry")]
        for send in sends {
            send.finish(&stored);
        }
        let messages = stored?;
        if !middleware.is_empty() {
            for message in &messages {
                for m in middleware.iter().rev() {
                    m.after_enqueue(self, message, delay).await;
                }
            }
        }
        Ok(messages)
    }

    /// Stores messages without running middleware: the envelope and the checks of
    /// [`enqueue`](Broker::enqueue) alone (for moving messages that were enqueued once
    /// already).
    pub(crate) async fn store(
        &self,
        messages: Vec<Message>,
        delay: Option<Duration>,
    ) -> Result<Vec<Message>> {
        let ready = messages
            .into_iter()
            .map(|message| ready_to_store(message, delay))
            .collect::<Result<Vec<_>>>()?;
        self.inner.backend.enqueue(ready).await
    }

    /// Starts consuming `queue` (and its due delayed messages).
    pub async fn consume(&self, queue: &str, prefetch: usize) -> Result<Box<dyn Consumer>> {
        self.inner.backend.consume(queue, prefetch).await
    }

    /// Drops every message of `queue`: ready, delayed and dead-lettered.
    pub async fn flush(&self, queue: &str) -> Result<()> {
        self.inner.backend.flush(queue).await
    }

    /// [`flush`](Broker::flush) for every declared queue.
    pub async fn flush_all(&self) -> Result<()> {
        for queue in self.queues() {
            self.flush(&queue).await?;
        }
        Ok(())
    }

    /// Waits until `queue` and its delay queue are empty and nothing fetched is unacked.
    ///
    /// With `fail_fast`, returns [`Error::DeadLettered`] as soon as a message of the queue is
    /// dead-lettered while waiting (so a test sees the actor's error, not a timeout).
    pub async fn join(
        &self,
        queue: &str,
        timeout: Option<Duration>,
        fail_fast: bool,
    ) -> Result<()> {
        self.inner.backend.join(queue, timeout, fail_fast).await
    }

    /// Counts of the queue's messages by state.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.inner.backend.stats(queue).await
    }

    fn dead_letter_store(&self, what: &'static str) -> Result<&dyn DeadLetters> {
        self.inner.backend.dead_letters().ok_or(Error::Unsupported {
            what,
            broker: self.kind(),
        })
    }

    /// Dead-lettered messages of `queue`, oldest first, at most `limit`; an
    /// [`Error::Unsupported`] from a backend that cannot list them.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let broker = actor_runtime::Broker::stub();
    /// broker.declare_queue("default").await.unwrap();
    /// assert!(broker.dead_letters("default", 10).await.unwrap().is_empty());
    /// # });
    /// ```
    pub async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.dead_letter_store("listing dead letters")?
            .list(canonical_queue(queue), limit)
            .await
    }

    /// Moves dead-lettered messages back to their queue (all if `ids` is `None`); returns how
    /// many moved.
    pub async fn requeue_dead_letters(&self, queue: &str, ids: Option<&[String]>) -> Result<usize> {
        self.dead_letter_store("requeueing dead letters")?
            .requeue(canonical_queue(queue), ids)
            .await
    }

    /// Deletes every dead letter of `queue`; returns how many.
    pub async fn purge_dead_letters(&self, queue: &str) -> Result<usize> {
        self.dead_letter_store("purging dead letters")?
            .delete(canonical_queue(queue), None)
            .await
    }

    /// Deletes the dead letters of `queue` whose ids are in `ids`; returns how many.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let broker = actor_runtime::Broker::stub();
    /// broker.declare_queue("default").await.unwrap();
    /// let gone = broker.delete_dead_letters("default", &["no-such-id".into()]).await.unwrap();
    /// assert_eq!(gone, 0);
    /// # });
    /// ```
    pub async fn delete_dead_letters(&self, queue: &str, ids: &[String]) -> Result<usize> {
        self.dead_letter_store("deleting dead letters")?
            .delete(canonical_queue(queue), Some(ids))
            .await
    }

    /// The worker processes consuming from this broker, from their heartbeats, or `None` when
    /// the backend cannot tell (the stub lives in one process).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(actor_runtime::Broker::stub().workers().await.unwrap().is_none());
    /// # });
    /// ```
    pub async fn workers(&self) -> Result<Option<Vec<WorkerInfo>>> {
        match self.inner.backend.workers() {
            Some(workers) => Ok(Some(workers.list().await?)),
            None => Ok(None),
        }
    }

    /// This process's id among the broker's workers (as [`Broker::workers`] lists it), where
    /// the backend keeps heartbeats.
    ///
    /// ```
    /// assert_eq!(actor_runtime::Broker::stub().worker_id(), None);
    /// ```
    pub fn worker_id(&self) -> Option<&str> {
        self.inner.backend.workers().map(|w| w.worker_id())
    }

    /// Requeues now the fetched, unacked messages of worker `worker_id`, a process known to
    /// be dead (its supervisor saw it exit), rather than once its heartbeat times out.
    /// Returns how many came back; a backend without heartbeats has none.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert_eq!(actor_runtime::Broker::stub().recover_worker("gone").await.unwrap(), 0);
    /// # });
    /// ```
    pub async fn recover_worker(&self, worker_id: &str) -> Result<u64> {
        match self.inner.backend.workers() {
            Some(workers) => workers.recover(worker_id).await,
            None => Ok(0),
        }
    }

    /// Stops the backend's background tasks (heartbeats, maintenance).
    pub async fn close(&self) {
        self.inner.backend.close().await
    }
}

/// Hooks the broker and worker call around every message, as in Dramatiq: each receives the
/// broker. Every hook defaults to doing nothing, so a middleware implements only what it
/// needs; add it with [`Broker::add_middleware`].
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use actor_runtime::middleware::{MessageContext, Middleware};
/// use actor_runtime::{ActorFailure, Broker, Message, Result};
///
/// /// Stamps a tenant on every message and counts failures.
/// #[derive(Default)]
/// struct Tenant {
///     failures: AtomicU64,
/// }
///
/// #[actor_runtime::middleware::async_trait]
/// impl Middleware for Tenant {
///     async fn before_enqueue(&self, _: &Broker, message: &mut Message, _: Option<Duration>) -> Result<()> {
///         message.options.insert("tenant".into(), "acme".into());
///         Ok(())
///     }
///
///     async fn after_process_message(
///         &self,
///         _: &Broker,
///         _ctx: &mut MessageContext,
///         result: &std::result::Result<serde_json::Value, ActorFailure>,
///     ) {
///         if result.is_err() {
///             self.failures.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let broker = Broker::stub();
/// broker.add_middleware(Tenant::default());
/// assert!(broker.find::<Tenant>().is_some());
/// ```
#[async_trait]
pub trait Middleware: Any + Send + Sync {
    /// Called before a message is stored; may change it or refuse it with an error.
    async fn before_enqueue(
        &self,
        broker: &Broker,
        message: &mut Message,
        delay: Option<Duration>,
    ) -> Result<()> {
        let _ = (broker, message, delay);
        Ok(())
    }

    /// Called after a message was stored.
    async fn after_enqueue(&self, broker: &Broker, message: &Message, delay: Option<Duration>) {
        let _ = (broker, message, delay);
    }

    /// Whether this middleware has enqueue hooks (`before_enqueue`, `after_enqueue`). The
    /// broker calls those of every middleware that says yes (the default) on every send;
    /// return `false` when you implement neither, so sends skip this middleware (most act
    /// only around processing).
    fn hooks_enqueue(&self) -> bool {
        true
    }

    /// Whether this middleware has a [`fetched`](Middleware::fetched) hook (default no): the
    /// worker calls it only on the middleware that says yes, so a stack without any costs
    /// nothing per batch.
    fn hooks_fetched(&self) -> bool {
        false
    }

    /// Called when a worker fetched a batch of messages, before any of them runs (only if
    /// [`hooks_fetched`](Middleware::hooks_fetched) says yes): a middleware that needs a
    /// round trip per message before it runs can make one per batch here, without waiting.
    fn fetched(&self, broker: &Broker, messages: &[&Message]) {
        let _ = (broker, messages);
    }

    /// Called before the actor runs; `Err(Skip)` skips the message (it is then acked, or
    /// dead-lettered if the middleware called [`MessageContext::fail`]).
    async fn before_process_message(
        &self,
        broker: &Broker,
        ctx: &mut MessageContext,
    ) -> std::result::Result<(), Skip> {
        let _ = (broker, ctx);
        Ok(())
    }

    /// Called after the actor ran, with its result. A middleware may decide the message's
    /// [`Fate`] here ([`MessageContext::fail`], [`MessageContext::retry_in`]); the worker
    /// carries it out, and logs it, once every hook has run.
    async fn after_process_message(
        &self,
        broker: &Broker,
        ctx: &mut MessageContext,
        result: &std::result::Result<Value, ActorFailure>,
    ) {
        let _ = (broker, ctx, result);
    }

    /// Called when a `before_process_message` hook skipped the message.
    async fn after_skip_message(&self, broker: &Broker, ctx: &mut MessageContext) {
        let _ = (broker, ctx);
    }

    /// Called before the message is acked (acks are then batched).
    async fn before_ack(&self, broker: &Broker, ctx: &MessageContext) {
        let _ = (broker, ctx);
    }

    /// Called once the ack is handed to the ack batcher.
    async fn after_ack(&self, broker: &Broker, ctx: &MessageContext) {
        let _ = (broker, ctx);
    }

    /// Called before the message is dead-lettered.
    async fn before_nack(&self, broker: &Broker, ctx: &MessageContext) {
        let _ = (broker, ctx);
    }

    /// Called after the message was dead-lettered.
    async fn after_nack(&self, broker: &Broker, ctx: &MessageContext) {
        let _ = (broker, ctx);
    }

    /// Called when a worker starts, before it consumes.
    async fn before_worker_boot(&self, broker: &Broker) {
        let _ = broker;
    }

    /// Called once a worker consumes.
    async fn after_worker_boot(&self, broker: &Broker) {
        let _ = broker;
    }

    /// Called when a worker begins shutting down.
    async fn before_worker_shutdown(&self, broker: &Broker) {
        let _ = broker;
    }

    /// Called once a worker has stopped.
    async fn after_worker_shutdown(&self, broker: &Broker) {
        let _ = broker;
    }
}

/// The ordered middleware of a broker: `before_*` hooks run in order, `after_*` hooks in
/// reverse.
pub struct Middlewares {
    stack: RwLock<Stack>,
}

/// A stack and the part of it with enqueue hooks, swapped together.
#[derive(Clone)]
struct Stack {
    all: Arc<Vec<Arc<dyn Middleware>>>,
    enqueue: Arc<Vec<Arc<dyn Middleware>>>,
    fetched: Arc<Vec<Arc<dyn Middleware>>>,
}

impl Stack {
    fn new(all: Vec<Arc<dyn Middleware>>) -> Stack {
        let enqueue = all.iter().filter(|m| m.hooks_enqueue()).cloned().collect();
        let fetched = all.iter().filter(|m| m.hooks_fetched()).cloned().collect();
        Stack {
            all: Arc::new(all),
            enqueue: Arc::new(enqueue),
            fetched: Arc::new(fetched),
        }
    }
}

impl fmt::Debug for Middlewares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Middlewares({})", self.snapshot().len())
    }
}

impl Middlewares {
    /// A stack of exactly these middleware.
    pub fn new(stack: Vec<Arc<dyn Middleware>>) -> Self {
        Middlewares {
            stack: RwLock::new(Stack::new(stack)),
        }
    }

    /// Appends a middleware: its `before_*` hooks run after those added before it.
    pub fn add(&self, middleware: Arc<dyn Middleware>) {
        let mut stack = self.stack.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::clone(&stack.all);
        next.push(middleware);
        *stack = Stack::new(next);
    }

    /// Replaces the whole stack.
    pub fn set(&self, middleware: Vec<Arc<dyn Middleware>>) {
        *self.stack.write().unwrap_or_else(|e| e.into_inner()) = Stack::new(middleware);
    }

    /// The current stack, cheap to clone and stable while hooks run.
    pub fn snapshot(&self) -> Arc<Vec<Arc<dyn Middleware>>> {
        self.stack
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .clone()
    }

    /// The middleware of the stack with enqueue hooks, in order.
    /// The middleware of the stack with a `fetched` hook, in order.
    pub(crate) fn with_fetched_hooks(&self) -> Arc<Vec<Arc<dyn Middleware>>> {
        self.stack
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .fetched
            .clone()
    }

    fn with_enqueue_hooks(&self) -> Arc<Vec<Arc<dyn Middleware>>> {
        self.stack
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue
            .clone()
    }
}
