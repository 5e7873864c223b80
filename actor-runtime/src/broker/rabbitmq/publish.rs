//! Publishing: to the default exchange, routing key the message's `queue_name` (`q`, or
//! `q.DQ` for a delayed message), persistent, with the message's `broker_priority`, the body
//! the same message JSON as on Redis. With confirms (the default) a batch is published in one
//! go and its confirms awaited together, so `send` returns once RabbitMQ has every message.

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tokio::time::Instant;

use super::conn::Live;
use super::Shared;
use crate::error::Error;
use crate::message::Message;

/// The AMQP properties of `message`: persistent (`delivery_mode` 2) and, when the message
/// has a `broker_priority` option, that priority (as Dramatiq's RabbitmqBroker sends it).
pub(crate) fn properties(message: &Message) -> BasicProperties {
    let properties = BasicProperties::default().with_delivery_mode(2);
    match message.option_u64("broker_priority") {
        Some(priority) => properties.with_priority(priority.min(255) as u8),
        None => properties,
    }
}

/// Why a publish failed.
pub(crate) enum Failed {
    /// The connection or channel was lost: retry on a new one.
    Lost(Error),
    /// RabbitMQ returned a message as unroutable: its queue is gone, declare it again.
    Unroutable(String),
    /// RabbitMQ refused (nacked) a message.
    Refused(Error),
}

/// Publishes `messages` (already encoded, with their routing keys), retrying on new
/// connections within the reconnect timeout. A retried batch may publish a message twice
/// (at-least-once).
pub(crate) async fn publish(
    shared: &Shared,
    messages: &[(String, Vec<u8>, BasicProperties)],
) -> std::result::Result<(), Failed> {
    let deadline = Instant::now() + shared.config.reconnect_timeout;
    loop {
        let live = shared.conn.live().await.map_err(Failed::Lost)?;
        match publish_on(shared, &live, messages).await {
            Err(Failed::Lost(err)) => {
                shared.conn.lost(live.generation).await;
                if Instant::now() >= deadline {
                    return Err(Failed::Lost(err));
                }
                tracing::warn!(error = %err, "publishing failed on a lost connection; retrying");
            }
            other => return other,
        }
    }
}

async fn publish_on(
    shared: &Shared,
    live: &Live,
    messages: &[(String, Vec<u8>, BasicProperties)],
) -> std::result::Result<(), Failed> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut confirms: Vec<PublisherConfirm> = Vec::with_capacity(messages.len());
    for (routing_key, payload, properties) in messages {
        let confirm = live
            .publish
            .basic_publish(
                "".into(),
                routing_key.as_str().into(),
                options,
                payload,
                properties.clone(),
            )
            .await
            .map_err(|err| Failed::Lost(shared.conn.error("publish", err)))?;
        confirms.push(confirm);
    }
    if !shared.config.confirms {
        return Ok(());
    }
    let mut unroutable = None;
    for confirm in confirms {
        match confirm.await {
            Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
                unroutable = Some(returned.delivery.routing_key.to_string());
            }
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
            Ok(Confirmation::Nack(None)) => {
                return Err(Failed::Refused(Error::Broker {
                    context: "rabbitmq publish: the server nacked a message".into(),
                    source: None,
                }))
            }
            Err(err) => return Err(Failed::Lost(shared.conn.error("publish confirm", err))),
        }
    }
    match unroutable {
        Some(queue) => Err(Failed::Unroutable(queue)),
        None => Ok(()),
    }
}
