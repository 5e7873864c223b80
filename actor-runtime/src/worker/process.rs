//! Processing one message: decode, find the actor, run the middleware and the actor, and
//! decide the message's fate.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::actor::ActorFailure;
use crate::broker::DeliveryTag;
use crate::message::{DecodeError, Message};
use crate::middleware::{current::Current, MessageContext, Middleware};
use crate::truncate::truncate;

use super::executor::{run_handler, Shared};

/// What happens to a message after processing.
pub(crate) enum Outcome {
    /// Done (or retried): remove it from the broker.
    Ack(Option<Box<MessageContext>>),
    /// Dead-letter it, with the reason.
    Nack(String, Option<Box<MessageContext>>),
}

pub(crate) async fn process(
    shared: &Shared,
    middleware: &[Arc<dyn Middleware>],
    tag: &DeliveryTag,
    message: Result<Message, DecodeError>,
) -> Outcome {
    let message = match message {
        Ok(message) => message,
        Err(err) => {
            // serde quotes the offending value: bound what is copied from the payload.
            let err = truncate(&err.to_string()).into_owned();
            tracing::error!(queue = %tag.queue, redis_id = %tag.id, error = %err, "undecodable message; dead-lettering it");
            return Outcome::Nack(format!("undecodable message: {err}"), None);
        }
    };
    let Some(actor) = shared.registry.get(&message.actor_name) else {
        let name = truncate(&message.actor_name);
        tracing::error!(message_id = %truncate(&message.message_id), actor = %name, queue = %tag.queue, "no actor of this name is registered; dead-lettering the message");
        return Outcome::Nack(format!("unknown actor `{name}`"), None);
    };
    let mut ctx = Box::new(MessageContext::new(
        message,
        tag.queue.clone(),
        shared.broker.clone(),
        actor,
        shared.shutdown.clone(),
    ));

    let mut skipped = false;
    for m in middleware {
        if m.before_process_message(&mut ctx).await.is_err() {
            skipped = true;
            break;
        }
    }
    if skipped {
        for m in middleware.iter().rev() {
            m.after_skip_message(&mut ctx).await;
        }
    } else {
        let result = match actor.handler(&ctx.message) {
            Ok(handler) => {
                let current = Current {
                    message: Arc::new(ctx.message.clone()),
                    shutdown: shared.shutdown.clone(),
                };
                let interrupt = ctx.interrupt_on_shutdown().then(|| shared.shutdown.clone());
                run_handler(shared, handler, ctx.time_limit(), current, interrupt).await
            }
            Err(err) => {
                // serde quotes the offending argument, which may be megabytes.
                let err = truncate(&err.to_string()).into_owned();
                tracing::error!(message_id = %ctx.message.message_id, actor = actor.name, error = %err, "bad arguments; dead-lettering the message");
                // Arguments will not fix themselves: fail for good, no retry.
                ctx.fail(format!("bad arguments: {err}"));
                Err(ActorFailure::new("ArgumentError", err))
            }
        };
        match &result {
            Ok(value) => {
                shared.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                ctx.set_result(value.clone());
            }
            Err(failure) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                ctx.set_error(failure.clone());
            }
        }
        for m in middleware.iter().rev() {
            m.after_process_message(&mut ctx, &result).await;
        }
        if let Err(failure) = result {
            if !ctx.retry_scheduled() && !ctx.is_failed() {
                // Nothing scheduled a retry (no Retries middleware): keep the message.
                ctx.fail(failure.to_string());
            }
            // A scheduled retry is logged (as a warning) by whoever scheduled it; a failure
            // for good is an error.
            if !ctx.retry_scheduled() {
                let error = truncate(&failure.to_string()).into_owned();
                tracing::error!(message_id = %ctx.message.message_id, actor = actor.name, %error, retries = ctx.message.retries(), "actor failed; dead-lettering the message");
            }
        }
    }
    match ctx.failure_reason() {
        Some(reason) => Outcome::Nack(reason.to_owned(), Some(ctx)),
        None => Outcome::Ack(Some(ctx)),
    }
}
