//! Pipelines: on success, enqueue the next message of a pipeline with this result.

use crate::broker::Broker;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{MessageContext, Middleware};
use crate::actor::ActorFailure;
use crate::message::Message;
use crate::truncate::truncate;

/// Runs the next step of a pipeline: when an actor succeeds and its message carries a
/// `pipe_target` (the next message, as Dramatiq nests it), enqueues that message with this
/// result appended to its arguments (unless `pipe_ignore`), after its `delay` option.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pipelines;

#[async_trait]
impl Middleware for Pipelines {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn after_process_message(
        &self,
        broker: &Broker,
        ctx: &mut MessageContext,
        result: &Result<Value, ActorFailure>,
    ) {
        let Ok(value) = result else { return };
        if ctx.is_failed() {
            return;
        }
        let Some(target) = ctx.message.options.get("pipe_target") else {
            return;
        };
        let mut next: Message = match serde_json::from_value(target.clone()) {
            Ok(next) => next,
            Err(err) => {
                let err = truncate(&err.to_string()).into_owned();
                tracing::error!(message_id = %ctx.message.message_id, error = %err, "malformed pipe_target; the pipeline stops here");
                return;
            }
        };
        let ignore = next
            .options
            .get("pipe_ignore")
            .and_then(Value::as_bool)
            .or(ctx.actor().options.pipe_ignore)
            .unwrap_or(false);
        if !ignore {
            next.args.push(value.clone());
        }
        // A delay over `MAX_DELAY` (say `1e30`) fails the enqueue: this step is dead-lettered
        // with the reason.
        let delay = next.option_u64("delay").map(Duration::from_millis);
        if let Err(err) = broker.enqueue(next, delay).await {
            let err = truncate(&err.to_string()).into_owned();
            ctx.fail(format!("could not enqueue the next pipeline step: {err}"));
        }
    }
}
