//! Results: actors with `store_results` keep their return value (or their error, once they
//! failed for good) in a [`ResultBackend`], where the sender reads it back.
//!
//! The layout and encoding are Dramatiq's, so Python and Rust read each other's results:
//! the key is the md5 hex digest of `dramatiq-results:{queue}:{actor}:{message_id}`, the value
//! the result's JSON (a failure is `{"__t":"dramatiq.results.Result","exn":{"type","msg"}}`).
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use actor_runtime::results::{Results, StubResultBackend};
//! use actor_runtime::{actor, Broker, Worker};
//!
//! #[actor(store_results = true)]
//! async fn square(x: i64) -> i64 {
//!     x * x
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let broker = Broker::stub();
//! broker.middleware().add(Arc::new(Results::new(StubResultBackend::new())));
//! let worker = Worker::new(broker.clone()).start().await.unwrap();
//!
//! let sent = square::message(7).broker(broker.clone()).send().await.unwrap();
//! assert_eq!(sent.get_result(true, Duration::from_secs(5)).await.unwrap(), 49);
//! worker.stop().await.unwrap();
//! # });
//! ```

mod error;
mod handle;
mod middleware;
#[cfg(feature = "redis")]
mod redis;
mod stub;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::actor::ActorFailure;
use crate::broker::Broker;
use crate::message::{canonical_queue, Message};

pub use error::ResultError;
pub(crate) use handle::decode_value;
pub use handle::{get_result, result_handle};
pub use middleware::Results;
#[cfg(feature = "redis")]
pub use redis::RedisResultBackend;
pub use stub::StubResultBackend;

/// Dramatiq's default result namespace.
pub const DEFAULT_NAMESPACE: &str = "dramatiq-results";

/// Dramatiq's default result lifetime: 10 minutes.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_millis(600_000);

/// The marker of a stored failure, as Dramatiq writes it.
const FAILURE_TAG: &str = "dramatiq.results.Result";

/// Where results are stored and read back.
///
/// Implementations store the encoded result under [`ResultKeys::key`] with a TTL, and read it
/// back without consuming it (a result can be read many times until it expires).
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::results::{ResultBackend, ResultError, StubResultBackend};
/// use actor_runtime::Message;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = StubResultBackend::new();
/// let message = Message::new("default", "add", vec![]);
/// let missing = backend.get(&message, false, Duration::ZERO).await;
/// assert!(matches!(missing, Err(ResultError::Missing { .. })));
///
/// backend.store(&message, &Ok(3.into()), Duration::from_secs(60)).await.unwrap();
/// assert_eq!(backend.get(&message, false, Duration::ZERO).await.unwrap(), 3);
/// # });
/// ```
#[async_trait]
pub trait ResultBackend: Send + Sync + 'static {
    /// Stores `result` for `message`, replacing any earlier one, for `ttl`.
    async fn store(
        &self,
        message: &Message,
        result: &Result<Value, ActorFailure>,
        ttl: Duration,
    ) -> Result<(), ResultError>;

    /// The result of `message`. Without `block`, [`ResultError::Missing`] if it is not there
    /// yet; with `block`, waits up to `timeout`, then [`ResultError::Timeout`]. A stored
    /// failure is [`ResultError::Failed`].
    async fn get(
        &self,
        message: &Message,
        block: bool,
        timeout: Duration,
    ) -> Result<Value, ResultError>;
}

/// How result keys are built: Dramatiq's `namespace` and `use_namespace_prefix_keys`.
///
/// ```
/// use actor_runtime::results::ResultKeys;
/// use actor_runtime::Message;
///
/// let mut message = Message::new("default.DQ", "add", vec![]);
/// message.message_id = "0b7c0e1a-0000-4000-8000-000000000000".into();
/// let plain = ResultKeys { plain: true, ..ResultKeys::default() };
/// assert_eq!(
///     plain.key(&message),
///     "dramatiq-results:default:add:0b7c0e1a-0000-4000-8000-000000000000"
/// );
/// assert_eq!(ResultKeys::default().key(&message).len(), 32); // md5 hex, Dramatiq's default
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultKeys {
    /// The prefix of every key (`dramatiq-results`).
    pub namespace: String,
    /// Store under the readable `namespace:queue:actor:id` instead of its md5 digest.
    pub plain: bool,
}

impl Default for ResultKeys {
    fn default() -> Self {
        ResultKeys {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            plain: false,
        }
    }
}

impl ResultKeys {
    /// The key of `message`'s result: by its canonical queue, actor and id.
    pub fn key(&self, message: &Message) -> String {
        let readable = format!(
            "{}:{}:{}:{}",
            self.namespace,
            canonical_queue(&message.queue_name),
            message.actor_name,
            message.message_id
        );
        if self.plain {
            readable
        } else {
            format!("{:x}", md5::compute(readable.as_bytes()))
        }
    }
}

/// Encodes a result as Dramatiq stores it: the value's JSON, or the failure wrapper.
pub(crate) fn encode_result(result: &Result<Value, ActorFailure>) -> Vec<u8> {
    let value = match result {
        Ok(value) => return serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()),
        Err(failure) => json!({
            "__t": FAILURE_TAG,
            "exn": {"type": failure.short_type_name(), "msg": failure.message},
        }),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Reads a stored result; a failure wrapper becomes [`ResultError::Failed`].
pub(crate) fn decode_result(message: &Message, bytes: &[u8]) -> Result<Value, ResultError> {
    let value: Value = crate::message::decode_json(bytes).map_err(|err| ResultError::Decode {
        message_id: message.message_id.clone(),
        error: err.to_string(),
    })?;
    if value.get("__t").and_then(Value::as_str) == Some(FAILURE_TAG) {
        let exn = &value["exn"];
        let text = |key: &str| match &exn[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Err(ResultError::Failed {
            message_id: message.message_id.clone(),
            type_name: text("type"),
            message: text("msg"),
        });
    }
    Ok(value)
}

/// The results backend of `broker`: the one its [`Results`] middleware stores to.
///
/// ```
/// use actor_runtime::results::{results_backend, Results, StubResultBackend};
/// use actor_runtime::Broker;
///
/// let broker = Broker::stub();
/// assert!(results_backend(&broker).is_none());
/// broker.add_middleware(Results::new(StubResultBackend::new()));
/// assert!(results_backend(&broker).is_some());
/// ```
pub fn results_backend(broker: &Broker) -> Option<Arc<dyn ResultBackend>> {
    broker
        .find::<Results>()
        .map(|results| results.backend().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
        let mut m = Message::new("default", "add", vec![]);
        m.message_id = id.into();
        m
    }

    #[test]
    fn keys_are_dramatiqs_md5_of_the_readable_key() {
        // Python: hashlib.md5(b"dramatiq-results:default:add:abc").hexdigest()
        let m = message("abc");
        assert_eq!(
            ResultKeys::default().key(&m),
            format!("{:x}", md5::compute("dramatiq-results:default:add:abc"))
        );
        let mut delayed = m.clone();
        delayed.queue_name = "default.DQ".into();
        assert_eq!(
            ResultKeys::default().key(&delayed),
            ResultKeys::default().key(&m)
        );
    }

    #[test]
    fn failures_round_trip_through_dramatiqs_wrapper() {
        let m = message("x");
        let failure = ActorFailure::new("my_app::errors::Boom", "it broke");
        let bytes = encode_result(&Err(failure));
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"__t":"dramatiq.results.Result","exn":{"msg":"it broke","type":"Boom"}}"#
        );
        match decode_result(&m, &bytes) {
            Err(ResultError::Failed {
                type_name, message, ..
            }) => assert_eq!((type_name.as_str(), message.as_str()), ("Boom", "it broke")),
            other => panic!("{other:?}"),
        }
        assert_eq!(decode_result(&m, b"[1,NaN]").unwrap(), json!([1, null]));
    }
}
