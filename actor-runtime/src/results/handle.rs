//! Reading results from the sender's side: typed on [`Enqueued`], or by message id.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{results_backend, ResultBackend, ResultError};
use crate::actor::Actor;
use crate::broker::Broker;
use crate::builder::Enqueued;
use crate::message::Message;

impl<A: Actor> Enqueued<A>
where
    A::Output: DeserializeOwned,
{
    /// The actor's return value, from the broker's results backend (its
    /// [`Results`](super::Results) middleware).
    ///
    /// Without `block`: the result if it is stored, else [`ResultError::Missing`]. With
    /// `block`: waits up to `timeout` for it, else [`ResultError::Timeout`]. An actor that
    /// failed for good gives [`ResultError::Failed`]. The actor needs `store_results`.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use actor_runtime::results::{ResultError, Results, StubResultBackend};
    /// use actor_runtime::{actor, Broker, Worker};
    ///
    /// #[actor(store_results = true, max_retries = 0)]
    /// async fn parse(text: String) -> Result<u32, std::num::ParseIntError> {
    ///     text.parse()
    /// }
    ///
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let broker = Broker::stub();
    /// broker.middleware().add(Arc::new(Results::new(StubResultBackend::new())));
    /// let ok = parse::message("42".into()).broker(broker.clone()).send().await.unwrap();
    /// let bad = parse::message("x".into()).broker(broker.clone()).send().await.unwrap();
    /// assert!(matches!(ok.get_result(false, Duration::ZERO).await, Err(ResultError::Missing { .. })));
    ///
    /// let worker = Worker::new(broker.clone()).start().await.unwrap();
    /// assert_eq!(ok.get_result(true, Duration::from_secs(5)).await.unwrap(), 42);
    /// let err = bad.get_result(true, Duration::from_secs(5)).await.unwrap_err();
    /// assert!(matches!(err, ResultError::Failed { ref type_name, .. } if type_name == "ParseIntError"));
    /// worker.stop().await.unwrap();
    /// # });
    /// ```
    pub async fn get_result(
        &self,
        block: bool,
        timeout: Duration,
    ) -> Result<A::Output, ResultError> {
        let backend = results_backend(self.broker()).ok_or(ResultError::NoBackend)?;
        self.get_result_from(backend.as_ref(), block, timeout).await
    }

    /// [`get_result`](Self::get_result) from an explicit backend.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actor_runtime::results::{result_handle, ResultBackend, StubResultBackend};
    /// use actor_runtime::{actor, Broker};
    ///
    /// #[actor]
    /// async fn answer() -> u8 {
    ///     42
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let backend = StubResultBackend::new();
    /// let handle = result_handle::<answer>("4b1f...", Broker::stub());
    /// backend.store(handle.message(), &Ok(42.into()), Duration::from_secs(60)).await.unwrap();
    /// assert_eq!(handle.get_result_from(&backend, false, Duration::ZERO).await.unwrap(), 42);
    /// # });
    /// ```
    pub async fn get_result_from(
        &self,
        backend: &dyn ResultBackend,
        block: bool,
        timeout: Duration,
    ) -> Result<A::Output, ResultError> {
        let value = backend.get(self.message(), block, timeout).await?;
        decode_value(self.message(), value)
    }
}

/// Reads a JSON result as `T`.
pub(crate) fn decode_value<T: DeserializeOwned>(
    message: &Message,
    value: Value,
) -> Result<T, ResultError> {
    T::deserialize(value).map_err(|err| ResultError::Decode {
        message_id: message.message_id.clone(),
        error: err.to_string(),
    })
}

/// A handle on an earlier message of actor `A`, known only by its id (Dramatiq #39): call
/// [`get_result`](Enqueued::get_result) on it.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::results::result_handle;
/// use actor_runtime::{actor, Broker};
///
/// #[actor(queue_name = "reports")]
/// async fn build_report(day: u32) -> String {
///     format!("report {day}")
/// }
///
/// let id = "c0ffee00-0000-4000-8000-000000000000"; // e.g. from an HTTP request
/// let handle = result_handle::<build_report>(id, Broker::stub());
/// assert_eq!(handle.message_id, id);
/// assert_eq!(handle.queue_name, "reports");
/// ```
pub fn result_handle<A: Actor>(message_id: &str, broker: Broker) -> Enqueued<A> {
    let mut message = Message::new(A::QUEUE, A::NAME, Vec::new());
    message.message_id = message_id.to_owned();
    Enqueued::from_parts(message, broker)
}

/// The result of any message (untyped: JSON), from `broker`'s results backend.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use actor_runtime::results::{get_result, ResultBackend, Results, StubResultBackend};
/// use actor_runtime::{Broker, Message};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = StubResultBackend::new();
/// let broker = Broker::stub();
/// broker.middleware().add(Arc::new(Results::new(backend.clone())));
/// let message = Message::new("default", "python_actor", vec![]);
/// backend.store(&message, &Ok("hi".into()), Duration::from_secs(1)).await.unwrap();
/// assert_eq!(get_result(&broker, &message, false, Duration::ZERO).await.unwrap(), "hi");
/// # });
/// ```
pub async fn get_result(
    broker: &Broker,
    message: &Message,
    block: bool,
    timeout: Duration,
) -> Result<Value, ResultError> {
    let backend = results_backend(broker).ok_or(ResultError::NoBackend)?;
    backend.get(message, block, timeout).await
}
