//! The broker `send` uses when none is given: one scoped to a task ([`with_broker`]), else
//! the global one ([`set_broker`]), else one built once from the environment.

use std::future::Future;
use std::sync::{OnceLock, RwLock};

use super::Broker;
use crate::error::{Error, Result};

tokio::task_local! {
    static SCOPED: Broker;
}

static GLOBAL: RwLock<Option<Broker>> = RwLock::new(None);
/// The broker built from the environment, or why it could not be (a configuration error,
/// the same for every later call).
static FROM_ENV: OnceLock<std::result::Result<Broker, String>> = OnceLock::new();

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
/// use actor_runtime::{actor, get_broker, with_broker, Broker, Worker};
///
/// #[actor(queue_name = "invoices")]
/// async fn bill(customer: u64) {
///     let _ = customer;
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
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
pub async fn with_broker<F: Future>(broker: Broker, future: F) -> F::Output {
    SCOPED.scope(broker, future).await
}

/// Runs `future` inside the scope of `scope`'s broker, if there is one (a worker's actors run
/// in the scope their worker was started in).
pub(crate) async fn enter_scope<F: Future>(scope: Option<Broker>, future: F) -> F::Output {
    match scope {
        Some(broker) => SCOPED.scope(broker, future).await,
        None => future.await,
    }
}

/// [`enter_scope`] for a plain call (a `fn` actor on its thread).
pub(crate) fn enter_scope_sync<R>(scope: Option<Broker>, call: impl FnOnce() -> R) -> R {
    match scope {
        Some(broker) => SCOPED.sync_scope(broker, call),
        None => call(),
    }
}

/// The broker of the innermost [`with_broker`] around this task, if any.
pub(crate) fn scoped() -> Option<Broker> {
    SCOPED.try_with(Broker::clone).ok()
}

/// Sets the broker that `send` and workers use by default (Dramatiq's `set_broker`).
///
/// It is one per process: tests running in parallel threads share it. Give each test a broker
/// of its own with [`with_broker`] (or [`testing::TestBroker`](crate::testing::TestBroker)).
///
/// ```
/// use actor_runtime::{get_broker, set_broker, Broker};
///
/// set_broker(Broker::stub());
/// assert_eq!(get_broker().unwrap().kind(), "stub");
/// ```
pub fn set_broker(broker: Broker) {
    *GLOBAL.write().unwrap_or_else(|e| e.into_inner()) = Some(broker);
}

/// The broker `send` uses: the one of the innermost [`with_broker`] scope around this task,
/// else the global one given to [`set_broker`], else one built once from the environment (see
/// [`Broker::from_env`]).
///
/// ```
/// use actor_runtime::{get_broker, with_broker, Broker};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let scoped = Broker::stub();
/// let seen = with_broker(scoped.clone(), async { get_broker().unwrap() }).await;
/// assert!(seen.same(&scoped));
/// # });
/// ```
pub fn get_broker() -> Result<Broker> {
    if let Some(broker) = scoped() {
        return Ok(broker);
    }
    if let Some(broker) = GLOBAL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(broker.clone());
    }
    let built = FROM_ENV.get_or_init(|| {
        Broker::from_env().map_err(|e| match e {
            Error::Config(message) => message,
            other => other.to_string(),
        })
    });
    match built {
        Ok(broker) => {
            let mut global = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
            Ok(global.get_or_insert_with(|| broker.clone()).clone())
        }
        Err(message) => Err(Error::Config(message.clone())),
    }
}

/// The environment names a production deployment (`APP_ENV`, `ENVIRONMENT` or `ENV` is
/// `production`/`prod`).
///
/// ```
/// // Unless the environment running this says production:
/// # if std::env::var("APP_ENV").is_err() && std::env::var("ENVIRONMENT").is_err() && std::env::var("ENV").is_err() {
/// assert!(!actor_runtime::broker::environment_is_production());
/// # }
/// ```
pub fn environment_is_production() -> bool {
    is_production(&|key| std::env::var(key).ok())
}

/// [`environment_is_production`] over the variables `env` gives: the one production check,
/// for the process's environment and the CLI's settings alike.
pub(crate) fn is_production(env: &dyn Fn(&str) -> Option<String>) -> bool {
    ["APP_ENV", "ENVIRONMENT", "ENV"].iter().any(|key| {
        env(key).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "production" | "prod"
            )
        })
    })
}
