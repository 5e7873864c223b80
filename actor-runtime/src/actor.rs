//! The `Actor` trait that `#[actor]` implements, and how handlers run.

use std::fmt::{self, Display};
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::Value;

pub use crate::failure::ActorFailure;
use crate::options::ActorOptions;

/// An actor: a named function that runs asynchronously on a worker.
///
/// `#[actor]` implements it on a type named after the function, so `add::send(1, 2)` enqueues
/// a call to `add(1, 2)`. The constants mirror the attribute's options.
///
/// ```
/// use actor_runtime::{actor, Actor};
///
/// #[actor(queue_name = "math", max_retries = 3)]
/// async fn add(x: i64, y: i64) -> i64 {
///     x + y
/// }
///
/// assert_eq!(<add as Actor>::NAME, "add");
/// assert_eq!(<add as Actor>::QUEUE, "math");
/// assert_eq!(<add as Actor>::OPTIONS.max_retries, Some(3));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an actor",
    note = "annotate an `async fn` with `#[actor]` to declare one"
)]
pub trait Actor: Send + Sync + 'static {
    /// What the function returns on success (`T` of `Result<T, E>`).
    type Output;
    /// The registered name (`actor_name`, by default the function's name).
    const NAME: &'static str;
    /// The queue its messages go to (`queue_name`, by default `default`).
    const QUEUE: &'static str;
    /// The options from its `#[actor(...)]` attribute.
    const OPTIONS: ActorOptions;
}

/// The return of an actor, `Result<T, E>` with `E: Display`.
#[diagnostic::on_unimplemented(
    message = "an actor returning `{Self}` must return `T` or `Result<T, E>` with `E: Display`",
    label = "the error type must implement `Display`"
)]
pub trait IntoActorResult {
    /// The success type.
    type Ok;
    /// Splits into the value or a recorded failure.
    fn into_actor_result(self) -> Result<Self::Ok, ActorFailure>;
}

impl<T, E: Display> IntoActorResult for Result<T, E> {
    type Ok = T;
    fn into_actor_result(self) -> Result<T, ActorFailure> {
        self.map_err(|err| ActorFailure::new(std::any::type_name::<E>(), err.to_string()))
    }
}

/// What an actor's decoded call becomes: a future on the worker's runtime, or a closure for
/// the worker's own thread pool (plain `fn` actors, so CPU-bound or blocking work never
/// stalls async actors).
pub enum Handler {
    /// An `async fn` actor.
    Async(Pin<Box<dyn Future<Output = Result<Value, ActorFailure>> + Send>>),
    /// A plain `fn` actor.
    Blocking(Box<dyn FnOnce() -> Result<Value, ActorFailure> + Send>),
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handler::Async(_) => "Handler::Async",
            Handler::Blocking(_) => "Handler::Blocking",
        })
    }
}

/// Serialises an actor's successful value for the results backend and callbacks.
pub(crate) fn output_to_value<T: Serialize>(
    result: Result<T, ActorFailure>,
) -> Result<Value, ActorFailure> {
    let value = result?;
    serde_json::to_value(&value).map_err(|err| {
        ActorFailure::new(
            "SerializationError",
            format!("cannot encode the return value: {err}"),
        )
    })
}
