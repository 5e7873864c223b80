//! The runtime's error type, [`Error`], and the boxed [`Source`] of a broker's errors.

use std::time::Duration;

/// The underlying error a broker or store reported (a client library's error), boxed so no
/// client library's type is part of this crate's API; reach it with
/// [`std::error::Error::source`].
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `": {source}"`, or nothing: the source's text in the message too, so a log line or a CLI
/// error says what the server said.
fn suffix(source: &Option<Source>) -> String {
    source
        .as_ref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

impl Error {
    /// A [`Error::Connection`] without a source (a timeout of our own, a lost connection).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn connection(context: impl Into<String>) -> Error {
        Error::Connection {
            context: context.into(),
            source: None,
        }
    }
}

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
    /// A message's encoded size is over the broker's maximum message size
    /// ([`PayloadLimits`](crate::limits::PayloadLimits)). Nothing was enqueued.
    #[error(
        "message {message_id} of `{actor}` on queue `{queue}` is {size} bytes, over the \
         maximum message size of {limit} bytes; nothing was enqueued"
    )]
    MessageTooLarge {
        /// The queue.
        queue: String,
        /// The message's id.
        message_id: String,
        /// Its actor.
        actor: String,
        /// Its encoded size, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
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
    /// The broker's server could not be reached, after retries: refused, timed out, lost, or
    /// it refused the credentials.
    #[error("cannot reach the broker: {context}{}", suffix(source))]
    Connection {
        /// What was being done, and where (`redis fetch on redis://host/0`), secrets hidden.
        context: String,
        /// The client library's error, where there is one.
        #[source]
        source: Option<Source>,
    },
    /// The broker refused a command (a server error that is not about the connection, such as
    /// a key of the wrong type or a read-only replica).
    #[error("the broker refused {context}{}", suffix(source))]
    Broker {
        /// What was being done, and where, secrets hidden.
        context: String,
        /// The server's or the client library's error.
        #[source]
        source: Option<Source>,
    },
    /// The broker is out of memory and refuses new data (Redis at `maxmemory` with the
    /// `noeviction` policy). Workers can still drain queues, which frees memory.
    #[error("the broker is out of memory: {context}{}", suffix(source))]
    OutOfMemory {
        /// What was being done, and where, secrets hidden.
        context: String,
        /// The server's error.
        #[source]
        source: Option<Source>,
    },
    /// A setting of the broker or the worker is wrong: a URL, a namespace, an environment
    /// variable (each at fault named), a production deployment without a broker.
    #[error("configuration error: {0}")]
    Config(String),
    /// The process cannot listen for the signals that stop a worker.
    #[error("cannot listen for signals")]
    Signals(#[source] std::io::Error),
    /// A feature needs a middleware the broker does not have.
    #[error("{needed_for} need the `{middleware}` middleware on the broker")]
    MissingMiddleware {
        /// The middleware's type name.
        middleware: &'static str,
        /// What needs it (`"group completion callbacks"`).
        needed_for: &'static str,
    },
    /// A pipeline or group has no message.
    #[error("a {0} needs at least one message")]
    EmptyComposition(&'static str),
    /// A member of a pipeline or group could not be built (its arguments did not encode...).
    #[error("{composition} {index} could not be built: {source}")]
    InvalidMember {
        /// `"pipeline step"`, `"group member"` or `"group completion callback"`.
        composition: &'static str,
        /// The member's position, from 0.
        index: usize,
        /// Why.
        #[source]
        source: std::sync::Arc<Error>,
    },
    /// A group's barrier (the count of members still running) could not be created.
    #[error("cannot create the group's barrier")]
    Barrier(#[source] Source),
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
    /// A message option the runtime reads has a value it cannot use.
    #[error("message {message_id}: invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// The message's id.
        message_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument an operator gave is not one the broker can use (a page cursor it did
    /// not make).
    #[error("{0}")]
    InvalidArgument(String),
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
