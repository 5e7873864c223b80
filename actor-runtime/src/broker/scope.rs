//! A broker scoped to a task: what `get_broker()` returns inside [`with_broker`].

use std::future::Future;
use std::sync::Arc;

use super::Broker;

tokio::task_local! {
    static SCOPED: Arc<dyn Broker>;
}

/// Runs `future` with `broker` in place of the global broker: inside it,
/// [`get_broker`](crate::get_broker) returns `broker`, so `my_actor::send(..)` enqueues there,
/// and `Worker::new(get_broker()?)` consumes it. Nothing outside the future sees it, so tests
/// running in parallel threads can each have a broker of their own.
///
/// The scope belongs to the task polling `future`, as every tokio task-local does:
/// - a task `tokio::spawn`ed inside it does not inherit it (it sees the global broker); wrap
///   what you spawn: `tokio::spawn(with_broker(broker.clone(), fut))`;
/// - a [`Worker`](crate::Worker) started inside it runs its actors inside it, so messages an
///   actor sends (follow-ups, pipelines, groups) go to `broker` too;
/// - scopes nest: the innermost wins.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::{actor, get_broker, with_broker, Broker, StubBroker, Worker};
///
/// #[actor(queue_name = "invoices")]
/// async fn bill(customer: u64) {
///     let _ = customer;
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Arc::new(StubBroker::new());
/// with_broker(broker.clone(), async {
///     for customer in 0..50 {
///         bill::send(customer).await.unwrap(); // to `broker`, not the global one
///     }
///     let worker = Worker::new(get_broker().unwrap()).start().await.unwrap();
///     get_broker().unwrap().join("invoices", None, true).await.unwrap();
///     assert_eq!(worker.stop().await.unwrap().succeeded, 50);
/// })
/// .await;
/// # });
/// ```
pub async fn with_broker<F: Future>(broker: Arc<dyn Broker>, future: F) -> F::Output {
    SCOPED.scope(broker, future).await
}

/// The broker of the innermost [`with_broker`] around this task, if any.
pub(crate) fn scoped() -> Option<Arc<dyn Broker>> {
    SCOPED.try_with(Arc::clone).ok()
}

/// Runs `future` inside `scope` (a worker's, captured where it started), or as is.
pub(crate) async fn enter<F: Future>(scope: Option<Arc<dyn Broker>>, future: F) -> F::Output {
    match scope {
        Some(broker) => SCOPED.scope(broker, future).await,
        None => future.await,
    }
}

/// [`enter`] for a plain call, on a thread of the worker's pool.
pub(crate) fn enter_sync<R>(scope: Option<Arc<dyn Broker>>, call: impl FnOnce() -> R) -> R {
    match scope {
        Some(broker) => SCOPED.sync_scope(broker, call),
        None => call(),
    }
}
