//! What the worker's tasks share: the pending heap, the budgets, the counters, the consumed
//! queues. The bottom of the worker: fetch, dispatch and processing all build on it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, Jitter};
use crate::broker::{Broker, Consumer, Delivery, DeliveryTag};
use crate::registry::Registry;

use super::blocking::BlockingPool;
use super::budget::{Budget, ByteBudget, Hold};
use super::watchdog::Watchdog;

/// Between retries of a failed fetch, ack or dead-lettering: 100 ms doubling up to 5 s.
pub(crate) fn failure_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        Jitter::Equal,
    )
}

/// A consumed queue: its consumer and its ack channel.
pub(crate) struct QueueRunner {
    pub(crate) name: Arc<str>,
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) acks: mpsc::UnboundedSender<(DeliveryTag, Hold)>,
}

/// What the worker's tasks share.
pub(crate) struct Shared {
    pub(crate) broker: Broker,
    /// The `with_broker` scope the worker started in: its actors run inside it too.
    pub(super) scope: Option<Broker>,
    pub(crate) registry: &'static Registry,
    pub(super) pending: Mutex<BinaryHeap<Pending>>,
    pub(super) pending_ready: Notify,
    pub(super) seq: AtomicU64,
    pub(super) threads: Arc<Semaphore>,
    pub(super) thread_count: usize,
    /// How many messages the worker may hold fetched, across its queues.
    pub(crate) budget: Budget,
    /// How many payload bytes it may hold fetched.
    pub(crate) bytes: Arc<ByteBudget>,
    /// Moving average of the time one message takes (ns), for adaptive prefetch.
    pub(super) average_ns: AtomicU64,
    /// Messages being processed, by sequence number, so a forced stop can requeue them.
    pub(super) in_flight: Mutex<HashMap<u64, (Arc<QueueRunner>, DeliveryTag)>>,
    /// Cancelled when shutdown begins, for actors that observe it.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the grace period ends: running messages are dropped and requeued.
    pub(crate) cancel_running: CancellationToken,
    pub(crate) counters: Counters,
    /// The backend's activity counter (reported with its heartbeats), where it has one.
    pub(crate) activity: Option<Arc<crate::broker::ActivityCounter>>,
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
    pub(super) key: Reverse<(i32, u64)>,
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
            activity: broker.backend().activity_counter(),
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
    pub(super) fn record_duration(&self, sample_ns: u64) {
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

    pub(super) fn pending(&self) -> MutexGuard<'_, BinaryHeap<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn in_flight(
        &self,
    ) -> MutexGuard<'_, HashMap<u64, (Arc<QueueRunner>, DeliveryTag)>> {
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
