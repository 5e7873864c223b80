//! The Redis broker: production storage, wire-compatible with Python Dramatiq 2.x.
//!
//! Python and Rust producers and workers can share one Redis: the keys, the message JSON
//! and the operations are Dramatiq 2.2's (see `dramatiq-wire.md` §1), implemented with our
//! own Lua scripts (`lua/`, one per operation, loaded once and called by SHA).
//!
//! Where it does better than Dramatiq, and where it differs:
//! - **Heartbeats** run on an OS thread of their own, with their own connection: an actor
//!   that blocks the worker's runtime (even a single-threaded one) cannot stop them, so a
//!   live worker's messages are never taken for a dead one's and run twice.
//! - **Dead workers** (Rust or Python) are found on a timer and their fetched messages, in
//!   every queue, come back within about one heartbeat timeout; found with `SCAN`, not `KEYS`.
//! - **Delayed messages** move from `q.DQ` to `q` in one atomic script: no duplicate when a
//!   worker dies mid-move (Dramatiq #431). They cost a worker memory by count, not size: it
//!   holds ids, etas and sizes (about 150 bytes a message, up to
//!   [`RedisConfig::delay_prefetch`] per queue) and reads a payload only when it is due, in
//!   batches of at most 8 MiB. Dramatiq holds the whole messages until due.
//! - **Pickup latency**: idle consumers wait on Redis keyspace notifications (enabled with
//!   `CONFIG SET` when allowed), so a message pushed by any producer is picked up in about a
//!   millisecond; without them consumers poll every [`RedisConfig::poll_interval`].
//! - **Bad payloads**: an id without payload is skipped and dropped with a warning (#266);
//!   an undecodable payload, or a delayed one due more than [`MAX_DELAY`](crate::MAX_DELAY)
//!   away, is dead-lettered with its reason rather than looping or waiting forever.
//! - **Requeue** (unstarted messages at shutdown, recovered messages) puts messages back at
//!   the *head* of the queue in their original order; Dramatiq appends them to the tail.
//! - **Dead-letter reasons** are kept in `{ns}:{q}.XQ.reasons`, a hash Python ignores.
//! - **Dead letters** expire after 24 h by default (Dramatiq: 7 days), in every queue of the
//!   namespace, including those Python workers dead-lettered.
//! - **Connection failures and timeouts** are retried with backoff for
//!   [`RedisConfig::retry_timeout`], then surface as [`Error::Connection`].

mod admin;
mod coalesce;
mod config;
pub(crate) mod conn;
mod consumer;
mod delayed;
mod enqueue;
mod find;
pub(crate) use find::{Found, Place};
mod inspect;
mod keys;
mod maintenance;
mod notify;
#[cfg(feature = "periodic")]
pub(crate) mod periodic;
mod retry;
mod scripts;
mod unique;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backend::{
    human_duration, Backend, BrokerInfo, Consumer, DeadLetter, DeadLetters, QueueStats, WorkerInfo,
    Workers,
};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, is_valid_queue_name, Message};

pub use config::RedisConfig;

use conn::Conn;
use delayed::Delayed;
use keys::{Keys, QueueKeys};
use notify::{Notifier, QueueSignal};

/// The production broker: queues in Redis, shared with Python Dramatiq 2.x workers and
/// producers using the same namespace.
///
/// Building it does no I/O: it connects on first use, so an unreachable server surfaces as
/// [`Error::Connection`] from the first operation (after retrying for
/// [`RedisConfig::retry_timeout`]). Background tasks (heartbeats, dead-worker recovery,
/// dead-letter expiry, keyspace notifications) start on first use and stop on
/// [`close`](crate::Broker::close).
///
/// ```no_run
/// use actor_runtime::broker::{RedisBackend, RedisConfig};
/// use actor_runtime::{set_broker, Broker, Message};
///
/// # async fn run() -> actor_runtime::Result<()> {
/// let backend = RedisBackend::new(RedisConfig::new("redis://127.0.0.1:6379/0"))?;
/// let broker = Broker::new(backend); // or Broker::redis(config)
/// set_broker(broker.clone());
/// broker.enqueue(Message::new("default", "add", vec![1.into(), 2.into()]), None).await?;
/// println!("{:?}", broker.stats("default").await?);
/// broker.close().await;
/// # Ok(())
/// # }
/// ```
pub struct RedisBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.shared.config)
            .field("worker_id", &self.shared.worker_id)
            .finish()
    }
}

/// What the broker, its consumers and its background tasks share.
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) conn: Arc<Conn>,
    pub(crate) keys: Keys,
    /// This process's id in heartbeats and ack-set names (Dramatiq's `broker_id`).
    pub(crate) worker_id: String,
    declared: Mutex<BTreeSet<String>>,
    queues: Mutex<HashMap<String, Arc<QueueState>>>,
    notifier: Arc<Notifier>,
    /// Concurrent single enqueues, sharing script calls.
    enqueues: enqueue::Enqueues,
    /// What this process's workers processed since the last heartbeat reported it.
    pub(crate) activity: Arc<crate::broker::ActivityCounter>,
    /// Set while each background task runs.
    heartbeat_running: Arc<AtomicBool>,
    maintenance_running: Arc<AtomicBool>,
    notifier_running: Arc<AtomicBool>,
    stop: CancellationToken,
    tasks: TaskTracker,
    closed: AtomicBool,
}

/// Clears its flag when the task holding it ends or is dropped with its runtime.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One consumed queue of this process, shared by its consumers.
pub(crate) struct QueueState {
    pub(crate) name: Arc<str>,
    pub(crate) keys: QueueKeys,
    /// Serialises whatever adds ids to this process's ack sets (fetches) with reclaiming.
    pub(crate) lock: tokio::sync::Mutex<DqPoll>,
    /// Ids handed to the worker and not yet acked, nacked or requeued.
    pub(crate) outstanding: Mutex<HashSet<String>>,
    pub(crate) delayed: Mutex<Delayed>,
    pub(crate) signal: Arc<QueueSignal>,
    /// A fetch failed after possibly popping ids: adopt orphans from our ack sets first.
    pub(crate) needs_reclaim: AtomicBool,
    /// Whether an operator paused the queue, as last read.
    pub(crate) pause: inspect::PauseFlag,
}

/// When the delay queue was last fetched from (guarded by `QueueState::lock`).
#[derive(Debug, Default)]
pub(crate) struct DqPoll {
    pub(crate) last: Option<tokio::time::Instant>,
    pub(crate) gen: u64,
}

impl QueueState {
    pub(crate) fn outstanding(&self) -> MutexGuard<'_, HashSet<String>> {
        self.outstanding.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn delayed(&self) -> MutexGuard<'_, Delayed> {
        self.delayed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RedisBackend {
    /// A broker for `config`. Checks the settings but does not connect.
    pub fn new(config: RedisConfig) -> Result<RedisBackend> {
        config.validate()?;
        let conn = Conn::for_config(&config)?;
        let keys = Keys::new(&config.namespace);
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                config,
                conn,
                keys,
                worker_id: uuid::Uuid::new_v4().to_string(),
                declared: Mutex::new(BTreeSet::new()),
                queues: Mutex::new(HashMap::new()),
                notifier: Arc::new(Notifier::default()),
                enqueues: enqueue::coalescer(),
                activity: Arc::default(),
                heartbeat_running: Arc::new(AtomicBool::new(false)),
                maintenance_running: Arc::new(AtomicBool::new(false)),
                notifier_running: Arc::new(AtomicBool::new(false)),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// [`RedisBackend::new`] with [`RedisConfig::from_env`].
    pub fn from_env() -> Result<RedisBackend> {
        RedisBackend::new(RedisConfig::from_env()?)
    }

    /// This process's worker id, as it appears in `__heartbeats__` and ack-set names.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// The settings it was built with.
    pub(crate) fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        self.shared.keys.namespace()
    }

    /// Runs one maintenance pass now (what the timer does): requeues dead workers' messages
    /// and purges expired dead letters. Returns (messages recovered, dead letters purged).
    pub async fn run_maintenance(&self) -> Result<(u64, u64)> {
        self.shared.start()?;
        let recovered = maintenance::recover_dead_workers(&self.shared).await?;
        let purged = maintenance::purge_expired_dead_letters(&self.shared).await?;
        Ok((recovered, purged))
    }
}

impl Shared {
    /// Spawns `task` as its own tokio task unless the one flagged by `running` still runs.
    fn spawn_once<F>(&self, running: &Arc<AtomicBool>, task: impl FnOnce() -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if running.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = task();
        let guard = Running(running.clone());
        self.tasks.spawn(async move {
            let _running = guard;
            task.await;
        });
    }

    /// Runs `task` on an OS thread of its own, with a runtime of its own, unless the one
    /// flagged by `running` still runs: nothing an actor does to the worker's runtime (block
    /// its only thread, say) can delay it.
    fn spawn_thread_once<F>(
        &self,
        name: &str,
        running: &Arc<AtomicBool>,
        task: impl FnOnce() -> F + Send + 'static,
    ) where
        F: std::future::Future<Output = ()> + 'static,
    {
        if running.swap(true, Ordering::AcqRel) {
            return;
        }
        let guard = Running(running.clone());
        // `close` waits for the thread's task like any other.
        let tracked = self.tasks.token();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let (_running, _tracked) = (guard, tracked);
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(task()),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot start a runtime for a broker timer")
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, thread = name, "cannot start a broker timer thread");
        }
    }

    /// Starts the timers on first use (and again if their runtime went away, as happens
    /// to a global broker shared by tests each with their own runtime); fails once the
    /// broker is closed.
    fn start(self: &Arc<Self>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (shared, stop) = (Arc::downgrade(self), self.stop.clone());
        self.spawn_thread_once("actor-heartbeat", &self.heartbeat_running, move || {
            maintenance::heartbeat_loop(shared, stop)
        });
        self.spawn_once(&self.maintenance_running, || {
            maintenance::maintenance_loop(Arc::downgrade(self), self.stop.clone())
        });
        if self.config.keyspace_notifications && self.notifier.is_watching() {
            self.spawn_once(&self.notifier_running, || {
                self.notifier.clone().run(
                    self.conn.clone(),
                    self.keys.clone(),
                    self.config.poll_interval,
                    self.stop.clone(),
                )
            });
        }
        Ok(())
    }

    fn declare(&self, queue: &str) -> Result<()> {
        let mut declared = self.declared.lock().unwrap_or_else(|e| e.into_inner());
        // A declared name was checked when it was declared: every send after the first
        // costs a lookup, not a second check.
        if !declared.contains(queue) {
            if !is_valid_queue_name(queue) {
                return Err(Error::InvalidQueueName(queue.to_owned()));
            }
            declared.insert(queue.to_owned());
        }
        Ok(())
    }

    /// The state of consumed queue `queue`, watching it for notifications.
    fn queue_state(self: &Arc<Self>, queue: &str) -> Arc<QueueState> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = queues.get(queue) {
            return state.clone();
        }
        let signal = if self.config.keyspace_notifications {
            self.notifier.watch(queue)
        } else {
            Arc::new(QueueSignal::default())
        };
        let state = Arc::new(QueueState {
            name: Arc::from(queue),
            keys: self.keys.queue(queue, &self.worker_id),
            lock: tokio::sync::Mutex::new(DqPoll::default()),
            outstanding: Mutex::new(HashSet::new()),
            delayed: Mutex::new(Delayed::default()),
            signal,
            needs_reclaim: AtomicBool::new(false),
            pause: inspect::PauseFlag::default(),
        });
        queues.insert(queue.to_owned(), state.clone());
        state
    }

    /// The state of `queue` if this process consumes it.
    fn consumed(&self, queue: &str) -> Option<Arc<QueueState>> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .cloned()
    }
}

/// The canonical name of `queue`, checked.
pub(super) fn checked_queue(queue: &str) -> Result<&str> {
    let name = canonical_queue(queue);
    if is_valid_queue_name(name) {
        Ok(name)
    } else {
        Err(Error::InvalidQueueName(queue.to_owned()))
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn describe(&self) -> BrokerInfo {
        let config = &self.shared.config;
        let optional = |d: Option<Duration>| d.map_or_else(|| "off".to_owned(), human_duration);
        let mut info = BrokerInfo::new(self.kind());
        info.url = Some(config::redact(&config.url));
        info.db = Some(self.shared.conn.db());
        info.namespace = Some(self.namespace().to_owned());
        info.settings = vec![
            ("max_connections", config.max_connections.to_string()),
            ("connect_timeout", human_duration(config.connect_timeout)),
            ("read_timeout", human_duration(config.read_timeout)),
            ("retry_timeout", human_duration(config.retry_timeout)),
            ("tcp_keepalive", optional(config.tcp_keepalive)),
            (
                "heartbeat_timeout",
                human_duration(config.heartbeat_timeout),
            ),
            (
                "heartbeat_interval",
                human_duration(config.heartbeat_interval_or_default()),
            ),
            (
                "maintenance_interval",
                human_duration(config.maintenance_interval_or_default()),
            ),
            ("dead_message_ttl", human_duration(config.dead_message_ttl)),
            (
                "keyspace_notifications",
                if config.keyspace_notifications {
                    "on"
                } else {
                    "off"
                }
                .to_owned(),
            ),
            ("delay_prefetch", config.delay_prefetch.to_string()),
            ("max_message_size", config.limits.max_size.to_string()),
            ("message_size_warning", config.limits.warn_size.to_string()),
        ];
        info
    }

    async fn ping(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.shared.conn.ping().await
    }

    async fn declare_queue(&self, queue: &str) -> Result<()> {
        self.shared.declare(checked_queue(queue)?)?;
        Ok(())
    }

    fn queues(&self) -> Vec<String> {
        let declared = self
            .shared
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        declared.iter().cloned().collect()
    }

    async fn enqueue(&self, messages: Vec<Message>) -> Result<Vec<Message>> {
        enqueue::enqueue(&self.shared, messages).await
    }

    async fn enqueue_one(&self, message: Message) -> Result<Message> {
        enqueue::enqueue_one(&self.shared, message).await
    }

    async fn consume(&self, queue: &str, _prefetch: usize) -> Result<Box<dyn Consumer>> {
        self.shared.start()?;
        let queue = checked_queue(queue)?;
        self.shared.declare(queue)?;
        let state = self.shared.queue_state(queue);
        // Now that a queue is watched, the notifier starts.
        self.shared.start()?;
        Ok(Box::new(consumer::RedisConsumer::new(
            self.shared.clone(),
            state,
        )))
    }

    async fn flush(&self, queue: &str) -> Result<()> {
        self.shared.start()?;
        admin::flush(&self.shared, checked_queue(queue)?).await
    }

    async fn join(&self, queue: &str, timeout: Option<Duration>, fail_fast: bool) -> Result<()> {
        self.shared.start()?;
        admin::join(&self.shared, checked_queue(queue)?, timeout, fail_fast).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.shared.start()?;
        admin::stats(&self.shared, checked_queue(queue)?).await
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    fn workers(&self) -> Option<&dyn Workers> {
        Some(self)
    }

    fn unique_keys(&self) -> Option<&dyn crate::broker::UniqueKeys> {
        Some(self)
    }

    fn inspect(&self) -> Option<&dyn crate::broker::Inspect> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn crate::broker::Pause> {
        Some(self)
    }

    fn activity_counter(&self) -> Option<Arc<crate::broker::ActivityCounter>> {
        Some(self.shared.activity.clone())
    }

    async fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        if self.shared.conn.is_used() {
            admin::leave_heartbeats(&self.shared).await;
        }
    }
}

#[async_trait]
impl DeadLetters for RedisBackend {
    async fn list(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.shared.start()?;
        admin::dead_letters(&self.shared, checked_queue(queue)?, limit).await
    }

    async fn requeue(&self, queue: &str, ids: Option<&[String]>) -> Result<usize> {
        self.shared.start()?;
        admin::requeue_dead_letters(&self.shared, checked_queue(queue)?, ids).await
    }

    async fn delete(&self, queue: &str, ids: Option<&[String]>) -> Result<usize> {
        self.shared.start()?;
        let queue = checked_queue(queue)?;
        match ids {
            Some(ids) => admin::delete_dead_letters(&self.shared, queue, ids).await,
            None => admin::purge_dead_letters(&self.shared, queue).await,
        }
    }
}

#[async_trait]
impl Workers for RedisBackend {
    async fn list(&self) -> Result<Vec<WorkerInfo>> {
        self.shared.start()?;
        admin::workers(&self.shared).await
    }

    fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    async fn recover(&self, worker_id: &str) -> Result<u64> {
        // No timers: a supervisor recovering its dead workers is no worker itself.
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        maintenance::recover_worker(&self.shared, worker_id).await
    }
}
