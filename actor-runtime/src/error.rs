//! The runtime's error type.

use std::time::Duration;

/// Everything that can go wrong outside an actor's own code.
///
/// Match on the variants you handle; the enum is `non_exhaustive`.
///
/// ```
/// use actor_runtime::{Broker, Error, Message};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
/// let err = broker
///     .enqueue(Message::new("no spaces allowed", "add", vec![]), None)
///     .await
///     .unwrap_err();
/// match err {
///     Error::InvalidQueueName(name) => assert_eq!(name, "no spaces allowed"),
///     other => panic!("unexpected: {other}"),
/// }
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two registered actors share one name.
    #[error("actor name `{name}` is registered twice: by `{first}` and by `{second}`")]
    DuplicateActor {
        /// The shared name.
        name: String,
        /// Rust path of the first registration.
        first: &'static str,
        /// Rust path of the second registration.
        second: &'static str,
    },
    /// No actor of that name is registered in this process.
    #[error("no actor named `{0}` is registered")]
    UnknownActor(String),
    /// The queue was never declared on this broker.
    #[error("queue `{0}` is not declared")]
    QueueNotFound(String),
    /// The queue name does not match `[a-zA-Z_][a-zA-Z0-9._-]*` or ends in `.DQ`/`.XQ`.
    #[error("invalid queue name `{0}`: use [a-zA-Z_][a-zA-Z0-9._-]* without a .DQ/.XQ suffix")]
    InvalidQueueName(String),
    /// An argument could not be encoded to JSON.
    #[error("cannot encode the arguments of `{actor}`: {source}")]
    Encode {
        /// The actor being sent.
        actor: &'static str,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A message was to be delayed more than [`MAX_DELAY`](crate::message::MAX_DELAY) (100 years): a
    /// mistake, such as a timestamp passed as a delay, rather than a plan. Nothing was
    /// enqueued.
    #[error(
        "message {message_id} of `{actor}` on queue `{queue}`: a delay of {delay:?} is over \
         the 100-year limit"
    )]
    DelayTooLong {
        /// The queue.
        queue: String,
        /// The message's id.
        message_id: String,
        /// Its actor.
        actor: String,
        /// The delay asked for.
        delay: Duration,
    },
    /// `join` gave up waiting.
    #[error("queue `{queue}` did not drain within {timeout:?}")]
    JoinTimeout {
        /// The queue.
        queue: String,
        /// The wait.
        timeout: Duration,
    },
    /// `join` in fail-fast mode saw a message being dead-lettered.
    #[error("message {message_id} of `{actor}` on queue `{queue}` was dead-lettered: {reason}")]
    DeadLettered {
        /// The queue.
        queue: String,
        /// The message's id.
        message_id: String,
        /// Its actor.
        actor: String,
        /// Why, e.g. the actor's error.
        reason: String,
    },
    /// The broker's connection failed (after retries).
    #[error("broker connection error: {0}")]
    Connection(String),
    /// The broker refused a command (a server error that is not about the connection, such as
    /// a key of the wrong type or a read-only replica).
    #[error("broker error: {0}")]
    Broker(String),
    /// The broker is out of memory and refuses new data (Redis at `maxmemory` with the
    /// `noeviction` policy). Workers can still drain queues, which frees memory.
    #[error("the broker is out of memory: {0}")]
    OutOfMemory(String),
    /// The broker or worker was configured wrongly.
    #[error("configuration error: {0}")]
    Config(String),
    /// The operation is not available on this broker.
    #[error("{what} is not supported by the {broker} broker")]
    Unsupported {
        /// What was asked (`"listing dead letters"`...).
        what: &'static str,
        /// The broker's kind (`"stub"`, `"redis"`...).
        broker: &'static str,
    },
    /// A pipeline step cannot take the arguments it would be given (checked before enqueue
    /// for actors registered in this process).
    #[error("pipeline step {step} (`{actor}`) cannot run: {reason}")]
    InvalidPipeline {
        /// The step's index, from 0.
        step: usize,
        /// Its actor.
        actor: String,
        /// What does not fit.
        reason: String,
    },
    /// The broker was closed.
    #[error("the broker is closed")]
    Closed,
    /// The worker stopped itself: more threads were stuck in plain `fn` actors past their
    /// time limit than `Worker::max_abandoned_threads` allows. A fresh process should
    /// replace it.
    #[error(
        "the worker stopped: {abandoned} threads are stuck in plain `fn` actors past their \
         time limit (at most {max} allowed); start a fresh process"
    )]
    AbandonedThreads {
        /// Threads still running abandoned calls when the worker stopped.
        abandoned: usize,
        /// The most allowed.
        max: usize,
    },
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
