//! Processing one message: decode, find the actor, run the middleware and the actor, and
//! decide the message's fate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

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
    let ctx = Box::new(MessageContext::new(
        message,
        tag.queue.clone(),
        shared.broker.clone(),
        actor,
        shared.shutdown.clone(),
    ));
    // Every line logged while the message is processed, the actor's own included (plain
    // `fn` actors enter it on their thread), carries these fields. A debug span: at info it
    // cost about 3 µs a message in the no-op benchmark (its fields are formatted when it is
    // created), twice what the rest of the message path costs.
    let span = tracing::debug_span!(
        "message",
        message_id = %truncate(&ctx.message.message_id),
        actor = actor.name,
        queue = ctx.queue(),
        retries = ctx.message.retries(),
    );
    run_message(shared, middleware, ctx).instrument(span).await
}

/// How a message processed by its actor ended, for the log.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Succeeded,
    Skipped,
    Retrying,
    DeadLettered,
}

impl Fate {
    fn as_str(self) -> &'static str {
        match self {
            Fate::Succeeded => "succeeded",
            Fate::Skipped => "skipped",
            Fate::Retrying => "retrying",
            Fate::DeadLettered => "dead-lettered",
        }
    }
}

/// Runs the middleware and the actor on a decoded message of a registered actor, and
/// decides (and logs) its fate: the one place a final failure is logged.
async fn run_message(
    shared: &Shared,
    middleware: &[Arc<dyn Middleware>],
    mut ctx: Box<MessageContext>,
) -> Outcome {
    let started = Instant::now();
    // Retries counts this run once it fails: the count before it is the one to report.
    let retries = ctx.message.retries();
    tracing::debug!("message received");
    let actor = ctx.actor();
    let mut skipped = false;
    for m in middleware {
        if m.before_process_message(&mut ctx).await.is_err() {
            skipped = true;
            break;
        }
    }
    let fate = if skipped {
        for m in middleware.iter().rev() {
            m.after_skip_message(&mut ctx).await;
        }
        Fate::Skipped
    } else {
        let mut bad_arguments = false;
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
                // Arguments will not fix themselves: fail for good, no retry.
                ctx.fail(format!("bad arguments: {err}"));
                bad_arguments = true;
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
        match result {
            // Failed after all by a middleware (which said why).
            Ok(_) if ctx.is_failed() => Fate::DeadLettered,
            Ok(_) => Fate::Succeeded,
            // A scheduled retry is logged (as a warning) by whoever scheduled it.
            Err(_) if ctx.retry_scheduled() => Fate::Retrying,
            Err(failure) => {
                if !ctx.is_failed() {
                    // Nothing scheduled a retry (no Retries middleware): keep the message.
                    ctx.fail(failure.to_string());
                }
                let error = truncate(&failure.to_string()).into_owned();
                let reason = truncate(ctx.failure_reason().unwrap_or_default()).into_owned();
                let (message_id, actor, queue) = (
                    truncate(&ctx.message.message_id).into_owned(),
                    ctx.actor().name,
                    ctx.queue().to_owned(),
                );
                if bad_arguments {
                    tracing::error!(%message_id, actor, %queue, %error, retries, reason, "bad arguments; dead-lettering the message");
                } else {
                    tracing::error!(%message_id, actor, %queue, %error, retries, reason, "actor failed; dead-lettering the message");
                }
                Fate::DeadLettered
            }
        }
    };
    let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
    tracing::debug!(duration_ms, outcome = fate.as_str(), "message finished");
    match ctx.failure_reason() {
        Some(reason) => Outcome::Nack(reason.to_owned(), Some(ctx)),
        None => Outcome::Ack(Some(ctx)),
    }
}
