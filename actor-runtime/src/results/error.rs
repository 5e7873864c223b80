//! Why a result could not be had.

use std::time::Duration;

/// Why [`get_result`](crate::Enqueued::get_result) returned no value.
///
/// ```
/// use actor_runtime::results::ResultError;
///
/// let err = ResultError::Failed {
///     message_id: "m1".into(),
///     type_name: "ValueError".into(),
///     message: "boom".into(),
/// };
/// assert_eq!(err.to_string(), "actor failed with ValueError: boom (message m1)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// Not stored yet (non-blocking read): the message has not finished, has no
    /// `store_results`, or its result expired.
    #[error("no result yet for message {message_id}")]
    Missing {
        /// The message.
        message_id: String,
    },
    /// A blocking read gave up.
    #[error("no result for message {message_id} within {timeout:?}")]
    Timeout {
        /// The message.
        message_id: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The actor failed for good; this is its error (Python's exception class name and text).
    #[error("actor failed with {type_name}: {message} (message {message_id})")]
    Failed {
        /// The message.
        message_id: String,
        /// The error's type (short name, as Dramatiq records an exception class).
        type_name: String,
        /// The error's text.
        message: String,
    },
    /// The broker has no [`Results`](super::Results) middleware, and no backend was given.
    #[error("no results backend: add the `Results` middleware to the broker, or pass a backend")]
    NoBackend,
    /// The stored value is not what was asked for (e.g. not the actor's output type).
    #[error("cannot decode the result of message {message_id}: {error}")]
    Decode {
        /// The message.
        message_id: String,
        /// What serde said.
        error: String,
    },
    /// The backend could not be reached.
    #[error("results backend error: {0}")]
    Connection(String),
}

impl ResultError {
    /// Whether the result may still come (missing or timed out), as opposed to an error.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            ResultError::Missing { .. } | ResultError::Timeout { .. }
        )
    }
}
