//! Cancellation: stop a message by its id, whether it waits, is delayed or runs, from code,
//! from the CLI (`cancel <id>...`), or from a Python service with `dramatiq-abort`.
//!
//! The [`Cancellation`] middleware is opt-in: add it to the broker of the workers and of the
//! code that cancels. Workers without it pay nothing. With it, a worker:
//!
//! - checks each fetched batch for cancels in one Redis round trip (a pipeline of `EXISTS`),
//!   started as the batch arrives (the [`fetched`](crate::Middleware::fetched) hook), so a
//!   message about to run finds its answer ready. A message that waited more than a second
//!   after its batch's check, or that no worker fetch saw, is checked again as it starts
//!   (those checks share round trips too). A cancelled message is skipped, acked, and
//!   recorded as `cancelled` by the job records;
//! - watches the messages it runs with one task per process, which polls their abort events
//!   every [`poll_interval`](Cancellation::poll_interval) (200 ms) in one round trip, and
//!   only while something runs. An `async` actor is then stopped at its next await point;
//!   a plain `fn` actor sees [`cancel_requested`](crate::middleware::cancel_requested) and
//!   returns. An aborted message is acked (never retried nor dead-lettered) and recorded as
//!   `cancelled`.
//!
//! The events are those of the `dramatiq-abort` package's Redis backend (key layout and
//! values below), so a Python `dramatiq_abort.abort(message_id)` cancels messages our
//! workers hold or run, and our cancels reach Python workers with its `Abortable`
//! middleware, given one Redis and one namespace (`dramatiq:aborts:` by default).
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `{namespace}cancel:{message_id}` | LIST of `{}` | [`ttl`](Cancellation::ttl), 24 h (Python's default is 90 s) |
//! | `{namespace}abort:{message_id}` | LIST of `{"abort_timeout": <ms>}` | the same |
//!
//! [`Cancellation::cancel`] also says where the message was, as far as the broker can tell
//! ([`CancelOutcome`]): on Redis it searches the namespace's payloads (in pages, inside
//! Redis) for the message id. A message the broker no longer has is finished or was never
//! sent: the broker cannot tell which, so both are [`CancelOutcome::NotFound`]. The events are
//! written whatever the answer, which covers a message being moved meanwhile. RabbitMQ cannot
//! be searched: there the answer is [`CancelOutcome::Requested`], and the events live in the
//! Redis configured beside it (`REDIS_URL`).
//!
//! ```no_run
//! use actor_runtime::broker::RedisConfig;
//! use actor_runtime::cancel::{CancelOutcome, Cancellation};
//! use actor_runtime::Broker;
//!
//! # async fn demo() -> actor_runtime::Result<()> {
//! let config = RedisConfig::new("redis://127.0.0.1:6379/0");
//! let broker = Broker::redis(config.clone())?;
//! broker.add_middleware(Cancellation::redis(&config)?);
//! // ... workers run with this broker; later, anywhere with the same middleware:
//! match actor_runtime::cancel::cancel(&broker, "0f6b0c1e-8d3a-4c1e-9a53-5f4f3c2a1b0d").await? {
//!     CancelOutcome::NotFound => println!("already finished, or never sent"),
//!     outcome => println!("cancelled: {outcome}"),
//! }
//! # Ok(())
//! # }
//! ```

mod events;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::actor::ActorFailure;
use crate::broker::redis::conn::Conn;
use crate::broker::{
    Broker, CancelFlag, MessageContext, Middleware, RedisBackend, RedisConfig, Skip,
};
use crate::error::{Error, Result};
use crate::message::now_ms;
use crate::truncate::truncate;

use events::Events;

/// `dramatiq-abort`'s default key namespace (its `RedisBackend(namespace=...)`).
pub const DEFAULT_NAMESPACE: &str = "dramatiq:aborts:";

/// How long cancel events live by default: 24 hours, so a message waiting in a backlog is
/// still skipped when its turn comes (`dramatiq-abort` defaults to 90 s). A delayed message's
/// events live past its eta.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often a worker polls the abort events of the messages it runs, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Where a cancelled message was when [`Cancellation::cancel`] asked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// Waiting in `queue`: it will be skipped when fetched.
    Waiting {
        /// The queue.
        queue: String,
    },
    /// Fetched by a worker of `queue`: if it runs it is stopped, if it is about to run it is
    /// skipped.
    Held {
        /// The queue.
        queue: String,
    },
    /// Delayed in `queue` until `eta` (ms since the epoch): skipped when due.
    Delayed {
        /// The queue.
        queue: String,
        /// When it is due, if its payload says.
        eta: Option<u64>,
    },
    /// Dead-lettered already: nothing runs it unless an operator requeues it (then it is
    /// skipped, while the events live).
    DeadLettered {
        /// The queue.
        queue: String,
    },
    /// The broker does not have it: it finished (or was cancelled) already, or no message
    /// has this id. The broker cannot tell which.
    NotFound,
    /// Requested, but the broker cannot be searched (RabbitMQ): if the message waits or runs,
    /// it is cancelled.
    Requested,
}

impl CancelOutcome {
    /// Whether the message was still to run or running, so the cancel stops it.
    ///
    /// ```
    /// use actor_runtime::cancel::CancelOutcome;
    ///
    /// assert!(CancelOutcome::Waiting { queue: "default".into() }.stops_it());
    /// assert!(!CancelOutcome::NotFound.stops_it());
    /// ```
    pub fn stops_it(&self) -> bool {
        matches!(
            self,
            CancelOutcome::Waiting { .. }
                | CancelOutcome::Held { .. }
                | CancelOutcome::Delayed { .. }
        )
    }
}

impl fmt::Display for CancelOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelOutcome::Waiting { queue } => {
                write!(f, "waiting in {queue}: it will be skipped")
            }
            CancelOutcome::Held { queue } => write!(
                f,
                "held by a worker of {queue}: stopped if running, else skipped"
            ),
            CancelOutcome::Delayed { queue, .. } => {
                write!(f, "delayed in {queue}: it will be skipped when due")
            }
            CancelOutcome::DeadLettered { queue } => {
                write!(f, "already dead-lettered in {queue}")
            }
            CancelOutcome::NotFound => {
                f.write_str("not in the broker: finished already, or unknown")
            }
            CancelOutcome::Requested => f.write_str(
                "requested (this broker cannot tell where the message is): stopped if it waits or runs",
            ),
        }
    }
}

/// The opt-in middleware that skips cancelled messages and stops running ones (see the
/// [module docs](self)). Add it last-but-records: before the job records' recorder, so it
/// sees the cancel.
pub struct Cancellation {
    events: Events,
    ttl: Duration,
    poll_interval: Duration,
    abort_timeout: u64,
    running: Arc<Mutex<HashMap<String, CancelFlag>>>,
    checks: Checks,
    prechecked: Prechecked,
    watcher: Mutex<Option<CancellationToken>>,
}

impl fmt::Debug for Cancellation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancellation")
            .field("namespace", &self.events.namespace())
            .field("ttl", &self.ttl)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl Cancellation {
    /// Cancel events in the Redis of `config` (the broker's config shares its connections),
    /// under [`DEFAULT_NAMESPACE`]. Does not connect yet.
    ///
    /// ```
    /// use actor_runtime::broker::RedisConfig;
    /// use actor_runtime::cancel::Cancellation;
    ///
    /// let cancellation = Cancellation::redis(&RedisConfig::new("redis://127.0.0.1:6379/0"))
    ///     .unwrap()
    ///     .namespace("billing:aborts:");
    /// assert_eq!(cancellation.get_namespace(), "billing:aborts:");
    /// ```
    pub fn redis(config: &RedisConfig) -> Result<Cancellation> {
        Ok(Cancellation {
            events: Events::new(Conn::for_config(config)?, DEFAULT_NAMESPACE.to_owned()),
            ttl: DEFAULT_TTL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            abort_timeout: 0,
            running: Arc::default(),
            checks: Checks::default(),
            prechecked: Prechecked::default(),
            watcher: Mutex::new(None),
        })
    }

    /// For `broker`: on its own Redis connections when it is a Redis broker, else (RabbitMQ)
    /// in the Redis at `REDIS_URL`, or an [`Error::Unsupported`] when none is set.
    pub fn for_broker(broker: &Broker) -> Result<Cancellation> {
        if let Some(redis) = broker.backend_as::<RedisBackend>() {
            return Cancellation::redis(redis.config());
        }
        match std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            Some(url) => Cancellation::redis(&RedisConfig::new(url.trim())),
            None => Err(Error::Unsupported {
                what: "cancellation without a Redis beside it (set REDIS_URL)",
                broker: broker.kind(),
            }),
        }
    }

    /// The key namespace, `dramatiq-abort`'s `namespace` (default [`DEFAULT_NAMESPACE`]):
    /// every process that cancels or runs the messages must use the same one.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.events = Events::new(self.events_conn(), namespace.into());
        self
    }

    fn events_conn(&self) -> Arc<Conn> {
        self.events.conn()
    }

    /// The key namespace in use.
    pub fn get_namespace(&self) -> &str {
        self.events.namespace()
    }

    /// How long a cancel's events live (default [`DEFAULT_TTL`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// How often a worker polls the abort events of the messages it runs (default
    /// [`DEFAULT_POLL_INTERVAL`]): the most an abort waits before it reaches the actor.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The grace a running actor gets between the cancel flag and its stop (default none):
    /// `dramatiq-abort`'s `abort_timeout`, written in the events of [`cancel`](Self::cancel).
    pub fn abort_timeout(mut self, grace: Duration) -> Self {
        self.abort_timeout = grace.as_millis().min(u64::MAX as u128) as u64;
        self
    }

    /// Cancels the message `message_id`: writes its cancel events, then says where it was
    /// ([`CancelOutcome`]). A delayed message's events are made to outlive its eta.
    pub async fn cancel(&self, broker: &Broker, message_id: &str) -> Result<CancelOutcome> {
        self.events
            .notify(message_id, self.ttl, self.abort_timeout)
            .await?;
        let Some(redis) = broker.backend_as::<RedisBackend>() else {
            return Ok(CancelOutcome::Requested);
        };
        use crate::broker::redis::{Found, Place};
        let outcome = match redis.find_message(message_id).await? {
            None => CancelOutcome::NotFound,
            Some(Found { queue, place }) => match place {
                Place::Waiting => CancelOutcome::Waiting { queue },
                Place::Held => CancelOutcome::Held { queue },
                Place::Dead => CancelOutcome::DeadLettered { queue },
                Place::Delayed(eta) => {
                    if let Some(eta) = eta {
                        let until_due = Duration::from_millis(eta.saturating_sub(now_ms()));
                        if until_due > Duration::ZERO {
                            self.events
                                .extend(message_id, self.ttl.saturating_add(until_due))
                                .await?;
                        }
                    }
                    CancelOutcome::Delayed { queue, eta }
                }
            },
        };
        tracing::info!(message_id = %truncate(message_id), outcome = %outcome, "cancel requested");
        Ok(outcome)
    }

    /// Whether the message may be cancelled: its `abortable` option (Python's), true unless
    /// set to `false`.
    fn abortable(ctx: &MessageContext) -> bool {
        ctx.message
            .options
            .get("abortable")
            .and_then(Value::as_bool)
            != Some(false)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancelFlag>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the watcher task of running messages, once.
    fn watch(&self) {
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if watcher.as_ref().is_some_and(|stop| !stop.is_cancelled()) {
            return;
        }
        let stop = CancellationToken::new();
        *watcher = Some(stop.clone());
        let (events, running, interval) = (
            self.events.clone(),
            self.running.clone(),
            self.poll_interval,
        );
        tokio::spawn(watch_running(events, running, interval, stop));
    }
}

impl Drop for Cancellation {
    fn drop(&mut self) {
        if let Some(stop) = self
            .watcher
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stop.cancel();
        }
    }
}

/// Polls the abort events of the running messages every `interval`, in one round trip, while
/// any run; raises the flag of each one aborted, and stops it after its grace period.
async fn watch_running(
    events: Events,
    running: Arc<Mutex<HashMap<String, CancelFlag>>>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let ids: Vec<String> = running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for chunk in ids.chunks(1000) {
            let aborts = match events.take_aborts(chunk).await {
                Ok(aborts) => aborts,
                Err(err) => {
                    tracing::warn!(error = %err, "cancellation: polling abort events failed; retrying");
                    break;
                }
            };
            for (id, grace) in chunk.iter().zip(aborts) {
                let Some(grace) = grace else { continue };
                let flag = running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(id)
                    .cloned();
                let Some(flag) = flag else { continue };
                tracing::info!(message_id = %truncate(id), grace_ms = grace, "cancel requested for a running message");
                flag.requested.cancel();
                if grace == 0 {
                    flag.abort.cancel();
                } else {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(grace)).await;
                        flag.abort.cancel();
                    });
                }
            }
        }
    }
}

#[async_trait]
impl Middleware for Cancellation {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    fn hooks_fetched(&self) -> bool {
        true
    }

    /// Checks the fetched batch for cancels in one round trip, in the background.
    fn fetched(&self, _broker: &Broker, messages: &[&crate::Message]) {
        let ids: Vec<String> = messages
            .iter()
            .filter(|m| m.options.get("abortable").and_then(Value::as_bool) != Some(false))
            .map(|m| m.message_id.clone())
            .collect();
        if !ids.is_empty() {
            self.prechecked.check(&self.events, ids);
        }
    }

    async fn before_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
    ) -> std::result::Result<(), Skip> {
        if !Cancellation::abortable(ctx) {
            return Ok(());
        }
        let id = &ctx.message.message_id;
        let cancelled = match self.prechecked.answer(id).await {
            Some(cancelled) => cancelled,
            None => self.checks.is_cancelled(&self.events, id).await,
        };
        if cancelled {
            tracing::info!(message_id = %truncate(&ctx.message.message_id), actor = ctx.actor().name, queue = ctx.queue(), "message cancelled before it ran; skipping it");
            ctx.mark_cancelled();
            return Err(Skip);
        }
        let flag = CancelFlag::new();
        self.running()
            .insert(ctx.message.message_id.clone(), flag.clone());
        ctx.set_cancel_flag(flag);
        self.watch();
        Ok(())
    }

    async fn after_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
        _result: &std::result::Result<Value, ActorFailure>,
    ) {
        if ctx.cancel_flag().is_some() {
            self.running().remove(&ctx.message.message_id);
        }
    }

    async fn after_skip_message(&self, _broker: &Broker, ctx: &mut MessageContext) {
        if ctx.cancel_flag().is_some() {
            self.running().remove(&ctx.message.message_id);
        }
    }

    async fn after_worker_shutdown(&self, _broker: &Broker) {
        if let Some(stop) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stop.cancel();
        }
    }
}

/// The cancel checks of fetched batches: one round trip per batch, started when the batch
/// is fetched; a message about to run waits for its batch's answer (usually there already).
/// An answer older than [`PRECHECK_FRESH`] is not used: the message is checked again.
#[derive(Default)]
struct Prechecked {
    answers: Mutex<HashMap<String, (std::time::Instant, BatchAnswer)>>,
}

/// The cancelled ids of one batch, once its check returned (`None` until then).
type BatchAnswer = tokio::sync::watch::Receiver<Option<Arc<std::collections::HashSet<String>>>>;

/// How long a batch's check stands for a message waiting to run. Past it a cancel may have
/// come meanwhile, so the message is checked again. (A cancel that lands in between is
/// still seen: the message's abort event stops it within a poll interval of its start.)
const PRECHECK_FRESH: Duration = Duration::from_secs(1);

/// Past this many answers, those older than a minute (messages given back, dead-lettered
/// before the middleware ran) are dropped.
const PRECHECK_PRUNE: usize = 4096;

impl Prechecked {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (std::time::Instant, BatchAnswer)>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the check of `ids`, one round trip, in the background.
    fn check(&self, events: &Events, ids: Vec<String>) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let now = std::time::Instant::now();
        {
            let mut answers = self.lock();
            if answers.len() > PRECHECK_PRUNE {
                answers.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(60));
            }
            for id in &ids {
                answers.insert(id.clone(), (now, rx.clone()));
            }
        }
        let events = events.clone();
        tokio::spawn(async move {
            let cancelled = match events.cancelled(&ids).await {
                Ok(flags) => ids
                    .into_iter()
                    .zip(flags)
                    .filter_map(|(id, cancelled)| cancelled.then_some(id))
                    .collect(),
                Err(err) => {
                    // Dropping `tx` instead would make each message check on its own.
                    tracing::warn!(error = %err, count = ids.len(), "cancellation: checking a fetched batch for cancels failed; checking each message as it starts");
                    return;
                }
            };
            let _ = tx.send(Some(Arc::new(cancelled)));
        });
    }

    /// Whether `id` was cancelled, by its batch's fresh check; `None` when it has none.
    async fn answer(&self, id: &str) -> Option<bool> {
        let (at, mut rx) = self.lock().remove(id)?;
        if at.elapsed() > PRECHECK_FRESH {
            return None;
        }
        let answer = rx.wait_for(Option::is_some).await.ok()?;
        answer.as_ref().map(|cancelled| cancelled.contains(id))
    }
}

/// The cancel checks of messages starting together, in one round trip: each caller queues
/// its id, then takes the flush turn; the first to get it checks every id queued by then.
#[derive(Default)]
struct Checks {
    pending: Mutex<Vec<(String, oneshot::Sender<bool>)>>,
    turn: tokio::sync::Mutex<()>,
}

impl Checks {
    /// Whether a cancel was requested for `message_id`. A Redis failure lets the message
    /// run (with a warning): cancellation must not stop the worker.
    async fn is_cancelled(&self, events: &Events, message_id: &str) -> bool {
        let (tx, mut rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((message_id.to_owned(), tx));
        let _turn = self.turn.lock().await;
        if let Ok(answer) = rx.try_recv() {
            return answer;
        }
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        match events.cancelled(&ids).await {
            Ok(flags) => {
                for ((_, tx), cancelled) in batch.into_iter().zip(flags) {
                    let _ = tx.send(cancelled);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, count = ids.len(), "cancellation: checking for cancels failed; running the messages");
                for (_, tx) in batch {
                    let _ = tx.send(false);
                }
            }
        }
        rx.await.unwrap_or(false)
    }
}

/// Cancels `message_id` with the broker's [`Cancellation`] middleware (see
/// [`Cancellation::cancel`]); [`Error::MissingMiddleware`] without it.
pub async fn cancel(broker: &Broker, message_id: &str) -> Result<CancelOutcome> {
    let cancellation = broker
        .find::<Cancellation>()
        .ok_or(Error::MissingMiddleware {
            needed_for: "cancels",
            middleware: "Cancellation",
        })?;
    cancellation.cancel(broker, message_id).await
}
