//! Running one actor's handler: `async` actors on the runtime, plain `fn` actors on the
//! blocking pool, under the time limit and the shutdown interrupt, panics caught.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::actor::{ActorFailure, Handler};
use crate::broker::enter_scope_sync;
use crate::middleware::current::{Current, CURRENT};

use super::blocking::CallError;
use super::state::Shared;

/// Runs an actor's call: async on this runtime (watched for blocking its thread), blocking
/// calls on the worker's pool. A panic becomes a failure; past `time_limit` the call is
/// cancelled (a blocking call is abandoned to finish on its thread) and fails with
/// `TimeLimitExceeded`. Once `abort` is raised (a cancel), an async call is cancelled the
/// same way and fails with `Cancelled`; a blocking one is left to see its cancel flag and
/// return (abandoning its thread would count against the worker's abandoned threads).
pub(crate) async fn run_handler(
    shared: &Shared,
    handler: Handler,
    time_limit: Option<Duration>,
    current: Current,
    interrupt: Option<CancellationToken>,
    abort: Option<CancellationToken>,
) -> Result<Value, ActorFailure> {
    let is_async = matches!(handler, Handler::Async(_));
    let call = async move {
        match handler {
            Handler::Async(future) => {
                let watched = shared.watchdog.watch(&current.message, CatchUnwind(future));
                CURRENT.scope(current, watched).await
            }
            Handler::Blocking(call) => {
                let message = current.message.clone();
                // The message's span and the worker's broker scope, on the pool thread, for
                // the actor's own log lines and sends.
                let span = tracing::Span::current();
                let in_scope = shared.scope.clone();
                // The attempt's trace context too, for what the actor sends.
                #[cfg(feature = "opentelemetry")]
                let trace = opentelemetry::Context::current();
                let call = move || {
                    #[cfg(feature = "opentelemetry")]
                    let _trace = trace.attach();
                    span.in_scope(|| {
                        enter_scope_sync(in_scope, || CURRENT.sync_scope(current, call))
                    })
                };
                match shared.blocking.submit(message, call).await {
                    Ok(result) => result,
                    Err(CallError::Panic(payload)) => Err(panic_failure(payload)),
                    Err(CallError::Unavailable) => Err(ActorFailure::new(
                        "Cancelled",
                        "no thread could be started to run this plain `fn` actor",
                    )),
                }
            }
        }
    };
    let call = async move {
        match interrupt {
            Some(shutdown) => tokio::select! {
                result = call => result,
                _ = shutdown.cancelled() => Err(ActorFailure::new(
                    "Shutdown",
                    "the worker is shutting down; the message will be retried",
                )),
            },
            None => call.await,
        }
    };
    let abort = abort.filter(|_| is_async);
    let call = async move {
        match abort {
            Some(abort) => tokio::select! {
                result = call => result,
                _ = abort.cancelled() => Err(ActorFailure::new(
                    "Cancelled",
                    "the message was cancelled while it ran",
                )),
            },
            None => call.await,
        }
    };
    match time_limit {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(ActorFailure::new(
                "TimeLimitExceeded",
                format!("the actor ran longer than its time limit of {limit:?}"),
            )),
        },
        None => call.await,
    }
}

fn panic_failure(payload: Box<dyn std::any::Any + Send>) -> ActorFailure {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ActorFailure::new("panic", text)
}

/// Polls a boxed future, turning a panic into a failure.
struct CatchUnwind(Pin<Box<dyn Future<Output = Result<Value, ActorFailure>> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<Value, ActorFailure>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panic_failure(payload))),
        }
    }
}
