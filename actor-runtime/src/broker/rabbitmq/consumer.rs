//! Consuming one queue: what the worker calls (fetch, wait, ack, nack, requeue, close) over
//! the deliveries a session task ([`session`](super::session)) hands over. Their tags carry
//! the session, so an ack meant for a dead channel is skipped (RabbitMQ redelivers those
//! messages: at-least-once), and an ack that leaves no lower tag unsettled goes as one
//! `multiple` ack.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::session::{run, Session};
use super::Shared;
use crate::broker::{Consumer, Delivery, DeliveryTag};
use crate::error::{Error, Result};
use crate::truncate::truncate;

/// What the session task and the consumer share.
pub(super) struct State {
    /// The current session's number and its `q` channel, to ack on.
    pub(super) channel: Mutex<Option<(u64, Channel)>>,
    /// Deliveries handed out and not yet settled (for stats and join).
    pub(super) in_flight: Arc<AtomicU64>,
    /// Delivery tags of the current session not yet settled: an ack whose tags leave no
    /// lower one unsettled goes as one `multiple` ack.
    pub(super) unsettled: Mutex<BTreeSet<u64>>,
}

impl State {
    fn current(&self) -> Option<(u64, Channel)> {
        self.channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Pending {
    rx: mpsc::UnboundedReceiver<Delivery>,
    buffer: VecDeque<Delivery>,
}

/// A consumer of one queue (and, internally, its delay queue).
pub(crate) struct RabbitConsumer {
    queue: Arc<str>,
    state: Arc<State>,
    pending: tokio::sync::Mutex<Pending>,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RabbitConsumer {
    pub(crate) async fn start(
        shared: Arc<Shared>,
        queue: &str,
        prefetch: usize,
    ) -> Result<RabbitConsumer> {
        let queue: Arc<str> = Arc::from(queue);
        let prefetch = shared
            .config
            .prefetch
            .unwrap_or(prefetch.clamp(1, usize::from(u16::MAX)) as u16);
        let state = Arc::new(State {
            channel: Mutex::new(None),
            in_flight: shared.in_flight(&queue),
            unsettled: Mutex::new(BTreeSet::new()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        // The first session starts here, so a bad URL or a refused declaration fails now.
        let first = Session::open(&shared, &queue, &state, prefetch).await?;
        let task = tokio::spawn(run(
            shared,
            queue.clone(),
            state.clone(),
            tx,
            stop.clone(),
            prefetch,
            first,
        ));
        Ok(RabbitConsumer {
            queue,
            state,
            pending: tokio::sync::Mutex::new(Pending {
                rx,
                buffer: VecDeque::new(),
            }),
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Settles `tags` on the current channel with `op`; tags of older sessions are skipped
    /// (their messages come back on their own).
    async fn settle<F, Fut>(&self, tags: &[DeliveryTag], op: F) -> Result<()>
    where
        F: Fn(Channel, u64) -> Fut,
        Fut: std::future::Future<Output = lapin::Result<()>>,
    {
        let current = self.state.current();
        for tag in tags {
            self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
            let Some((session, delivery_tag)) = parse_tag(&tag.id) else {
                continue;
            };
            if current.as_ref().is_some_and(|(now, _)| *now == session) {
                self.state
                    .unsettled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&delivery_tag);
            }
            match &current {
                Some((now, channel)) if *now == session => {
                    if let Err(err) = op(channel.clone(), delivery_tag).await {
                        tracing::warn!(queue = %self.queue, error = %err, "could not settle a message on a lost channel; RabbitMQ redelivers it");
                    }
                }
                _ => {
                    tracing::debug!(queue = %self.queue, "skipped settling a message of a lost channel; RabbitMQ redelivers it")
                }
            }
        }
        Ok(())
    }

    /// When every tag is of the current session and, once they are settled, no lower tag
    /// of it is left unsettled: the channel and the highest tag (the tags are then settled).
    fn ack_all_below(&self, tags: &[DeliveryTag]) -> Option<(Channel, u64)> {
        let (session, channel) = self.state.current()?;
        let mut ours = Vec::with_capacity(tags.len());
        for tag in tags {
            match parse_tag(&tag.id) {
                Some((s, delivery_tag)) if s == session => ours.push(delivery_tag),
                _ => return None,
            }
        }
        ours.sort_unstable();
        ours.dedup();
        let highest = *ours.last()?;
        let mut unsettled = self
            .state
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let covered = unsettled
            .range(..=highest)
            .all(|tag| ours.binary_search(tag).is_ok());
        if !covered || unsettled.range(..=highest).count() != ours.len() || ours.len() != tags.len()
        {
            return None;
        }
        for tag in &ours {
            unsettled.remove(tag);
        }
        Some((channel, highest))
    }

    fn is_current(&self, delivery: &Delivery) -> bool {
        let current = self.state.current().map(|(session, _)| session);
        parse_tag(&delivery.tag.id).map(|(session, _)| session) == current
    }
}

fn parse_tag(id: &str) -> Option<(u64, u64)> {
    let (session, tag) = id.split_once(':')?;
    Some((session.parse().ok()?, tag.parse().ok()?))
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn fetch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        let mut pending = self.pending.lock().await;
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(86_400));
        let mut out = Vec::new();
        while out.len() < max.max(1) {
            let next = match pending.buffer.pop_front() {
                Some(delivery) => Some(delivery),
                None => match pending.rx.try_recv() {
                    Ok(delivery) => Some(delivery),
                    Err(_) if !out.is_empty() => None,
                    Err(_) => match tokio::time::timeout_at(deadline, pending.rx.recv()).await {
                        Ok(Some(delivery)) => Some(delivery),
                        Ok(None) => return Err(Error::Closed),
                        Err(_) => None,
                    },
                },
            };
            let Some(delivery) = next else { break };
            if self.is_current(&delivery) {
                out.push(delivery);
            } else {
                // Its channel died: RabbitMQ delivers it again on the new one.
                self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(out)
    }

    async fn wait(&self, timeout: Duration) {
        let mut pending = self.pending.lock().await;
        if !pending.buffer.is_empty() {
            return;
        }
        if let Ok(Some(delivery)) = tokio::time::timeout(timeout, pending.rx.recv()).await {
            pending.buffer.push_back(delivery);
        }
    }

    async fn ack(&self, tags: &[DeliveryTag]) -> Result<()> {
        if let Some((channel, highest)) = self.ack_all_below(tags) {
            // Every lower tag of this channel is settled: one `multiple` ack settles them all.
            for _ in tags {
                self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            let multiple = BasicAckOptions { multiple: true };
            if let Err(err) = channel.basic_ack(highest, multiple).await {
                tracing::warn!(queue = %self.queue, error = %err, "could not ack on a lost channel; RabbitMQ redelivers the messages");
            }
            return Ok(());
        }
        self.settle(tags, |channel, tag| async move {
            channel.basic_ack(tag, Default::default()).await
        })
        .await
    }

    async fn nack(&self, tag: &DeliveryTag, reason: &str) -> Result<()> {
        tracing::warn!(queue = %self.queue, reason = %truncate(reason), "dead-lettering a message to the dead-letter queue");
        self.settle(std::slice::from_ref(tag), |channel, tag| async move {
            let options = BasicNackOptions {
                requeue: false,
                ..BasicNackOptions::default()
            };
            channel.basic_nack(tag, options).await
        })
        .await
    }

    async fn requeue(&self, tags: &[DeliveryTag]) -> Result<()> {
        self.settle(tags, |channel, tag| async move {
            let options = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            channel.basic_nack(tag, options).await
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let mut pending = self.pending.lock().await;
        let left = pending.buffer.len() + {
            let mut n = 0;
            while pending.rx.try_recv().is_ok() {
                n += 1;
            }
            n
        };
        pending.buffer.clear();
        self.state
            .in_flight
            .fetch_sub(left as u64, Ordering::AcqRel);
        Ok(())
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
