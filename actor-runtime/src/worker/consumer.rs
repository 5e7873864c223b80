//! One queue's fetch loop and ack batching.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::broker::{Consumer, Delivery, DeliveryTag};

use super::executor::{Pending, Shared};

/// How long one fetch waits for messages before looping (to notice configuration changes);
/// wake-ups are immediate, this is only the idle re-check period.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// A consumed queue: its consumer, its prefetch budget and its ack channel.
pub(crate) struct QueueRunner {
    pub(crate) name: Arc<str>,
    pub(crate) consumer: Arc<dyn Consumer>,
    /// One permit per message fetched and not yet acked, nacked or requeued.
    pub(crate) prefetch: Arc<Semaphore>,
    /// How the prefetch budget is sized.
    pub(crate) budget: Budget,
    pub(crate) acks: mpsc::UnboundedSender<(DeliveryTag, OwnedSemaphorePermit)>,
}

/// The prefetch budget: fixed, or adapted to how long messages take.
pub(crate) struct Budget {
    /// Permits the semaphore holds in all (available + taken).
    pub(crate) current: AtomicUsize,
    /// `Some(n)`: exactly n (set by the user). `None`: adaptive.
    pub(crate) fixed: Option<usize>,
    /// Adaptive bounds.
    pub(crate) min: usize,
    pub(crate) max: usize,
}

/// Adaptive prefetch keeps about this much work buffered per thread: enough to hide a Redis
/// round trip behind quick messages, without hoarding slow ones from other workers.
const BUFFERED_WORK_NS: u64 = 20_000_000;

impl Budget {
    pub(crate) fn new(fixed: Option<usize>, threads: usize) -> Budget {
        let min = fixed.unwrap_or((threads * 2).max(8));
        Budget {
            current: AtomicUsize::new(min),
            fixed,
            min,
            max: fixed.unwrap_or(1000).max(min),
        }
    }

    /// Resizes the semaphore toward `threads × BUFFERED_WORK / average processing time`.
    fn adapt(&self, semaphore: &Semaphore, average_ns: u64, threads: usize) {
        if self.fixed.is_some() || average_ns == 0 {
            return;
        }
        let wanted = (BUFFERED_WORK_NS.saturating_mul(threads as u64) / average_ns)
            .clamp(self.min as u64, self.max as u64) as usize;
        let current = self.current.load(Ordering::Relaxed);
        if wanted > current {
            semaphore.add_permits(wanted - current);
            self.current.store(wanted, Ordering::Relaxed);
        } else if wanted < current {
            // Only free permits can go; the rest shrink on later rounds.
            let forgotten = semaphore.forget_permits(current - wanted);
            self.current.store(current - forgotten, Ordering::Relaxed);
        }
    }
}

/// Fetches while there is prefetch budget, and hands messages to the dispatcher.
pub(crate) async fn fetch_loop(
    shared: Arc<Shared>,
    runner: Arc<QueueRunner>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        runner
            .budget
            .adapt(&runner.prefetch, shared.average_ns(), shared.thread_count());
        let mut permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            permit = runner.prefetch.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        if let Ok(extra) = runner
            .prefetch
            .clone()
            .try_acquire_many_owned(runner.prefetch.available_permits() as u32)
        {
            permit.merge(extra);
        }
        let max = permit.num_permits();
        // `fetch` is cancel-safe (the Consumer contract), so stopping mid-wait loses nothing.
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            batch = runner.consumer.fetch(max, IDLE_WAIT) => batch,
        };
        match batch {
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
