//! Delayed messages a consumer holds, unacked, from `q.DQ` until they are due, as Python
//! Dramatiq's worker does: when due, the message is published to `q` (with a confirm) and
//! only then is the `.DQ` copy acked, so a crash in between duplicates it rather than loses
//! it.
//!
//! What Python gets wrong: RabbitMQ closes a channel that holds a delivery unacked longer
//! than its `consumer_timeout` (30 min by default), redelivering everything on it. A held
//! message is therefore put back before [`max_hold`](super::RabbitmqConfig::max_hold): the
//! same payload is republished to `q.DQ` (confirmed), then the held copy acked.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::BasicProperties;
use tokio::time::Instant;

use super::declare::dq;
use super::publish::{properties, publish, Failed};
use super::Shared;
use crate::error::{Error, Result};
use crate::message::{eta_too_far, now_ms, Message};
use crate::truncate::truncate;

/// A held `.DQ` delivery.
pub(crate) struct Held {
    delivery: AmqpDelivery,
    /// The message as it goes to the queue when due: undelayed, encoded.
    ready: Vec<u8>,
    properties: BasicProperties,
    /// When it must be put back in the delay queue if still not due.
    give_back_at: Instant,
}

/// Held delayed messages of one consumer, by eta then arrival.
#[derive(Default)]
pub(crate) struct Delayed {
    by_eta: BTreeMap<(u64, u64), Held>,
    seq: u64,
}

impl Delayed {
    /// When something must happen next: the earliest eta, or the earliest give-back.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let eta = self
            .by_eta
            .keys()
            .next()
            .map(|(eta, _)| now + Duration::from_millis(eta.saturating_sub(now_ms())));
        let give_back = self.by_eta.values().map(|h| h.give_back_at).min();
        match (eta, give_back) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_eta.len()
    }

    /// Takes a delivery from `q.DQ`: holds it, or dead-letters it when it cannot be read.
    pub(crate) async fn accept(&mut self, shared: &Shared, queue: &str, delivery: AmqpDelivery) {
        let limit = shared.config.limits.max_size;
        if delivery.data.len() > limit {
            let reason = crate::limits::too_large_reason(delivery.data.len(), limit);
            dead_letter(queue, delivery, &reason).await;
            return;
        }
        let message = match Message::decode(&delivery.data) {
            Ok(message) => message,
            Err(err) => {
                let reason = format!("undecodable message: {}", truncate(&err.to_string()));
                dead_letter(queue, delivery, &reason).await;
                return;
            }
        };
        let eta = message.eta().unwrap_or(0);
        if eta_too_far(eta) {
            dead_letter(
                queue,
                delivery,
                &format!("eta {eta} is more than 100 years away"),
            )
            .await;
            return;
        }
        let properties = properties(&message);
        let mut ready = message.undelayed();
        ready.queue_name = queue.to_owned();
        self.seq += 1;
        self.by_eta.insert(
            (eta, self.seq),
            Held {
                delivery,
                ready: ready.encode(),
                properties,
                give_back_at: Instant::now() + shared.config.max_hold,
            },
        );
    }

    /// Publishes the due messages to `queue`, then acks their `.DQ` copies; puts back in
    /// the delay queue those held for `max_hold`. On a failure the messages stay held
    /// (and come back with the channel if it died).
    pub(crate) async fn settle(&mut self, shared: &Shared, queue: &str) -> Result<()> {
        let now = now_ms();
        let due: Vec<(u64, u64)> = self
            .by_eta
            .keys()
            .take_while(|(eta, _)| *eta <= now)
            .copied()
            .collect();
        if !due.is_empty() {
            let batch: Vec<_> = due
                .iter()
                .map(|key| {
                    let held = &self.by_eta[key];
                    (
                        queue.to_owned(),
                        held.ready.clone(),
                        held.properties.clone(),
                    )
                })
                .collect();
            publish_or_fail(shared, &batch).await?;
            for key in due {
                if let Some(held) = self.by_eta.remove(&key) {
                    ack(held).await?;
                }
            }
        }
        let instant = Instant::now();
        let stale: Vec<(u64, u64)> = self
            .by_eta
            .iter()
            .filter(|(_, held)| held.give_back_at <= instant)
            .map(|(key, _)| *key)
            .collect();
        if !stale.is_empty() {
            let dq = dq(queue);
            let batch: Vec<_> = stale
                .iter()
                .map(|key| {
                    let held = &self.by_eta[key];
                    let properties = held.delivery.properties.clone();
                    (dq.clone(), held.delivery.data.clone(), properties)
                })
                .collect();
            publish_or_fail(shared, &batch).await?;
            tracing::debug!(queue = %dq, count = stale.len(), "gave held delayed messages back to the delay queue before the server's consumer timeout");
            for key in stale {
                if let Some(held) = self.by_eta.remove(&key) {
                    ack(held).await?;
                }
            }
        }
        Ok(())
    }
}

async fn publish_or_fail(
    shared: &Shared,
    batch: &[(String, Vec<u8>, BasicProperties)],
) -> Result<()> {
    match publish(shared, batch).await {
        Ok(()) => Ok(()),
        Err(Failed::Lost(err)) | Err(Failed::Refused(err)) => Err(err),
        Err(Failed::Unroutable(queue)) => Err(Error::QueueNotFound(queue)),
    }
}

async fn ack(held: Held) -> Result<()> {
    held.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(|err| Error::Connection {
            context: "rabbitmq ack of a delayed message".into(),
            source: Some(Box::new(err)),
        })
}

/// Nacks a `.DQ` delivery without requeueing: RabbitMQ dead-letters it to `q.XQ`.
async fn dead_letter(queue: &str, delivery: AmqpDelivery, reason: &str) {
    tracing::error!(queue = %dq(queue), %reason, "dead-lettering a delayed message");
    let nack = BasicNackOptions {
        requeue: false,
        ..BasicNackOptions::default()
    };
    if let Err(err) = delivery.acker.nack(nack).await {
        tracing::warn!(error = %err, "could not dead-letter a delayed message; it comes back when its channel closes");
    }
}
