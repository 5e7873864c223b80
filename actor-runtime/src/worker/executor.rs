//! Dispatching prefetched messages to a bounded number of concurrent actor runs.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actor::{ActorFailure, Handler};
use crate::broker::{enter_scope, enter_scope_sync, Broker, Delivery, DeliveryTag};
use crate::middleware::current::{Current, CURRENT};
use crate::registry::Registry;

use super::blocking::{BlockingPool, CallError};
use super::budget::{Budget, ByteBudget, Hold};
use super::consumer::QueueRunner;
use super::process::{process, Outcome};
use super::watchdog::Watchdog;

/// What the worker's tasks share.
pub(crate) struct Shared {
    pub(crate) broker: Broker,
    /// The `with_broker` scope the worker started in: its actors run inside it too.
    scope: Option<Broker>,
    pub(crate) registry: &'static Registry,
    pending: Mutex<BinaryHeap<Pending>>,
    pending_ready: Notify,
    seq: AtomicU64,
    threads: Arc<Semaphore>,
    thread_count: usize,
    /// How many messages the worker may hold fetched, across its queues.
    pub(crate) budget: Budget,
    /// How many payload bytes it may hold fetched.
    pub(crate) bytes: Arc<ByteBudget>,
    /// Moving average of the time one message takes (ns), for adaptive prefetch.
    average_ns: AtomicU64,
    /// Messages being processed, by sequence number, so a forced stop can requeue them.
    in_flight: Mutex<HashMap<u64, (Arc<QueueRunner>, DeliveryTag)>>,
    /// Cancelled when shutdown begins, for actors that observe it.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the grace period ends: running messages are dropped and requeued.
    pub(crate) cancel_running: CancellationToken,
    pub(crate) counters: Counters,
    /// Where plain `fn` actors run.
    pub(crate) blocking: BlockingPool,
    pub(crate) watchdog: Watchdog,
}

/// Totals since the worker started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

/// A fetched message waiting for a free slot, ordered by priority then arrival.
pub(crate) struct Pending {
    key: Reverse<(i32, u64)>,
    pub(crate) runner: Arc<QueueRunner>,
    /// Boxed: the heap moves entries as it sifts, and a message is large.
    pub(crate) delivery: Box<Delivery>,
    pub(crate) hold: Hold,
}

impl Pending {
    pub(crate) fn new(
        shared: &Shared,
        runner: Arc<QueueRunner>,
        delivery: Delivery,
        hold: Hold,
    ) -> Pending {
        let priority = delivery.message.as_ref().map_or(i32::MIN, |m| {
            m.options
                .get("priority")
                .and_then(Value::as_i64)
                .map(|p| p.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .or_else(|| {
                    shared
                        .registry
                        .get(&m.actor_name)
                        .map(|r| r.options.priority)
                })
                .unwrap_or(0)
        });
        let seq = shared.seq.fetch_add(1, AtomicOrdering::Relaxed);
        Pending {
            key: Reverse((priority, seq)),
            runner,
            delivery: Box::new(delivery),
            hold,
        }
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl Shared {
    pub(crate) fn new(
        broker: Broker,
        registry: &'static Registry,
        threads: usize,
        prefetch: Option<usize>,
        prefetch_bytes: usize,
        max_abandoned_threads: usize,
    ) -> Self {
        let shutdown = CancellationToken::new();
        Shared {
            broker,
            scope: crate::broker::scoped(),
            registry,
            pending: Mutex::new(BinaryHeap::new()),
            pending_ready: Notify::new(),
            seq: AtomicU64::new(0),
            threads: Arc::new(Semaphore::new(threads)),
            thread_count: threads,
            budget: Budget::new(prefetch, threads),
            bytes: Arc::new(ByteBudget::new(prefetch_bytes)),
            average_ns: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
            cancel_running: CancellationToken::new(),
            counters: Counters::default(),
            blocking: BlockingPool::new(threads, max_abandoned_threads, shutdown.clone()),
            watchdog: Watchdog::start(threads),
            shutdown,
        }
    }

    pub(crate) fn thread_count(&self) -> usize {
        self.thread_count
    }

    pub(crate) fn average_ns(&self) -> u64 {
        self.average_ns.load(AtomicOrdering::Relaxed)
    }

    /// Folds one message's processing time into the moving average; races between threads
    /// only blur it. A sample far below the average weighs 1/2, others 1/8: one slow first
    /// message (cold caches, first connections) must not keep the budget small for dozens
    /// of quick ones, while a slow message still shrinks it at once (its 1/8 alone puts the
    /// average past the ~20 ms the budget buffers).
    fn record_duration(&self, sample_ns: u64) {
        let old = self.average_ns.load(AtomicOrdering::Relaxed);
        let new = if old == 0 {
            sample_ns
        } else if sample_ns < old / 8 {
            old / 2 + sample_ns / 2
        } else {
            old - old / 8 + sample_ns / 8
        };
        self.average_ns.store(new.max(1), AtomicOrdering::Relaxed);
    }

    fn pending(&self) -> MutexGuard<'_, BinaryHeap<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<u64, (Arc<QueueRunner>, DeliveryTag)>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push_pending(&self, items: impl Iterator<Item = Pending>) {
        self.pending().extend(items);
        self.pending_ready.notify_one();
    }

    /// Up to `count` fetched, unstarted messages, the last in line first.
    pub(crate) fn take_last_pending(&self, count: usize) -> Vec<Pending> {
        let mut pending = self.pending();
        if pending.is_empty() {
            return Vec::new();
        }
        // Ascending order is the reverse of running order.
        let mut sorted = std::mem::take(&mut *pending).into_sorted_vec();
        let rest = sorted.split_off(count.min(sorted.len()));
        *pending = BinaryHeap::from(rest);
        sorted
    }

    /// Everything fetched but not started, for requeueing at shutdown.
    pub(crate) fn take_pending(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.pending()).into_vec()
    }

    /// Messages still running (after a forced stop), for requeueing.
    pub(crate) fn take_in_flight(&self) -> Vec<(Arc<QueueRunner>, DeliveryTag)> {
        self.in_flight().drain().map(|(_, v)| v).collect()
    }
}

/// Starts messages as slots free up, until `stop`.
pub(crate) async fn dispatch_loop(
    shared: Arc<Shared>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let slot = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            slot = shared.threads.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let item = loop {
            let ready = shared.pending_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let next = shared.pending().pop();
            if let Some(item) = next {
                // More may be waiting for another free slot.
                if !shared.pending().is_empty() {
                    shared.pending_ready.notify_one();
                }
                break item;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = ready => {}
            }
        };
        let seq = item.key.0 .1;
        shared
            .in_flight()
            .insert(seq, (item.runner.clone(), item.delivery.tag.clone()));
        let task_shared = shared.clone();
        tasks.spawn(async move {
            let in_scope = task_shared.scope.clone();
            tokio::select! {
                _ = enter_scope(in_scope, run(&task_shared, seq, item)) => {}
                // Left in `in_flight`, the message is requeued by `stop`.
                _ = task_shared.cancel_running.cancelled() => {}
            }
            drop(slot);
        });
    }
}

async fn run(shared: &Shared, seq: u64, item: Pending) {
    let Pending {
        runner,
        delivery,
        hold,
        ..
    } = item;
    let middleware = shared.broker.middleware().snapshot();
    let Delivery { tag, message, .. } = *delivery;
    let started = std::time::Instant::now();
    let outcome = process(shared, &middleware, &tag, message).await;
    shared.record_duration(started.elapsed().as_nanos() as u64);
    match outcome {
        Outcome::Ack(ctx) => {
            if let Some(ctx) = &ctx {
                for m in middleware.iter() {
                    m.before_ack(&shared.broker, ctx).await;
                }
            }
            // The ack loop outlives every message task; should it be gone (forced exit),
            // the message is redelivered.
            let _ = runner.acks.send((tag, hold));
            if let Some(ctx) = &ctx {
                for m in middleware.iter().rev() {
                    m.after_ack(&shared.broker, ctx).await;
                }
            }
        }
        Outcome::Nack(reason, ctx) => {
            shared
                .counters
                .dead_lettered
                .fetch_add(1, AtomicOrdering::Relaxed);
            if let Some(ctx) = &ctx {
                for m in middleware.iter() {
                    m.before_nack(&shared.broker, ctx).await;
                }
            }
            // Until it works, as acks are retried: a message left in the ack set would only
            // come back when this process dies. A forced stop ends the wait; the message is
            // then requeued like any running one (it is still in `in_flight`).
            let mut attempt = 0u32;
            let mut delays = super::consumer::failure_backoff();
            while let Err(err) = runner.consumer.nack(&tag, &reason).await {
                attempt += 1;
                let backoff = delays.next_delay();
                tracing::error!(queue = %runner.name, id = %tag.id, error = %err, attempt, backoff_ms = backoff.as_millis() as u64, "dead-lettering failed; retrying");
                tokio::time::sleep(backoff).await;
            }
            if let Some(ctx) = &ctx {
                for m in middleware.iter().rev() {
                    m.after_nack(&shared.broker, ctx).await;
                }
            }
        }
    }
    // Only now is its fate in the broker's (or the ack loop's) hands.
    shared.in_flight().remove(&seq);
}

/// Runs an actor's call: async on this runtime (watched for blocking its thread), blocking
/// calls on the worker's pool. A panic becomes a failure; past `time_limit` the call is
/// cancelled (a blocking call is abandoned to finish on its thread) and fails with
/// `TimeLimitExceeded`.
pub(crate) async fn run_handler(
    shared: &Shared,
    handler: Handler,
    time_limit: Option<Duration>,
    current: Current,
    interrupt: Option<CancellationToken>,
) -> Result<Value, ActorFailure> {
    let call = async move {
        match handler {
            Handler::Async(future) => {
                let watched = shared.watchdog.watch(&current.message, CatchUnwind(future));
                CURRENT.scope(current, watched).await
            }
            Handler::Blocking(call) => {
                let message = current.message.clone();
                // The message's span and the worker's broker scope, on the pool thread, for
                // the actor's own log lines and sends.
                let span = tracing::Span::current();
                let in_scope = shared.scope.clone();
                let call = move || {
                    span.in_scope(|| {
                        enter_scope_sync(in_scope, || CURRENT.sync_scope(current, call))
                    })
                };
                match shared.blocking.submit(message, call).await {
                    Ok(result) => result,
                    Err(CallError::Panic(payload)) => Err(panic_failure(payload)),
                    Err(CallError::Unavailable) => Err(ActorFailure::new(
                        "Cancelled",
                        "no thread could be started to run this plain `fn` actor",
                    )),
                }
            }
        }
    };
    let call = async move {
        match interrupt {
            Some(shutdown) => tokio::select! {
                result = call => result,
                _ = shutdown.cancelled() => Err(ActorFailure::new(
                    "Shutdown",
                    "the worker is shutting down; the message will be retried",
                )),
            },
            None => call.await,
        }
    };
    match time_limit {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(ActorFailure::new(
                "TimeLimitExceeded",
                format!("the actor ran longer than its time limit of {limit:?}"),
            )),
        },
        None => call.await,
    }
}

fn panic_failure(payload: Box<dyn std::any::Any + Send>) -> ActorFailure {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ActorFailure::new("panic", text)
}

/// Polls a boxed future, turning a panic into a failure.
struct CatchUnwind(Pin<Box<dyn Future<Output = Result<Value, ActorFailure>> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<Value, ActorFailure>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panic_failure(payload))),
        }
    }
}
