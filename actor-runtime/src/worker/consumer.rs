//! One queue's fetch loop, the worker's prefetch budget, and ack batching.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::broker::{Consumer, Delivery, DeliveryTag};

use super::executor::{Pending, Shared};

/// How long an idle queue waits before fetching again anyway; wake-ups are immediate, this
/// is only the idle re-check period.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// A consumed queue: its consumer and its ack channel.
pub(crate) struct QueueRunner {
    pub(crate) name: Arc<str>,
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) acks: mpsc::UnboundedSender<(DeliveryTag, OwnedSemaphorePermit)>,
}

/// What one worker may hold: one permit per message fetched and not yet acked, nacked or
/// requeued (running ones included), across all its queues. Fixed, or adapted to how long
/// messages take.
pub(crate) struct Budget {
    pub(crate) permits: Arc<Semaphore>,
    /// Permits the semaphore holds in all (available + taken).
    current: AtomicUsize,
    /// `Some(n)`: exactly n (set by the user). `None`: adaptive.
    fixed: Option<usize>,
    /// Adaptive bounds.
    min: usize,
    max: usize,
}

/// Adaptive prefetch keeps about this much work buffered per thread: enough to hide a Redis
/// round trip behind quick messages, so little that a slow message is never kept from
/// another worker's free thread.
const BUFFERED_WORK_NS: u64 = 20_000_000;

/// The adaptive budget's ceiling: quick messages come in batches of up to this many.
pub(crate) const MAX_ADAPTIVE_PREFETCH: usize = 1000;

impl Budget {
    /// Adaptive budgets start at `threads`: nothing is fetched ahead of a free thread until
    /// messages have proven quick.
    pub(crate) fn new(fixed: Option<usize>, threads: usize) -> Budget {
        let min = fixed.unwrap_or(threads).max(1);
        Budget {
            permits: Arc::new(Semaphore::new(min)),
            current: AtomicUsize::new(min),
            fixed,
            min,
            max: fixed.unwrap_or(MAX_ADAPTIVE_PREFETCH).max(min),
        }
    }

    /// The budget's size now.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Resizes toward `threads × BUFFERED_WORK / average processing time`, within bounds.
    /// Returns how many held messages are over the new size (only free permits can go at
    /// once).
    pub(crate) fn adapt(&self, average_ns: u64, threads: usize) -> usize {
        if self.fixed.is_some() || average_ns == 0 {
            return 0;
        }
        let wanted = (BUFFERED_WORK_NS.saturating_mul(threads as u64) / average_ns)
            .clamp(self.min as u64, self.max as u64) as usize;
        let current = self.current.load(Ordering::Relaxed);
        if wanted > current {
            self.permits.add_permits(wanted - current);
            self.current.store(wanted, Ordering::Relaxed);
        } else if wanted < current {
            // Only free permits can go; the rest shrink on later rounds.
            let forgotten = self.permits.forget_permits(current - wanted);
            self.current.store(current - forgotten, Ordering::Relaxed);
            return current - forgotten - wanted;
        }
        0
    }
}

/// Fetches while the worker has budget, and hands messages to the dispatcher. An empty
/// fetch gives the budget back before waiting for the queue, so an idle queue never holds
/// what a busy one could use.
pub(crate) async fn fetch_loop(
    shared: Arc<Shared>,
    runner: Arc<QueueRunner>,
    stop: CancellationToken,
) {
    let budget = &shared.budget;
    let mut failures = 0u32;
    loop {
        let excess = budget.adapt(shared.average_ns(), shared.thread_count());
        // Quick messages over budget drain in milliseconds; slower ones would wait here while
        // a thread elsewhere may be free.
        if excess > 0 && shared.average_ns() >= BUFFERED_WORK_NS / 4 {
            give_back(&shared, excess).await;
        }
        let mut permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            permit = budget.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        if let Ok(extra) = budget
            .permits
            .clone()
            .try_acquire_many_owned(budget.permits.available_permits() as u32)
        {
            permit.merge(extra);
        }
        let max = permit.num_permits();
        // `fetch` is cancel-safe (the Consumer contract), so stopping mid-round loses nothing.
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            batch = runner.consumer.fetch(max, Duration::ZERO) => batch,
        };
        match batch {
            Ok(batch) if batch.is_empty() => {
                failures = 0;
                drop(permit);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    () = runner.consumer.wait(IDLE_WAIT) => {}
                }
            }
            Ok(batch) => {
                failures = 0;
                hand_over(&shared, &runner, batch, permit);
            }
            Err(err) => {
                failures += 1;
                let backoff = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                tracing::error!(queue = %runner.name, error = %err, ?backoff, "fetch failed; retrying");
                drop(permit);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

/// Messages got slower than the budget assumed: up to `count` buffered messages (the last in
/// line) go back to the head of their queue, for a free thread here or elsewhere.
async fn give_back(shared: &Shared, count: usize) {
    let excess = shared.take_last_pending(count);
    if excess.is_empty() {
        return;
    }
    let mut by_queue: HashMap<Arc<str>, (Arc<QueueRunner>, Vec<DeliveryTag>)> = HashMap::new();
    for item in excess {
        by_queue
            .entry(item.runner.name.clone())
            .or_insert_with(|| (item.runner.clone(), Vec::new()))
            .1
            .push(item.delivery.tag);
    }
    for (runner, tags) in by_queue.into_values() {
        match runner.consumer.requeue(&tags).await {
            Ok(()) => {
                tracing::debug!(queue = %runner.name, count = tags.len(), "messages take longer than the prefetch budget assumed: returned buffered ones to their queue")
            }
            Err(err) => {
                tracing::warn!(queue = %runner.name, count = tags.len(), error = %err, "could not return buffered messages; they will be recovered as a dead worker's")
            }
        }
    }
}

fn hand_over(
    shared: &Arc<Shared>,
    runner: &Arc<QueueRunner>,
    batch: Vec<Delivery>,
    mut permits: OwnedSemaphorePermit,
) {
    if batch.is_empty() {
        return;
    }
    let items = batch.into_iter().filter_map(|delivery| {
        let permit = permits.split(1)?;
        Some(Pending::new(shared, runner.clone(), delivery, permit))
    });
    shared.push_pending(items);
}

/// Acks in batches: whatever completed since the last round trip goes in one call. Runs
/// until `stop`, then acks what is left and returns.
pub(crate) async fn ack_loop(
    queue: Arc<str>,
    consumer: Arc<dyn Consumer>,
    mut rx: mpsc::UnboundedReceiver<(DeliveryTag, OwnedSemaphorePermit)>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(256);
    let mut tags = Vec::with_capacity(256);
    loop {
        let last = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, 1024) => n == 0,
            _ = stop.cancelled() => {
                while let Ok(item) = rx.try_recv() {
                    batch.push(item);
                }
                true
            }
        };
        if !batch.is_empty() {
            tags.extend(batch.iter().map(|(tag, _)| tag.clone()));
            let mut failures = 0u32;
            while let Err(err) = consumer.ack(&tags).await {
                failures += 1;
                if last && failures > 5 {
                    // Unacked messages are redelivered (at-least-once); do not hang shutdown.
                    tracing::error!(queue = %queue, error = %err, count = tags.len(), "giving up acking at shutdown; these messages will run again");
                    break;
                }
                let backoff = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                tracing::error!(queue = %queue, error = %err, count = tags.len(), ?backoff, "ack failed; retrying");
                tokio::time::sleep(backoff).await;
            }
            tags.clear();
            // Dropping the permits returns prefetch budget to the fetcher.
            batch.clear();
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn an_adaptive_budget_starts_at_the_thread_count_and_grows_only_for_quick_messages() {
        let budget = Budget::new(None, 2);
        assert_eq!(budget.size(), 2);
        // Slow messages (1 s): nothing is buffered beyond the running ones.
        assert_eq!(budget.adapt(1_000 * MS, 2), 0);
        assert_eq!(budget.size(), 2);
        // 1 ms messages: about 20 ms of work per thread.
        budget.adapt(MS, 2);
        assert_eq!(budget.size(), 40);
        // No-ops: up to the ceiling.
        budget.adapt(1_000, 2);
        assert_eq!(budget.size(), MAX_ADAPTIVE_PREFETCH);
    }

    #[test]
    fn a_shrinking_budget_reports_the_held_messages_over_it() {
        let budget = Budget::new(None, 1);
        budget.adapt(1_000, 1);
        let held = budget.permits.clone().try_acquire_many_owned(300).unwrap();
        // Messages turned slow: the free permits go at once, 299 held ones are over.
        assert_eq!(budget.adapt(1_000 * MS, 1), 299);
        drop(held);
        assert_eq!(budget.adapt(1_000 * MS, 1), 0);
        assert_eq!(budget.size(), 1);
        assert_eq!(budget.permits.available_permits(), 1);
    }

    #[test]
    fn a_fixed_budget_never_moves() {
        let budget = Budget::new(Some(5), 8);
        budget.adapt(1_000, 8);
        budget.adapt(1_000 * MS, 8);
        assert_eq!(budget.size(), 5);
    }
}
