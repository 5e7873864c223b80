//! What a broker stores messages in: the [`Backend`] storage trait, the capability traits a
//! backend may add ([`DeadLetters`], [`Workers`]), and the delivery types consumers hand to
//! workers.
//!
//! A new broker implements [`Backend`] (and [`Consumer`] for its fetches) and nothing else:
//! the [`Broker`](crate::Broker) around it runs the middleware, builds the delay envelope and
//! validates messages, the same for every backend.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::message::{DecodeError, Message};

/// Storage for messages: Redis in production, [`StubBackend`](super::StubBackend) in tests
/// and when nothing is configured. Wrap one in a [`Broker`](crate::Broker) to use it.
///
/// A backend stores messages per queue, hands them to consumers, and keeps fetched messages
/// until they are acked (done), nacked (dead-lettered) or requeued. A message it is given to
/// store names its destination in `queue_name`: the queue `q`, or its delay queue `q.DQ`, in
/// which case its `eta` option says when it is due (the [`Broker`](crate::Broker) builds
/// that envelope). Consumers only return due messages, with the envelope undone
/// ([`Message::undelayed`]).
///
/// ```
/// use actor_runtime::broker::{Backend, StubBackend};
/// use actor_runtime::Message;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let backend = StubBackend::new();
/// backend.enqueue(vec![Message::new("default", "noop", vec![])]).await.unwrap();
/// assert_eq!(backend.stats("default").await.unwrap().ready, 1);
/// # });
/// ```
#[async_trait]
pub trait Backend: Any + Send + Sync {
    /// `"stub"`, `"redis"`...
    fn kind(&self) -> &'static str;

    /// Where this backend keeps its queues and how it is set up, its secrets redacted, for
    /// start-up logs and `check`. Does no I/O. The default names only the
    /// [`kind`](Backend::kind).
    ///
    /// ```
    /// use actor_runtime::Broker;
    /// use actor_runtime::broker::RedisConfig;
    ///
    /// let broker = Broker::redis(RedisConfig::new("redis://:secret@localhost/3").namespace("app")).unwrap();
    /// let info = broker.describe();
    /// assert_eq!(info.url.as_deref(), Some("redis://:***@localhost/3"));
    /// assert_eq!((info.db, info.namespace.as_deref()), (Some(3), Some("app")));
    /// ```
    fn describe(&self) -> BrokerInfo {
        BrokerInfo::new(self.kind())
    }

    /// Checks once that the server answers, without retrying and without starting
    /// background tasks (heartbeats...): a start-up check that fails at once, with
    /// [`Error::Connection`], when the server is unreachable (the Redis backend sends one
    /// `PING`). The default, for in-process backends, always succeeds.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Makes `queue` (and its delay queue) known; idempotent. Refuses an invalid name with
    /// [`Error::InvalidQueueName`].
    async fn declare_queue(&self, queue: &str) -> Result<()>;

    /// Queues declared so far, canonical names, sorted.
    fn queues(&self) -> Vec<String>;

    /// Stores `messages`, each in the queue its `queue_name` names (declaring it), in as few
    /// round trips as the backend allows. Returns them as stored (with the backend's ids),
    /// in order. Either every message is stored or an error says none of a failed round trip
    /// was.
    async fn enqueue(&self, messages: Vec<Message>) -> Result<Vec<Message>>;

    /// [`enqueue`](Backend::enqueue) for one message: the path of every single send, which a
    /// backend may make cheaper than a batch of one (the Redis backend shares one round trip
    /// among concurrent senders). By default, a batch of one.
    async fn enqueue_one(&self, message: Message) -> Result<Message> {
        self.enqueue(vec![message])
            .await?
            .pop()
            .ok_or(Error::Closed)
    }

    /// Starts consuming `queue` (and its due delayed messages).
    async fn consume(&self, queue: &str, prefetch: usize) -> Result<Box<dyn Consumer>>;

    /// Drops every message of `queue`: ready, delayed and dead-lettered.
    async fn flush(&self, queue: &str) -> Result<()>;

    /// Waits until `queue` and its delay queue are empty and nothing fetched is unacked.
    ///
    /// With `fail_fast`, returns [`Error::DeadLettered`] as soon as a message of the queue is
    /// dead-lettered while waiting (so a test sees the actor's error, not a timeout).
    async fn join(&self, queue: &str, timeout: Option<Duration>, fail_fast: bool) -> Result<()>;

    /// Counts of the queue's messages by state.
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// The backend's dead letters, where it keeps them so they can be listed and requeued.
    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        None
    }

    /// The backend's view of worker processes, where it keeps heartbeats.
    fn workers(&self) -> Option<&dyn Workers> {
        None
    }

    /// Stops background tasks (heartbeats, maintenance).
    async fn close(&self) {}

    /// The backend's uniqueness keys, where it can claim one atomically with storing a
    /// message (see [`unique`](crate::unique)).
    fn unique_keys(&self) -> Option<&dyn crate::broker::UniqueKeys> {
        None
    }

    /// The backend's view into its queues' messages, where it can list them without
    /// consuming them.
    fn inspect(&self) -> Option<&dyn super::Inspect> {
        None
    }

    /// The backend's store of paused queues, which its consumers honour.
    fn pause(&self) -> Option<&dyn super::Pause> {
        None
    }

    /// Where workers count what they process, for the backend to report with its
    /// heartbeats (see [`Inspect::activity`](super::Inspect::activity)).
    fn activity_counter(&self) -> Option<std::sync::Arc<super::ActivityCounter>> {
        None
    }
}

/// A backend that keeps dead-lettered messages where they can be listed, requeued and
/// deleted ([`Backend::dead_letters`]).
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Dead-lettered messages of `queue`, oldest first, at most `limit`.
    async fn list(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Moves dead-lettered messages back to their queue (all if `ids` is `None`); returns how
    /// many moved.
    async fn requeue(&self, queue: &str, ids: Option<&[String]>) -> Result<usize>;

    /// Deletes the dead letters of `queue` (all if `ids` is `None`); returns how many.
    async fn delete(&self, queue: &str, ids: Option<&[String]>) -> Result<usize>;
}

/// A backend that knows the worker processes consuming from it, from their heartbeats
/// ([`Backend::workers`]).
#[async_trait]
pub trait Workers: Send + Sync {
    /// The worker processes, from their heartbeats.
    async fn list(&self) -> Result<Vec<WorkerInfo>>;

    /// This process's id among them.
    fn worker_id(&self) -> &str;

    /// Requeues now the fetched, unacked messages of worker `worker_id`, a process known to
    /// be dead (its supervisor saw it exit), rather than once its heartbeat times out.
    /// Returns how many came back.
    async fn recover(&self, worker_id: &str) -> Result<u64>;
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

/// A live worker process, as its heartbeats show it to [`Broker::workers`](crate::Broker::workers).
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
    /// let worker = actor_runtime::broker::WorkerInfo::new("w1", actor_runtime::message::now_ms());
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

/// What [`Broker::describe`](crate::Broker::describe) tells about a broker: what the start-up logs and the CLI's
/// `check` show. Secrets never appear in it.
///
/// ```
/// use actor_runtime::Broker;
///
/// let info = Broker::stub().describe();
/// assert_eq!(info.kind, "stub");
/// assert!(info.url.is_none() && info.settings.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerInfo {
    /// [`Backend::kind`].
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
#[cfg_attr(
    not(any(feature = "redis", feature = "cli", feature = "rabbitmq")),
    allow(dead_code)
)]
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
