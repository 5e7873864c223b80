//! Consuming one queue: a task per consumer runs sessions (a channel for `q` with the
//! worker's prefetch, one for `q.DQ` holding delayed messages until due), reconnecting with
//! backoff when a session dies. Deliveries of `q` go to the worker through a channel; their
//! tags carry the session, so an ack meant for a dead channel is skipped (RabbitMQ
//! redelivers those messages: at-least-once).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::declare::{declare, dq};
use super::delayed::Delayed;
use super::Shared;
use crate::backoff::{Backoff, Jitter};
use crate::broker::{Consumer, Delivery, DeliveryTag};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::truncate::truncate;

/// What the session task and the consumer share.
struct State {
    /// The current session's number and its `q` channel, to ack on.
    channel: Mutex<Option<(u64, Channel)>>,
    /// Deliveries handed out and not yet settled (for stats and join).
    in_flight: Arc<AtomicU64>,
    /// Delivery tags of the current session not yet settled: an ack whose tags leave no
    /// lower one unsettled goes as one `multiple` ack.
    unsettled: Mutex<BTreeSet<u64>>,
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

/// One session's channels and consumers.
struct Session {
    number: u64,
    generation: u64,
    q: Channel,
    dq: Channel,
    q_consumer: lapin::Consumer,
    dq_consumer: lapin::Consumer,
}

static SESSIONS: AtomicU64 = AtomicU64::new(0);

impl Session {
    async fn open(shared: &Shared, queue: &str, state: &State, prefetch: u16) -> Result<Session> {
        declare(shared, queue).await?;
        let (q, generation) = shared.conn.channel().await?;
        let (dq_channel, _) = shared.conn.channel().await?;
        let fail = |what: &str, err: lapin::Error| shared.conn.error(what, err);
        q.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| fail("basic.qos", e))?;
        dq_channel
            .basic_qos(shared.config.delay_prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| fail("basic.qos", e))?;
        let options = BasicConsumeOptions::default();
        let q_consumer = q
            .basic_consume(queue.into(), "".into(), options, FieldTable::default())
            .await
            .map_err(|e| fail(&format!("consuming `{queue}`"), e))?;
        let dq_name = dq(queue);
        let dq_consumer = dq_channel
            .basic_consume(
                dq_name.as_str().into(),
                "".into(),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail(&format!("consuming `{dq_name}`"), e))?;
        let number = SESSIONS.fetch_add(1, Ordering::AcqRel) + 1;
        *state.channel.lock().unwrap_or_else(|e| e.into_inner()) = Some((number, q.clone()));
        state
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(Session {
            number,
            generation,
            q,
            dq: dq_channel,
            q_consumer,
            dq_consumer,
        })
    }

    async fn close(&self) {
        let _ = self.q.close(200, "consumer closed".into()).await;
        let _ = self.dq.close(200, "consumer closed".into()).await;
    }
}

/// Runs sessions until stopped, reconnecting with backoff after a failure.
async fn run(
    shared: Arc<Shared>,
    queue: Arc<str>,
    state: Arc<State>,
    tx: mpsc::UnboundedSender<Delivery>,
    stop: CancellationToken,
    prefetch: u16,
    first: Session,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(5),
        Jitter::Equal,
    );
    let mut session = Some(first);
    loop {
        let current = match session.take() {
            Some(session) => session,
            None => {
                let opened = tokio::select! {
                    _ = stop.cancelled() => return,
                    opened = Session::open(&shared, &queue, &state, prefetch) => opened,
                };
                match opened {
                    Ok(session) => {
                        tracing::info!(queue = %queue, "consuming again after a lost connection");
                        session
                    }
                    Err(err) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(queue = %queue, error = %err, ?delay, "cannot consume; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        backoff.reset();
        let result = pump(&shared, &queue, &state, &tx, &stop, current).await;
        match result {
            Ok(()) => return,
            Err((err, generation)) => {
                tracing::warn!(queue = %queue, error = %err, "lost the consuming channel; its unacked messages are redelivered");
                shared.conn.lost(generation).await;
            }
        }
    }
}

/// Moves deliveries from one session until it fails (`Err`) or the consumer stops (`Ok`).
async fn pump(
    shared: &Shared,
    queue: &str,
    state: &State,
    tx: &mpsc::UnboundedSender<Delivery>,
    stop: &CancellationToken,
    mut session: Session,
) -> std::result::Result<(), (Error, u64)> {
    let name: Arc<str> = Arc::from(queue);
    let mut delayed = Delayed::default();
    let held = shared.held(queue);
    let mut counted = 0u64;
    let result = pump_loop(
        shared,
        queue,
        &name,
        state,
        tx,
        stop,
        &mut session,
        &mut delayed,
        &held,
        &mut counted,
    )
    .await;
    held.fetch_sub(counted, Ordering::AcqRel);
    result
}

#[allow(clippy::too_many_arguments)]
async fn pump_loop(
    shared: &Shared,
    queue: &str,
    name: &Arc<str>,
    state: &State,
    tx: &mpsc::UnboundedSender<Delivery>,
    stop: &CancellationToken,
    session: &mut Session,
    delayed: &mut Delayed,
    held: &AtomicU64,
    counted: &mut u64,
) -> std::result::Result<(), (Error, u64)> {
    let generation = session.generation;
    let lost = |what: &str, err: Option<lapin::Error>| {
        let err = match err {
            Some(err) => shared.conn.error(what, err),
            None => Error::connection(format!("rabbitmq {what}: the server ended the consumer")),
        };
        (err, generation)
    };
    loop {
        let wake = delayed.next_wake();
        tokio::select! {
            _ = stop.cancelled() => {
                session.close().await;
                return Ok(());
            }
            next = session.q_consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let message = Message::decode(&delivery.data);
                    state.in_flight.fetch_add(1, Ordering::AcqRel);
                    state
                        .unsettled
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(delivery.delivery_tag);
                    let ours = Delivery {
                        tag: DeliveryTag {
                            queue: name.clone(),
                            id: format!("{}:{}", session.number, delivery.delivery_tag),
                        },
                        size: delivery.data.len(),
                        message,
                    };
                    if tx.send(ours).is_err() {
                        session.close().await;
                        return Ok(());
                    }
                }
                Some(Err(err)) => return Err(lost("consume", Some(err))),
                None => return Err(lost("consume", None)),
            },
            next = session.dq_consumer.next() => match next {
                Some(Ok(delivery)) => delayed.accept(shared, queue, delivery).await,
                Some(Err(err)) => return Err(lost("consume delayed", Some(err))),
                None => return Err(lost("consume delayed", None)),
            },
            _ = sleep_until(wake) => {}
        }
        let result = delayed.settle(shared, queue).await;
        let now = delayed.len() as u64;
        if now >= *counted {
            held.fetch_add(now - *counted, Ordering::AcqRel);
        } else {
            held.fetch_sub(*counted - now, Ordering::AcqRel);
        }
        *counted = now;
        if let Err(err) = result {
            tracing::warn!(queue = %queue, error = %err, held = delayed.len(), "could not move due delayed messages; retrying");
            if matches!(err, Error::Connection { .. }) {
                session.close().await;
                return Err((err, session.generation));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
