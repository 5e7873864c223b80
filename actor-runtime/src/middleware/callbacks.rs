//! Callbacks: `on_success` / `on_failure` actors.

use crate::broker::Broker;
use async_trait::async_trait;
use serde_json::{json, Value};

use super::{MessageContext, Middleware};
use crate::actor::ActorFailure;
use crate::message::Message;
use crate::registry::Registry;

/// Sends `on_success` the pair `(message, result)` when an actor succeeds, and `on_failure`
/// the pair `(message, {"type": ..., "message": ...})` each time it fails (retried failures
/// included, as in Dramatiq). Both name actors, by name or path, on the actor or per message.
///
/// ```
/// use actor_runtime::actor;
/// use serde_json::Value;
///
/// #[actor]
/// async fn charged(message: Value, receipt: Value) {
///     println!("{} -> {receipt}", message["message_id"]);
/// }
///
/// #[actor]
/// async fn charge_failed(message: Value, error: Value) {
///     println!("{} failed: {}", message["message_id"], error["message"]);
/// }
///
/// #[actor(on_success = charged, on_failure = "charge_failed")]
/// async fn charge(cents: u64) -> Result<String, String> {
///     Ok(format!("receipt for {cents}"))
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Callbacks;

#[async_trait]
impl Middleware for Callbacks {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn after_process_message(
        &self,
        broker: &Broker,
        ctx: &mut MessageContext,
        result: &Result<Value, ActorFailure>,
    ) {
        let options = ctx.actor().options;
        match result {
            Ok(value) if !ctx.is_failed() => {
                if let Some(target) = ctx.name_or("on_success", options.on_success) {
                    let message = serde_json::to_value(&ctx.message).unwrap_or(Value::Null);
                    send_to_actor(broker, ctx, &target, vec![message, value.clone()]).await;
                }
            }
            Ok(_) => {}
            Err(failure) => {
                if let Some(target) = ctx.name_or("on_failure", options.on_failure) {
                    let message = serde_json::to_value(&ctx.message).unwrap_or(Value::Null);
                    let error =
                        json!({"type": failure.short_type_name(), "message": failure.message});
                    send_to_actor(broker, ctx, &target, vec![message, error]).await;
                }
            }
        }
    }
}

/// Enqueues a call to the actor named `target`, on its queue if it is registered here (else
/// on `default`: it may live in another process).
pub(crate) async fn send_to_actor(
    broker: &Broker,
    ctx: &MessageContext,
    target: &str,
    args: Vec<Value>,
) {
    let queue = Registry::global()
        .ok()
        .and_then(|r| r.get(target))
        .map_or("default", |r| r.queue);
    let message = Message::new(queue, target, args);
    if let Err(err) = broker.enqueue(message, None).await {
        tracing::error!(message_id = %ctx.message.message_id, callback = target, error = %err, "could not enqueue the callback");
    }
}
