//! Processing one message: decode, find the actor, run the middleware and the actor, and
//! decide the message's fate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::actor::ActorFailure;
use crate::broker::DeliveryTag;
use crate::broker::{Fate, MessageContext, Middleware};
use crate::message::{DecodeError, Message};
use crate::middleware::current::Current;
use crate::truncate::truncate;

use super::handler::run_handler;
use super::state::Shared;

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
    size: usize,
) -> Outcome {
    let message = match message {
        Ok(message) => message,
        Err(err) if err.over_limit().is_some() => {
            let reason = err.to_string();
            tracing::error!(queue = %tag.queue, redis_id = %tag.id, %reason, "message over the maximum message size; dead-lettering it unread");
            return Outcome::Nack(reason, None);
        }
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
        actor,
        shared.shutdown.clone(),
    ));
    ctx.set_payload_size(size);
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
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::context::FutureExt as _;
        // The attempt's consumer span, current while the middleware and the actor run, so
        // what they send continues the trace.
        let cx = crate::otel::start_process(&ctx.message, shared.broker.kind());
        let outcome = run_message(shared, middleware, ctx)
            .instrument(span)
            .with_context(cx.clone())
            .await;
        let failure = match &outcome {
            Outcome::Nack(reason, _) => Some(reason.clone()),
            Outcome::Ack(Some(ctx)) => ctx.error().map(ToString::to_string),
            Outcome::Ack(None) => None,
        };
        crate::otel::finish_process(&cx, failure.as_deref());
        outcome
    }
    #[cfg(not(feature = "opentelemetry"))]
    run_message(shared, middleware, ctx).instrument(span).await
}

/// How a message processed by its actor ended, for the log.
/// How a message's processing ended, for the `message finished` line.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Succeeded,
    Skipped,
    Retrying,
    DeadLettered,
    Cancelled,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Skipped => "skipped",
            Ending::Retrying => "retrying",
            Ending::DeadLettered => "dead-lettered",
            Ending::Cancelled => "cancelled",
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
    let broker = &shared.broker;
    let mut skipped = false;
    for m in middleware {
        if m.before_process_message(broker, &mut ctx).await.is_err() {
            skipped = true;
            break;
        }
    }
    let ending = if skipped {
        for m in middleware.iter().rev() {
            m.after_skip_message(broker, &mut ctx).await;
        }
        if ctx.is_cancelled() {
            Ending::Cancelled
        } else if ctx.is_failed() {
            log_dead_letter(&ctx, None, retries, Cause::Skipped);
            Ending::DeadLettered
        } else {
            Ending::Skipped
        }
    } else {
        let mut bad_arguments = false;
        let result = match actor.handler(&ctx.message) {
            Ok(handler) => {
                let cancel = ctx.cancel_flag().cloned();
                let abort = cancel.as_ref().map(|flag| flag.abort.clone());
                let current = Current {
                    message: Arc::new(ctx.message.clone()),
                    shutdown: shared.shutdown.clone(),
                    cancel,
                };
                let interrupt = ctx.interrupt_on_shutdown().then(|| shared.shutdown.clone());
                let time_limit = ctx.time_limit();
                run_handler(shared, handler, time_limit, current, interrupt, abort).await
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
        // Ended after a cancel was requested (aborted, or stopped on the flag): cancelled.
        if ctx.cancel_flag().is_some_and(|flag| flag.is_requested()) {
            ctx.mark_cancelled();
        }
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
            m.after_process_message(broker, &mut ctx, &result).await;
        }
        if ctx.is_cancelled() {
            tracing::info!(message_id = %truncate(&ctx.message.message_id), actor = actor.name, queue = ctx.queue(), "message cancelled while it ran");
            Ending::Cancelled
        } else {
            decide(broker, &mut ctx, result.err(), retries, bad_arguments).await
        }
    };
    let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
    tracing::debug!(duration_ms, outcome = ending.as_str(), "message finished");
    match ctx.failure_reason() {
        Some(reason) if !ctx.is_cancelled() => Outcome::Nack(reason.to_owned(), Some(ctx)),
        _ => Outcome::Ack(Some(ctx)),
    }
}

/// The one place a message's fate is carried out and logged, once every hook has run: a
/// retry is enqueued (a retry that cannot be enqueued dead-letters the message), a failure
/// nothing handled is dead-lettered.
async fn decide(
    broker: &crate::Broker,
    ctx: &mut MessageContext,
    failure: Option<ActorFailure>,
    retries: u32,
    bad_arguments: bool,
) -> Ending {
    match (ctx.fate().clone(), failure) {
        (Fate::Ack, None) => Ending::Succeeded,
        (Fate::Retry { delay }, failure) => {
            let error = failure
                .as_ref()
                .map(|f| truncate(&f.to_string()).into_owned());
            match broker.enqueue(ctx.message.clone(), Some(delay)).await {
                Ok(_) => {
                    tracing::warn!(message_id = %truncate(&ctx.message.message_id), actor = ctx.actor().name, queue = ctx.queue(), error = error.as_deref().unwrap_or_default(), retry = ctx.message.retries(), backoff_ms = delay.as_millis() as u64, "actor failed; retrying");
                    Ending::Retrying
                }
                Err(err) => {
                    ctx.fail(format!(
                        "could not schedule retry ({err}) after: {}",
                        error.as_deref().unwrap_or("a failure")
                    ));
                    log_dead_letter(ctx, error.as_deref(), retries, Cause::of(bad_arguments));
                    Ending::DeadLettered
                }
            }
        }
        (Fate::Ack, Some(failure)) => {
            // Nothing decided (no Retries middleware): keep the message.
            ctx.fail(failure.to_string());
            log_dead_letter(
                ctx,
                Some(&failure.to_string()),
                retries,
                Cause::of(bad_arguments),
            );
            Ending::DeadLettered
        }
        (_, Some(failure)) => {
            let error = failure.to_string();
            log_dead_letter(ctx, Some(&error), retries, Cause::of(bad_arguments));
            Ending::DeadLettered
        }
        (_, None) => {
            // The actor succeeded, then a middleware failed the message (said why).
            log_dead_letter(ctx, None, retries, Cause::Middleware);
            Ending::DeadLettered
        }
    }
}

/// Why a message is dead-lettered, for its log line.
#[derive(Clone, Copy)]
enum Cause {
    ActorFailed,
    BadArguments,
    Skipped,
    Middleware,
}

impl Cause {
    fn of(bad_arguments: bool) -> Cause {
        if bad_arguments {
            Cause::BadArguments
        } else {
            Cause::ActorFailed
        }
    }
}

/// The one error line of a message dead-lettered for good.
fn log_dead_letter(ctx: &MessageContext, error: Option<&str>, retries: u32, cause: Cause) {
    let error = truncate(error.unwrap_or_default()).into_owned();
    let reason = truncate(ctx.failure_reason().unwrap_or_default()).into_owned();
    let (message_id, actor, queue) = (
        truncate(&ctx.message.message_id).into_owned(),
        ctx.actor().name,
        ctx.queue().to_owned(),
    );
    match cause {
        Cause::ActorFailed => {
            tracing::error!(%message_id, actor, %queue, %error, retries, reason, "actor failed; dead-lettering the message")
        }
        Cause::BadArguments => {
            tracing::error!(%message_id, actor, %queue, %error, retries, reason, "bad arguments; dead-lettering the message")
        }
        Cause::Skipped => {
            tracing::error!(%message_id, actor, %queue, retries, reason, "dead-lettering the message unrun")
        }
        Cause::Middleware => {
            tracing::error!(%message_id, actor, %queue, retries, reason, "dead-lettering the message after it ran")
        }
    }
}
