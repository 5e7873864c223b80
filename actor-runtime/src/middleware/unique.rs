//! [`UniqueJobs`]: releases a message's uniqueness key when it finishes for good (see
//! [`unique`](crate::unique)).

use async_trait::async_trait;

use crate::broker::{Broker, Fate, MessageContext, Middleware, Unique, UNIQUE_KEY};

/// Releases a message's uniqueness key when it finishes for good: acked without a retry
/// (done or skipped) or dead-lettered. Part of the default middleware; it does nothing (no
/// round trip) for messages without a `unique_key`.
///
/// ```
/// use actor_runtime::Broker;
/// use actor_runtime::unique::UniqueJobs;
///
/// assert!(Broker::stub().find::<UniqueJobs>().is_some());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct UniqueJobs;

impl UniqueJobs {
    async fn release(broker: &Broker, ctx: &MessageContext) {
        let message = &ctx.message;
        if !message.options.contains_key(UNIQUE_KEY) {
            return;
        }
        let Ok(Some(unique)) = Unique::of(message) else {
            return;
        };
        let Some(keys) = broker.backend().unique_keys() else {
            return;
        };
        if let Err(err) = keys.release(&unique.key, &message.message_id).await {
            tracing::warn!(message_id = %message.message_id, key = %unique.key, error = %err, ttl_ms = unique.ttl.as_millis() as u64, "could not release the unique key; it expires after its bound");
        }
    }
}

#[async_trait]
impl Middleware for UniqueJobs {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn after_ack(&self, broker: &Broker, ctx: &MessageContext) {
        if !matches!(ctx.fate(), Fate::Retry { .. }) {
            UniqueJobs::release(broker, ctx).await;
        }
    }

    async fn after_nack(&self, broker: &Broker, ctx: &MessageContext) {
        UniqueJobs::release(broker, ctx).await;
    }
}
