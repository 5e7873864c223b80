//! Processing one message: decode, find the actor, run it, decide its fate.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::broker::Delivery;

use super::executor::{run_handler, Shared};

/// What happens to a message after processing.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done: remove it from the broker.
    Ack,
    /// Dead-letter it, with the reason.
    Nack(String),
    /// Put it back in its queue (it was not run).
    #[allow(dead_code)]
    Requeue,
}

pub(crate) async fn process(shared: &Shared, delivery: &Delivery) -> Outcome {
    let tag = &delivery.tag;
    let message = match &delivery.message {
        Ok(message) => message,
        Err(err) => {
            tracing::error!(queue = %tag.queue, redis_id = %tag.id, error = %err, "undecodable message; dead-lettering it");
            return Outcome::Nack(format!("undecodable message: {err}"));
        }
    };
    let Some(actor) = shared.registry.get(&message.actor_name) else {
        tracing::error!(message_id = %message.message_id, actor = %message.actor_name, queue = %tag.queue, "no actor of this name is registered; dead-lettering the message");
        return Outcome::Nack(format!("unknown actor `{}`", message.actor_name));
    };
    let handler = match actor.handler(message) {
        Ok(handler) => handler,
        Err(err) => {
            tracing::error!(message_id = %message.message_id, actor = actor.name, error = %err, "bad arguments; dead-lettering the message");
            return Outcome::Nack(format!("bad arguments: {err}"));
        }
    };
    let time_limit = actor.options.time_limit.map(Duration::from_millis);
    match run_handler(handler, time_limit).await {
        Ok(_) => {
            shared.counters.succeeded.fetch_add(1, Ordering::Relaxed);
            Outcome::Ack
        }
        Err(failure) => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(message_id = %message.message_id, actor = actor.name, error = %failure, "actor failed");
            Outcome::Nack(failure.to_string())
        }
    }
}
