//! ShutdownNotifications: opted-in actors are cancelled when shutdown begins.

use crate::broker::Broker;
use async_trait::async_trait;

use super::{MessageContext, Middleware, Skip};

/// When a worker begins shutting down, cancels the running actors that opted in with
/// `notify_shutdown` (actor option, message option, or this default); they fail with
/// `Shutdown` and Retries runs them again later. Every actor can also watch
/// [`shutdown_requested`](crate::middleware::shutdown_requested) itself.
///
/// ```
/// use actor_runtime::actor;
///
/// #[actor(notify_shutdown = true, max_retries = 100)]
/// async fn long_export(job: u64) {
///     // cancelled at shutdown, retried on the next worker
///     let _ = job;
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ShutdownNotifications {
    /// Default for actors that do not say.
    pub notify_shutdown: bool,
}

#[async_trait]
impl Middleware for ShutdownNotifications {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn before_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
    ) -> Result<(), Skip> {
        let notify = ctx
            .flag_or("notify_shutdown", ctx.actor().options.notify_shutdown)
            .unwrap_or(self.notify_shutdown);
        ctx.set_interrupt_on_shutdown(notify);
        Ok(())
    }
}
