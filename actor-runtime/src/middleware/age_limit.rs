//! AgeLimit: messages older than `max_age` are dead-lettered unrun.

use crate::broker::Broker;
use async_trait::async_trait;

use super::{MessageContext, Middleware, Skip};
use crate::message::now_ms;

/// Dead-letters messages older than `max_age` (ms since first sent) instead of running them.
///
/// The limit is the message's `max_age` option, else the actor's, else this default (none).
///
/// ```
/// use actor_runtime::actor;
///
/// // A price quote is worthless after a minute.
/// #[actor(max_age = "1m")]
/// async fn quote(symbol: String) {
///     println!("quoting {symbol}");
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AgeLimit {
    /// Default limit in ms for actors and messages that set none.
    pub max_age: Option<u64>,
}

#[async_trait]
impl Middleware for AgeLimit {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn before_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
    ) -> Result<(), Skip> {
        let Some(max_age) = ctx.option_or("max_age", ctx.actor().options.max_age.or(self.max_age))
        else {
            return Ok(());
        };
        let age = now_ms().saturating_sub(ctx.message.message_timestamp);
        if age >= max_age {
            ctx.fail(format!(
                "AgeLimitExceeded: message is {age} ms old, max_age is {max_age} ms"
            ));
            return Err(Skip);
        }
        Ok(())
    }
}
