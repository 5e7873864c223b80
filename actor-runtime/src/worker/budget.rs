//! What a worker may hold fetched: a count budget that follows message durations, and a
//! byte budget, both released when a message is acked, nacked or requeued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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
pub(crate) const BUFFERED_WORK_NS: u64 = 20_000_000;

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

/// The default of [`ByteBudget`]: a quarter of a 512 MB container for two worker processes'
/// buffered payloads, with room left for the actors themselves.
pub(crate) const DEFAULT_PREFETCH_BYTES: usize = 64 << 20;

/// The payload bytes one worker may hold fetched. A fetch asks for at most what is left, and
/// always gets at least one message, so a message larger than the whole budget still runs
/// (alone, once the worker holds nothing more than the limit).
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    held: AtomicUsize,
    released: Notify,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> ByteBudget {
        ByteBudget {
            limit: limit.max(1),
            held: AtomicUsize::new(0),
            released: Notify::new(),
        }
    }

    /// Waits until some of the budget is free; returns how much.
    pub(crate) async fn room(&self) -> usize {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let held = self.held.load(Ordering::Acquire);
            if held < self.limit {
                return self.limit - held;
            }
            released.await;
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    fn take(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::AcqRel);
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        self.released.notify_waiters();
    }
}

/// What one fetched message holds of its worker's budgets, given back when dropped (after
/// its ack, nack or requeue).
#[derive(Debug)]
pub(crate) struct Hold {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    budget: Arc<ByteBudget>,
}

impl Hold {
    /// Takes `bytes` of `budget` along with a count `permit`.
    pub(crate) fn new(
        permit: OwnedSemaphorePermit,
        bytes: usize,
        budget: &Arc<ByteBudget>,
    ) -> Hold {
        budget.take(bytes);
        Hold {
            _permit: permit,
            bytes,
            budget: budget.clone(),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
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

    #[tokio::test]
    async fn bytes_are_held_until_each_message_is_done() {
        let bytes = Arc::new(ByteBudget::new(100));
        let count = Arc::new(Semaphore::new(10));
        assert_eq!(bytes.room().await, 100);
        let first = Hold::new(count.clone().try_acquire_owned().unwrap(), 60, &bytes);
        let second = Hold::new(count.clone().try_acquire_owned().unwrap(), 60, &bytes);
        assert_eq!((bytes.held(), count.available_permits()), (120, 8));
        // Over the limit: room waits for a release.
        let waiting = tokio::spawn({
            let bytes = bytes.clone();
            async move { bytes.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap(), 40);
        drop(second);
        assert_eq!((bytes.held(), count.available_permits()), (0, 10));
    }
}
