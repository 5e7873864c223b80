//! The [`Broker`] trait, the global broker, and the delivery types consumers hand to workers.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::message::{DecodeError, Message};
use crate::middleware::Middlewares;

#[cfg(feature = "redis")]
pub mod redis;
pub(crate) mod scope;
pub mod stub;

pub use scope::with_broker;

/// Where messages wait: Redis in production, [`StubBroker`](stub::StubBroker) in tests and
/// when nothing is configured.
///
/// A broker stores messages per queue, hands them to consumers, and keeps fetched messages
/// until they are acked (done), nacked (dead-lettered) or requeued. Delayed messages (an `eta`
/// option) wait in the queue's delay queue, `name.DQ`; consumers only return due messages.
///
/// App code rarely calls this trait directly: `my_actor::send(..)` enqueues through the
/// global broker and a [`Worker`](crate::Worker) consumes.
///
/// ```
/// use actor_runtime::{Broker, Message, StubBroker};
///
/// # tokio_test_block_on(async {
/// let broker = StubBroker::new();
/// broker.declare_queue("default").await.unwrap();
/// broker.enqueue(Message::new("default", "noop", vec![]), None).await.unwrap();
/// assert_eq!(broker.stats("default").await.unwrap().ready, 1);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// `"stub"`, `"redis"`...
    fn kind(&self) -> &'static str;

    /// Where this broker keeps its queues and how it is set up, its secrets redacted, for
    /// start-up logs and `check`. Does no I/O. The default names only the
    /// [`kind`](Broker::kind).
    ///
    /// ```
    /// use actor_runtime::{Broker, RedisBroker, RedisConfig};
    ///
    /// let broker = RedisBroker::new(RedisConfig::new("redis://:secret@localhost/3").namespace("app")).unwrap();
    /// let info = broker.describe();
    /// assert_eq!(info.url.as_deref(), Some("redis://:***@localhost/3"));
    /// assert_eq!((info.db, info.namespace.as_deref()), (Some(3), Some("app")));
    /// ```
    fn describe(&self) -> BrokerInfo {
        BrokerInfo::new(self.kind())
    }

    /// Checks once that the broker answers, without retrying and without starting
    /// background tasks (heartbeats...): a start-up check that fails at once, with
    /// [`Error::Connection`], when the broker is unreachable (the Redis broker sends one
    /// `PING`). The default, for in-process brokers, always succeeds.
    ///
    /// ```
    /// use actor_runtime::{Broker, StubBroker};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(StubBroker::new().ping().await.is_ok());
    /// # });
    /// ```
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// The middleware stack, run in order on enqueue and around every message.
    fn middleware(&self) -> &Middlewares;

    /// Makes `queue` (and its delay queue) known to the broker; idempotent.
    async fn declare_queue(&self, queue: &str) -> Result<()>;

    /// Queues declared so far, canonical names, sorted.
    fn queues(&self) -> Vec<String>;

    /// Stores `message` without running middleware. With a `delay` the message goes to the
    /// delay queue with an `eta`. Returns the message as stored (queue name, broker ids).
    async fn enqueue_raw(&self, message: Message, delay: Option<Duration>) -> Result<Message>;

    /// Enqueues `message`, running the middleware's `before_enqueue`/`after_enqueue`.
    async fn enqueue(&self, mut message: Message, delay: Option<Duration>) -> Result<Message> {
        let middleware = self.middleware().snapshot();
        for m in middleware.iter() {
            m.before_enqueue(&mut message, delay).await?;
        }
        let message = self.enqueue_raw(message, delay).await?;
        for m in middleware.iter().rev() {
            m.after_enqueue(&message, delay).await;
        }
        Ok(message)
    }

    /// Stores many messages without running middleware, in as few round trips as the broker
    /// allows (the Redis broker: one script call per queue and 1000 messages). Returns them
    /// as stored, in order.
    async fn enqueue_batch_raw(
        &self,
        messages: Vec<Message>,
        delay: Option<Duration>,
    ) -> Result<Vec<Message>> {
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            stored.push(self.enqueue_raw(message, delay).await?);
        }
        Ok(stored)
    }

    /// Enqueues many messages at once, running the middleware's enqueue hooks for each.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use actor_runtime::{actor, Broker, StubBroker};
    ///
    /// #[actor]
    /// async fn resize(image: u32) {}
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let broker = StubBroker::new();
    /// let batch = (0..100).map(|i| resize::message(i).build()).collect::<Result<Vec<_>, _>>().unwrap();
    /// let sent = broker.enqueue_batch(batch, None).await.unwrap();
    /// assert_eq!(sent.len(), 100);
    /// assert_eq!(broker.stats("default").await.unwrap().ready, 100);
    /// # });
    /// ```
    async fn enqueue_batch(
        &self,
        mut messages: Vec<Message>,
        delay: Option<Duration>,
    ) -> Result<Vec<Message>> {
        let middleware = self.middleware().snapshot();
        if !middleware.is_empty() {
            for message in &mut messages {
                for m in middleware.iter() {
                    m.before_enqueue(message, delay).await?;
                }
            }
        }
        let messages = self.enqueue_batch_raw(messages, delay).await?;
        for message in &messages {
            for m in middleware.iter().rev() {
                m.after_enqueue(message, delay).await;
            }
        }
        Ok(messages)
    }

    /// Starts consuming `queue` (and its due delayed messages).
    async fn consume(&self, queue: &str, prefetch: usize) -> Result<Box<dyn Consumer>>;

    /// Drops every message of `queue`: ready, delayed and dead-lettered.
    async fn flush(&self, queue: &str) -> Result<()>;

    /// [`flush`](Broker::flush) for every declared queue.
    async fn flush_all(&self) -> Result<()> {
        for queue in self.queues() {
            self.flush(&queue).await?;
        }
        Ok(())
    }

    /// Waits until `queue` and its delay queue are empty and nothing fetched is unacked.
    ///
    /// With `fail_fast`, returns [`Error::DeadLettered`] as soon as a message of the queue is
    /// dead-lettered while waiting (so a test sees the actor's error, not a timeout).
    async fn join(&self, queue: &str, timeout: Option<Duration>, fail_fast: bool) -> Result<()>;

    /// Counts of the queue's messages by state.
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// Dead-lettered messages of `queue`, oldest first, at most `limit`.
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Moves dead-lettered messages back to their queue (all if `ids` is `None`); returns how
    /// many moved.
    async fn requeue_dead_letters(&self, queue: &str, ids: Option<&[String]>) -> Result<usize>;

    /// Deletes the dead letters of `queue`; returns how many.
    async fn purge_dead_letters(&self, queue: &str) -> Result<usize>;

    /// Deletes the dead letters of `queue` whose ids are in `ids`; returns how many.
    ///
    /// The default says [`Error::Unsupported`]; brokers that can address one dead letter
    /// override it.
    ///
    /// ```
    /// use actor_runtime::{Broker, StubBroker};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let broker = StubBroker::new();
    /// broker.declare_queue("default").await.unwrap();
    /// let gone = broker.delete_dead_letters("default", &["no-such-id".into()]).await.unwrap();
    /// assert_eq!(gone, 0);
    /// # });
    /// ```
    async fn delete_dead_letters(&self, queue: &str, ids: &[String]) -> Result<usize> {
        let _ = (queue, ids);
        Err(Error::Unsupported("deleting chosen dead letters"))
    }

    /// The worker processes consuming from this broker, from their heartbeats, or `None` when
    /// the broker cannot tell (the default: the stub broker lives in one process).
    ///
    /// ```
    /// use actor_runtime::{Broker, StubBroker};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(StubBroker::new().workers().await.unwrap().is_none());
    /// # });
    /// ```
    async fn workers(&self) -> Result<Option<Vec<WorkerInfo>>> {
        Ok(None)
    }

    /// This process's id among the broker's workers (as [`Broker::workers`] lists it), where
    /// the broker keeps heartbeats; `None` by default.
    ///
    /// ```
    /// use actor_runtime::{Broker, StubBroker};
    ///
    /// assert_eq!(Broker::worker_id(&StubBroker::new()), None);
    /// ```
    fn worker_id(&self) -> Option<&str> {
        None
    }

    /// Requeues now the fetched, unacked messages of worker `worker_id`, a process known to
    /// be dead (its supervisor saw it exit), rather than once its heartbeat times out.
    /// Returns how many came back; the default has none to recover.
    ///
    /// ```
    /// use actor_runtime::{Broker, StubBroker};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert_eq!(StubBroker::new().recover_worker("gone").await.unwrap(), 0);
    /// # });
    /// ```
    async fn recover_worker(&self, worker_id: &str) -> Result<u64> {
        let _ = worker_id;
        Ok(0)
    }

    /// Stops background tasks (heartbeats, maintenance).
    async fn close(&self) {}
}

/// Counts of one queue's messages, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Waiting to be fetched.
    pub ready: u64,
    /// Waiting in the delay queue.
    pub delayed: u64,
    /// Fetched by a consumer and not yet acked (prefetched or running).
    pub in_flight: u64,
    /// Dead-lettered.
    pub dead: u64,
}

/// A live worker process, as its heartbeats show it to [`Broker::workers`].
///
/// ```
/// use actor_runtime::broker::WorkerInfo;
///
/// let worker = WorkerInfo::new("0b5d7a4e", 1_700_000_000_000);
/// assert_eq!(worker.id, "0b5d7a4e");
/// assert!(worker.queues.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The broker's id for the worker (Dramatiq's heartbeat member).
    pub id: String,
    /// Its last heartbeat, ms since the epoch.
    pub last_heartbeat: u64,
    /// Queues it holds fetched messages of, where the broker knows them.
    pub queues: Vec<String>,
    /// How many fetched, unacked messages it holds, where the broker knows.
    pub in_flight: Option<u64>,
    /// It missed heartbeats (none for one and a half heartbeat intervals): likely dead, its
    /// messages held until its heartbeat times out. (A busy Python worker only beats when
    /// it uses Redis, so it can look stale while alive.)
    pub stale: bool,
}

impl WorkerInfo {
    /// A worker seen at `last_heartbeat` (ms since the epoch), queues unknown.
    ///
    /// ```
    /// let worker = actor_runtime::broker::WorkerInfo::new("w1", actor_runtime::now_ms());
    /// assert_eq!(worker.in_flight, None);
    /// ```
    pub fn new(id: impl Into<String>, last_heartbeat: u64) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            last_heartbeat,
            queues: Vec::new(),
            in_flight: None,
            stale: false,
        }
    }
}

/// What [`Broker::describe`] tells about a broker: what the start-up logs and the CLI's
/// `check` show. Secrets never appear in it.
///
/// ```
/// use actor_runtime::{Broker, StubBroker};
///
/// let info = StubBroker::new().describe();
/// assert_eq!(info.kind, "stub");
/// assert!(info.url.is_none() && info.settings.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerInfo {
    /// [`Broker::kind`].
    pub kind: &'static str,
    /// The server's URL, its password and secret query values replaced by `***`.
    pub url: Option<String>,
    /// The database index, for brokers that have one.
    pub db: Option<i64>,
    /// The key namespace, for brokers that have one.
    pub namespace: Option<String>,
    /// Other settings, by name, as people read them (`"5s"`, `"10"`).
    pub settings: Vec<(&'static str, String)>,
}

impl BrokerInfo {
    /// A broker of `kind`, nothing else known.
    ///
    /// ```
    /// assert_eq!(actor_runtime::broker::BrokerInfo::new("sqs").kind, "sqs");
    /// ```
    pub fn new(kind: &'static str) -> BrokerInfo {
        BrokerInfo {
            kind,
            ..BrokerInfo::default()
        }
    }
}

/// `d` as people write it and [`cli`](crate::cli)'s settings read it: `100ms`, `5s`, `10m`,
/// `24h`, `7500ms`.
#[cfg_attr(not(any(feature = "redis", feature = "cli")), allow(dead_code))]
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// A dead-lettered message.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The broker's id for it.
    pub id: String,
    /// The message, or why it could not be read.
    pub message: std::result::Result<Message, String>,
    /// When it was dead-lettered, ms since the epoch.
    pub dead_at: u64,
    /// Why it was dead-lettered, where the broker keeps it.
    pub reason: Option<String>,
}

/// Identifies a fetched message to its consumer for ack, nack or requeue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryTag {
    /// The queue the message was fetched from (`name` or `name.DQ`).
    pub queue: Arc<str>,
    /// The broker's id of this copy (the Redis message id).
    pub id: String,
}

/// A fetched message.
pub struct Delivery {
    /// For ack, nack and requeue.
    pub tag: DeliveryTag,
    /// The payload's size in bytes as the broker stores it (what the worker's byte budget
    /// counts).
    pub size: usize,
    /// The decoded message, or why decoding failed (the message is then dead-lettered).
    pub message: std::result::Result<Message, DecodeError>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("tag", &self.tag)
            .field("message", &self.message.as_ref().map(|m| &m.actor_name))
            .finish()
    }
}

/// Fetches one queue's messages for a worker.
///
/// A worker fetches only while it has room (its prefetch budget), with a zero `timeout`, and
/// waits for the queue with [`wait`](Consumer::wait) while holding no budget, so an idle
/// queue never keeps another queue of the same worker waiting.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Up to `max` due messages; waits up to `timeout` for the first one and returns an empty
    /// batch when none came.
    async fn fetch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>>;

    /// [`fetch`](Consumer::fetch), stopping before the payloads add up to more than
    /// `max_bytes`, but always with at least one message when one is due. The default
    /// ignores `max_bytes`.
    async fn fetch_bounded(
        &self,
        max: usize,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>> {
        let _ = max_bytes;
        self.fetch(max, timeout).await
    }

    /// Waits until a fetch may find what the previous one did not (messages pushed since it
    /// began, a delayed message due) or `timeout` passed; returns at once if something
    /// already arrived since the previous fetch began. A spurious return is allowed.
    ///
    /// The default waits `timeout`, at most 100 ms: a consumer that cannot be woken polls.
    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout.min(Duration::from_millis(100))).await;
    }

    /// Marks messages done: they leave the broker.
    async fn ack(&self, tags: &[DeliveryTag]) -> Result<()>;

    /// Dead-letters a message, recording `reason`.
    async fn nack(&self, tag: &DeliveryTag, reason: &str) -> Result<()>;

    /// Returns fetched, unprocessed messages to their queue.
    async fn requeue(&self, tags: &[DeliveryTag]) -> Result<()>;

    /// Stops consuming; returns anything still held back (e.g. delayed messages in memory).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Wakes the consumers waiting for one queue. It counts its wake-ups, so a consumer that
/// notes the count before fetching knows, when it comes to wait, whether something arrived
/// in between (a plain `Notify` would lose that wake-up).
#[derive(Debug, Default)]
pub(crate) struct Wake {
    notify: Notify,
    generation: AtomicU64,
}

impl Wake {
    /// Wakes every waiter, and those about to wait.
    pub(crate) fn wake(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// The count of wake-ups so far; note it before fetching.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Waits for a wake-up after generation `seen`, or until `until`.
    pub(crate) async fn wait(&self, seen: u64, until: Instant) {
        let woken = self.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if self.generation() != seen {
            return;
        }
        let _ = tokio::time::timeout_at(until, woken).await;
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    later(Instant::now(), timeout)
}

/// `at + by`, saturating 30 years after `at` (never reached) instead of overflowing, which
/// panics: timeouts and TTLs may be `Duration::MAX` or come from a message.
pub(crate) fn later(at: Instant, by: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    at.checked_add(by.min(FAR)).unwrap_or(at)
}

/// The eta of `message` enqueued now with `delay`, or [`Error::DelayTooLong`].
pub(crate) fn eta_for(message: &Message, delay: Duration) -> Result<u64> {
    crate::message::eta_after(delay).ok_or_else(|| Error::DelayTooLong {
        queue: crate::message::canonical_queue(&message.queue_name).to_owned(),
        message_id: message.message_id.clone(),
        actor: crate::truncate::truncate(&message.actor_name).into_owned(),
        delay,
    })
}

static GLOBAL: RwLock<Option<Arc<dyn Broker>>> = RwLock::new(None);
static FROM_ENV: OnceLock<std::result::Result<Arc<dyn Broker>, String>> = OnceLock::new();

/// Sets the broker that `send` and workers use by default (Dramatiq's `set_broker`).
///
/// It is one per process: tests running in parallel threads share it. Give each test a broker
/// of its own with [`with_broker`] (or [`testing::TestBroker`](crate::testing::TestBroker)).
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::{get_broker, set_broker, StubBroker};
///
/// set_broker(Arc::new(StubBroker::new()));
/// assert_eq!(get_broker().unwrap().kind(), "stub");
/// ```
pub fn set_broker(broker: Arc<dyn Broker>) {
    *GLOBAL.write().unwrap_or_else(|e| e.into_inner()) = Some(broker);
}

/// The broker `send` uses: the one of the innermost [`with_broker`] scope around this task,
/// else the global one given to [`set_broker`], else one built once from the environment (see
/// [`broker_from_env`]).
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::{get_broker, with_broker, Broker, StubBroker};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let scoped: Arc<dyn Broker> = Arc::new(StubBroker::new());
/// let seen = with_broker(scoped.clone(), async { get_broker().unwrap() }).await;
/// assert!(Arc::ptr_eq(&seen, &scoped));
/// # });
/// ```
pub fn get_broker() -> Result<Arc<dyn Broker>> {
    if let Some(broker) = scope::scoped() {
        return Ok(broker);
    }
    if let Some(broker) = GLOBAL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(broker.clone());
    }
    // The error's own text: it becomes a `Config` error again below.
    let built = FROM_ENV.get_or_init(|| {
        broker_from_env().map_err(|e| match e {
            Error::Config(message) => message,
            other => other.to_string(),
        })
    });
    match built {
        Ok(broker) => {
            let mut global = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
            Ok(global.get_or_insert_with(|| broker.clone()).clone())
        }
        Err(msg) => Err(Error::Config(msg.clone())),
    }
}

/// The environment names a production deployment (`APP_ENV`, `ENVIRONMENT` or `ENV` is
/// `production`/`prod`).
pub fn environment_is_production() -> bool {
    ["APP_ENV", "ENVIRONMENT", "ENV"].iter().any(|key| {
        std::env::var(key)
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "production" | "prod"
                )
            })
            .unwrap_or(false)
    })
}

/// A broker chosen from the environment: `REDIS_URL` set means Redis; unset means the
/// in-memory stub with a warning, or an error when the environment says production.
pub fn broker_from_env() -> Result<Arc<dyn Broker>> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => crate::redis_from_env(url.trim()),
        _ if environment_is_production() => Err(Error::Config(
            "REDIS_URL is not set but the environment is production; refusing to use the \
             in-memory stub broker (messages would be lost on exit)"
                .into(),
        )),
        _ => {
            tracing::warn!(
                "REDIS_URL is not set: using the in-memory stub broker; messages live only in \
                 this process"
            );
            Ok(Arc::new(stub::StubBroker::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_shown_in_the_largest_whole_unit() {
        let ms = Duration::from_millis;
        assert_eq!(human_duration(ms(0)), "0s");
        assert_eq!(human_duration(ms(100)), "100ms");
        assert_eq!(human_duration(ms(7500)), "7500ms");
        assert_eq!(human_duration(ms(5000)), "5s");
        assert_eq!(human_duration(ms(60_000)), "1m");
        assert_eq!(human_duration(ms(86_400_000)), "24h");
    }
}
