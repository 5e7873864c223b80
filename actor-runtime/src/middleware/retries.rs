//! Retries: failed messages run again later, with exponential backoff, until exhausted.

use crate::broker::Broker;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::callbacks::send_to_actor;
use super::{MessageContext, Middleware};
use crate::actor::ActorFailure;
use crate::message::now_ms;
use crate::truncate::truncate;

/// Seven days: Dramatiq's ceiling for any backoff.
const MAX_BACKOFF_CAP: u64 = 7 * 24 * 3600 * 1000;

/// The least backoff, in ms, a message's own `min_backoff`/`max_backoff` can ask for.
///
/// With `min_backoff: 0` and unlimited retries a failing message would otherwise run again
/// as fast as the broker can move it (thousands of runs a second); 100 ms bounds one
/// message to ten runs a second and leaves any realistic per-message setting (Dramatiq's
/// default is 15 s) as written. An actor's own settings, chosen by its author, are not
/// floored.
const MESSAGE_BACKOFF_FLOOR: u64 = 100;

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
/// A message's own options are read defensively, since any producer can write them:
/// - `max_retries: null` means unlimited (as in Dramatiq); a number reads as Dramatiq
///   compares it, `retries >= max_retries` (so `-1` means no retry and `1.5` two retries);
///   any other type is ignored with a warning, and the actor's setting applies.
/// - `min_backoff`/`max_backoff` must be numbers (else ignored with a warning) and are
///   raised to at least 100 ms, as is the backoff of a retry they set: a message cannot ask
///   to be re-run in a hot loop. The actor's own settings may be lower.
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
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn after_process_message(
        &self,
        broker: &Broker,
        ctx: &mut MessageContext,
        result: &Result<Value, ActorFailure>,
    ) {
        let Err(failure) = result else { return };
        // A cancelled message is done with: acked, not retried.
        if ctx.is_failed() || ctx.is_cancelled() {
            return;
        }
        let actor = ctx.actor();
        let error = truncate(&failure.to_string()).into_owned();
        // A final failure is logged once, by the worker, with the reason given here.
        if actor.options.throws_matches(failure) {
            ctx.fail(error);
            return;
        }
        let retries = ctx.message.retries();
        let options = &mut ctx.message.options;
        options.insert("retries".into(), retries.saturating_add(1).into());
        options.insert("traceback".into(), failure.to_string().into());
        options.insert("requeue_timestamp".into(), now_ms().into());

        let actor_max_retries = actor.options.max_retries.or(self.max_retries);
        let max_retries = match ctx.message.options.get("max_retries") {
            None => actor_max_retries,
            Some(value) => message_max_retries(value).unwrap_or_else(|| {
                tracing::warn!(message_id = %ctx.message.message_id, actor = actor.name, max_retries = %truncate(&value.to_string()), "the message's `max_retries` is neither a number nor null; using the actor's");
                actor_max_retries
            }),
        };
        let give_up = match actor.options.retry_when {
            Some(retry_when) => !retry_when(retries, failure),
            None => max_retries.is_some_and(|max| retries >= max),
        };
        if give_up {
            ctx.fail(format!(
                "retries exhausted after {retries} retries: {error}"
            ));
            if let Some(target) =
                ctx.name_or("on_retry_exhausted", actor.options.on_retry_exhausted)
            {
                let args = vec![
                    serde_json::to_value(&ctx.message).unwrap_or(Value::Null),
                    json!({"retries": retries, "max_retries": max_retries}),
                ];
                send_to_actor(broker, ctx, &target, args).await;
            }
            return;
        }

        let min_backoff = message_backoff(ctx, "min_backoff");
        let max_backoff = message_backoff(ctx, "max_backoff");
        let floor = if min_backoff.is_some() || max_backoff.is_some() {
            MESSAGE_BACKOFF_FLOOR
        } else {
            0
        };
        let min_backoff = min_backoff
            .or(actor.options.min_backoff)
            .unwrap_or(self.min_backoff);
        let max_backoff = max_backoff
            .or(actor.options.max_backoff)
            .unwrap_or(self.max_backoff)
            .min(MAX_BACKOFF_CAP);
        let backoff = compute_backoff(retries, min_backoff, max_backoff).max(floor);
        // The worker enqueues the retry (this message, its options as written above) and
        // logs it, once every hook has run.
        ctx.retry_in(Duration::from_millis(backoff));
    }
}

fn message_max_retries(value: &Value) -> Option<Option<u32>> {
    match value {
        Value::Null => Some(None),
        Value::Number(n) => {
            let max = match (n.as_u64(), n.as_f64()) {
                (Some(max), _) => max.min(u32::MAX.into()) as u32,
                // Saturating: a negative count is 0, a huge one u32::MAX.
                (None, Some(max)) => max.ceil() as u32,
                (None, None) => 0,
            };
            Some(Some(max))
        }
        _ => None,
    }
}

/// A message's own `min_backoff`/`max_backoff` in ms, raised to the floor; `None` when it
/// sets none, or sets something other than a number (with a warning).
fn message_backoff(ctx: &MessageContext, key: &str) -> Option<u64> {
    let value = ctx.message.options.get(key)?;
    match value.as_f64() {
        // Saturating: a negative backoff is 0, then floored.
        Some(ms) => Some((ms as u64).max(MESSAGE_BACKOFF_FLOOR)),
        None => {
            tracing::warn!(message_id = %ctx.message.message_id, actor = ctx.actor().name, option = key, value = %truncate(&value.to_string()), "the message's backoff is not a number; using the actor's");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_max_retries_reads_as_dramatiq_compares_it() {
        let read = |v: Value| message_max_retries(&v);
        assert_eq!(read(json!(null)), Some(None));
        assert_eq!(read(json!(3)), Some(Some(3)));
        assert_eq!(read(json!(3.0)), Some(Some(3)));
        assert_eq!(read(json!(1.5)), Some(Some(2)));
        assert_eq!(read(json!(-1)), Some(Some(0)));
        assert_eq!(read(json!(-0.5)), Some(Some(0)));
        assert_eq!(read(json!(1e300)), Some(Some(u32::MAX)));
        assert_eq!(read(json!(u64::MAX)), Some(Some(u32::MAX)));
        for wrong in [
            json!("x"),
            json!("3"),
            json!(true),
            json!([1]),
            json!({"n": 1}),
        ] {
            assert_eq!(read(wrong.clone()), None, "{wrong}");
        }
    }

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
