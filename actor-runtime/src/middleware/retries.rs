//! Retries: failed messages run again later, with exponential backoff, until exhausted.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::callbacks::send_to_actor;
use super::{MessageContext, Middleware};
use crate::actor::ActorFailure;
use crate::message::now_ms;

/// Seven days: Dramatiq's ceiling for any backoff.
const MAX_BACKOFF_CAP: u64 = 7 * 24 * 3600 * 1000;

/// Retries failed messages with exponential backoff and jitter, through the delay queue
/// (so any worker, Python ones included, can pick the retry up). Exhausted retries
/// dead-letter the message.
///
/// Options, from the message, else the actor, else these defaults: `max_retries` (20),
/// `min_backoff` (15 s), `max_backoff` (7 days), plus the actor's `retry_when` predicate,
/// `throws` (error types never retried) and `on_retry_exhausted`. The message records
/// `retries`, `traceback` (the error's type and text) and `requeue_timestamp`, as Dramatiq
/// does.
///
/// ```
/// use actor_runtime::{actor, ActorFailure};
///
/// #[derive(Debug)]
/// struct BadRequest;
/// impl std::fmt::Display for BadRequest {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("bad request")
///     }
/// }
///
/// fn transient(retries: u32, failure: &ActorFailure) -> bool {
///     retries < 5 && failure.message.contains("timeout")
/// }
///
/// #[actor(max_retries = 3, min_backoff = "1s", max_backoff = "1m", throws = [BadRequest])]
/// async fn call_api(id: u64) -> Result<(), BadRequest> {
///     if id == 0 { Err(BadRequest) } else { Ok(()) }
/// }
///
/// #[actor(retry_when = transient)]
/// async fn sync_feed(feed: String) -> Result<(), String> {
///     Err(format!("timeout fetching {feed}"))
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Retries {
    /// Retries before dead-lettering (`None`: forever).
    pub max_retries: Option<u32>,
    /// Smallest backoff, ms.
    pub min_backoff: u64,
    /// Largest backoff, ms (capped at 7 days).
    pub max_backoff: u64,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max_retries: Some(20),
            min_backoff: 15_000,
            max_backoff: MAX_BACKOFF_CAP,
        }
    }
}

/// Dramatiq's backoff: `min_backoff · 2^retries · U(1, 2)`, and past `max_backoff`,
/// `max_backoff · U(0.5, 1)`. In ms.
///
/// ```
/// let first = actor_runtime::middleware::compute_backoff(0, 15_000, 604_800_000);
/// assert!((15_000..=30_000).contains(&first));
/// ```
pub fn compute_backoff(retries: u32, min_backoff: u64, max_backoff: u64) -> u64 {
    let base = min_backoff.saturating_mul(1u64 << retries.min(32));
    let jittered = (base as f64 * (1.0 + fastrand::f64())) as u64;
    if jittered > max_backoff {
        (max_backoff as f64 * (0.5 + fastrand::f64() / 2.0)) as u64
    } else {
        jittered
    }
}

#[async_trait]
impl Middleware for Retries {
    async fn after_process_message(
        &self,
        ctx: &mut MessageContext,
        result: &Result<Value, ActorFailure>,
    ) {
        let Err(failure) = result else { return };
        if ctx.is_failed() {
            return;
        }
        let actor = ctx.actor();
        if actor.options.throws_matches(failure) {
            tracing::info!(message_id = %ctx.message.message_id, actor = actor.name, error = %failure, "error is in `throws`; not retrying");
            ctx.fail(failure.to_string());
            return;
        }
        let retries = ctx.message.retries();
        let options = &mut ctx.message.options;
        options.insert("retries".into(), (retries + 1).into());
        options.insert("traceback".into(), failure.to_string().into());
        options.insert("requeue_timestamp".into(), now_ms().into());

        let max_retries = match ctx.message.options.get("max_retries") {
            Some(Value::Null) => None,
            Some(value) => value.as_u64().map(|m| m.min(u32::MAX as u64) as u32),
            None => actor.options.max_retries.or(self.max_retries),
        };
        let give_up = match actor.options.retry_when {
            Some(retry_when) => !retry_when(retries, failure),
            None => max_retries.is_some_and(|max| retries >= max),
        };
        if give_up {
            tracing::warn!(message_id = %ctx.message.message_id, actor = actor.name, retries, "retries exhausted; dead-lettering the message");
            ctx.fail(format!(
                "retries exhausted after {retries} retries: {failure}"
            ));
            if let Some(target) =
                ctx.name_or("on_retry_exhausted", actor.options.on_retry_exhausted)
            {
                let args = vec![
                    serde_json::to_value(&ctx.message).unwrap_or(Value::Null),
                    json!({"retries": retries, "max_retries": max_retries}),
                ];
                send_to_actor(ctx, &target, args).await;
            }
            return;
        }

        let min_backoff = ctx
            .option_or("min_backoff", actor.options.min_backoff)
            .unwrap_or(self.min_backoff);
        let max_backoff = ctx
            .option_or("max_backoff", actor.options.max_backoff)
            .unwrap_or(self.max_backoff)
            .min(MAX_BACKOFF_CAP);
        let backoff = compute_backoff(retries, min_backoff, max_backoff);
        let mut retry = ctx.message.clone();
        retry.queue_name = retry.canonical_queue().to_owned();
        retry.options.remove("eta");
        match ctx
            .broker()
            .enqueue(retry, Some(Duration::from_millis(backoff)))
            .await
        {
            Ok(_) => {
                tracing::warn!(message_id = %ctx.message.message_id, actor = actor.name, error = %failure, retry = retries + 1, backoff_ms = backoff, "actor failed; retrying");
                ctx.mark_retry_scheduled();
            }
            Err(err) => {
                tracing::error!(message_id = %ctx.message.message_id, actor = actor.name, error = %err, "could not schedule the retry; dead-lettering the message");
                ctx.fail(format!("could not schedule retry ({err}) after: {failure}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_respects_the_cap() {
        for retries in 0..5 {
            let b = compute_backoff(retries, 1000, u64::MAX);
            let base = 1000 << retries;
            assert!((base..=2 * base).contains(&b), "{retries}: {b}");
        }
        for _ in 0..100 {
            let b = compute_backoff(40, 15_000, 60_000);
            assert!((30_000..=60_000).contains(&b), "{b}");
        }
    }
}
