//! Dispatching prefetched messages to a bounded number of concurrent actor runs, then
//! carrying out each message's outcome (ack or dead-letter, with their hooks).

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{enter_scope, Delivery};

use super::process::{process, Outcome};
use super::state::{failure_backoff, Pending, Shared};

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
                // Boxed: the task then holds a pointer, not the whole message state machine,
                // which tokio would otherwise copy as it spawns and polls the task.
                _ = Box::pin(enter_scope(in_scope, run(&task_shared, seq, item))) => {}
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
    let Delivery { tag, message, size } = *delivery;
    let started = std::time::Instant::now();
    let outcome = process(shared, &middleware, &tag, message, size).await;
    shared.record_duration(started.elapsed().as_nanos() as u64);
    if let Some(activity) = &shared.activity {
        activity.count(match &outcome {
            Outcome::Ack(Some(ctx)) => ctx.error().is_none(),
            Outcome::Ack(None) => true,
            Outcome::Nack(..) => false,
        });
    }
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
            let mut delays = failure_backoff();
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
