//! One queue's fetch loop, within the worker's prefetch budget, and ack batching.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::broker::{Consumer, Delivery, DeliveryTag};

use super::budget::{Hold, BUFFERED_WORK_NS};
use super::state::{failure_backoff, Pending, QueueRunner, Shared};

/// How long an idle queue waits before fetching again anyway; wake-ups are immediate, this
/// is only the idle re-check period.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// Fetches while the worker has budget, and hands messages to the dispatcher. An empty
/// fetch gives the budget back before waiting for the queue, so an idle queue never holds
/// what a busy one could use.
pub(crate) async fn fetch_loop(
    shared: Arc<Shared>,
    runner: Arc<QueueRunner>,
    stop: CancellationToken,
) {
    let budget = &shared.budget;
    let mut backoff = failure_backoff();
    loop {
        let room = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            room = shared.bytes.room() => room,
        };
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
            batch = runner.consumer.fetch_bounded(max, room, Duration::ZERO) => batch,
        };
        match batch {
            Ok(batch) if batch.is_empty() => {
                backoff.reset();
                drop(permit);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    () = runner.consumer.wait(IDLE_WAIT) => {}
                }
            }
            Ok(batch) => {
                backoff.reset();
                hand_over(&shared, &runner, batch, permit);
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::error!(queue = %runner.name, error = %err, backoff_ms = delay.as_millis() as u64, "fetch failed; retrying");
                drop(permit);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
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
    let hooks = shared.broker.middleware().with_fetched_hooks();
    if !hooks.is_empty() {
        let messages: Vec<&crate::Message> = batch
            .iter()
            .filter_map(|d| d.message.as_ref().ok())
            .collect();
        for m in hooks.iter() {
            m.fetched(&shared.broker, &messages);
        }
    }
    let items = batch.into_iter().filter_map(|delivery| {
        let hold = Hold::new(permits.split(1)?, delivery.size, &shared.bytes);
        Some(Pending::new(shared, runner.clone(), delivery, hold))
    });
    shared.push_pending(items);
}

/// Acks in batches: whatever completed since the last round trip goes in one call. Runs
/// until `stop`, then acks what is left and returns.
pub(crate) async fn ack_loop(
    queue: Arc<str>,
    consumer: Arc<dyn Consumer>,
    mut rx: mpsc::UnboundedReceiver<(DeliveryTag, Hold)>,
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
            let mut backoff = failure_backoff();
            while let Err(err) = consumer.ack(&tags).await {
                if last && backoff.failures() >= 5 {
                    // Unacked messages are redelivered (at-least-once); do not hang shutdown.
                    tracing::error!(queue = %queue, error = %err, count = tags.len(), "giving up acking at shutdown; these messages will run again");
                    break;
                }
                let delay = backoff.next_delay();
                tracing::error!(queue = %queue, error = %err, count = tags.len(), backoff_ms = delay.as_millis() as u64, "ack failed; retrying");
                tokio::time::sleep(delay).await;
            }
            tags.clear();
            // Dropping the holds returns prefetch budget to the fetchers.
            batch.clear();
        }
        if last {
            return;
        }
    }
}
