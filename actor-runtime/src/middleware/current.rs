//! CurrentMessage: an actor reads its own message, and the shutdown signal, while it runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::broker::{CancelFlag, Shutdown};

use crate::message::Message;

#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) message: Arc<Message>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) cancel: Option<CancelFlag>,
}

tokio::task_local! {
    pub(crate) static CURRENT: Current;
}

/// Access to the message being processed, from inside an actor (Dramatiq's
/// `CurrentMessage`). Always on: it costs one shared pointer per message.
///
/// ```
/// use actor_runtime::{actor, current_message};
///
/// #[actor]
/// async fn audited(order: u64) {
///     if let Some(message) = current_message() {
///         println!("order {order}: message {} try {}", message.message_id, message.retries() + 1);
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CurrentMessage;

impl CurrentMessage {
    /// The message being processed, inside an actor; `None` elsewhere.
    pub fn get() -> Option<Arc<Message>> {
        current_message()
    }
}

/// The message being processed, inside an actor; `None` elsewhere.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::{actor, current_message, testing::TestBroker};
///
/// #[actor(queue_name = "current_doc")]
/// async fn which_try() -> u32 {
///     let message = current_message().expect("inside an actor");
///     message.retries() + 1
/// }
///
/// // Outside an actor there is no current message.
/// assert!(current_message().is_none());
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let test = TestBroker::new();
/// test.scope(async { which_try::send().await.unwrap() }).await;
/// let drained = test.drain().await.unwrap();
/// assert_eq!(drained.runs_of::<which_try>()[0].result.as_ref().ok(), Some(&serde_json::json!(1)));
/// # });
/// ```
pub fn current_message() -> Option<Arc<Message>> {
    CURRENT.try_with(|c| c.message.clone()).ok()
}

/// Inside an actor, the worker's [`Shutdown`] signal, raised when the worker begins shutting
/// down, so long actors can stop early (Dramatiq's `ShutdownNotifications`); `None` outside
/// an actor.
///
/// ```
/// use actor_runtime::actor;
/// use actor_runtime::middleware::shutdown_requested;
///
/// #[actor(time_limit = "1h")]
/// async fn crunch(chunks: u32) {
///     let shutdown = shutdown_requested().expect("inside an actor");
///     for _ in 0..chunks {
///         if shutdown.is_requested() {
///             return; // or save progress and let Retries run the rest later
///         }
///         // ... one chunk of work
///     }
/// }
/// ```
pub fn shutdown_requested() -> Option<Shutdown> {
    CURRENT.try_with(|c| Shutdown(c.shutdown.clone())).ok()
}

/// Inside an actor, its message's [`CancelFlag`], where the
/// `cancel::Cancellation` middleware (feature `redis`) is on; `None` outside an actor or
/// without that middleware. A plain `fn` actor polls it, since it cannot be stopped from
/// outside; an `async` one may use it to stop cleanly before it is aborted.
///
/// ```
/// use actor_runtime::actor;
/// use actor_runtime::middleware::cancel_requested;
///
/// #[actor]
/// fn reindex(pages: u32) {
///     for _ in 0..pages {
///         if cancel_requested().is_some_and(|flag| flag.is_requested()) {
///             return;
///         }
///         // ... one page
///     }
/// }
/// ```
pub fn cancel_requested() -> Option<CancelFlag> {
    CURRENT.try_with(|c| c.cancel.clone()).ok().flatten()
}
