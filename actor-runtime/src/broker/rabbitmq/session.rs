//! A consumer's session task: a channel for `q` with the worker's prefetch and one for
//! `q.DQ` holding delayed messages until due ([`Delayed`]), reopened with backoff when the
//! connection or a channel dies (what was unacked on it is redelivered by RabbitMQ).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::consumer::State;
use super::declare::{declare, dq};
use super::delayed::Delayed;
use super::Shared;
use crate::backoff::{Backoff, Jitter};
use crate::broker::{Delivery, DeliveryTag};
use crate::error::{Error, Result};
use crate::message::{DecodeError, Message};

/// One session's channels and consumers.
pub(super) struct Session {
    number: u64,
    generation: u64,
    q: Channel,
    dq: Channel,
    q_consumer: lapin::Consumer,
    dq_consumer: lapin::Consumer,
}

static SESSIONS: AtomicU64 = AtomicU64::new(0);

impl Session {
    pub(super) async fn open(
        shared: &Shared,
        queue: &str,
        state: &State,
        prefetch: u16,
    ) -> Result<Session> {
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
pub(super) async fn run(
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
                    let limit = shared.config.limits.max_size;
                    let message = if delivery.data.len() > limit {
                        Err(DecodeError::too_large(delivery.data.len(), limit))
                    } else {
                        Message::decode(&delivery.data)
                    };
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
