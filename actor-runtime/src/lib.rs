//! Dramatiq-style background jobs for Rust: declare actors with `#[actor]`, enqueue with
//! `my_actor::send(..)`, run them on a [`Worker`].

pub use actor_macros::actor;
pub use async_trait::async_trait;

mod actor;
mod args;
pub mod broker;
mod builder;
pub mod composition;
mod error;
mod message;
pub mod middleware;
mod options;
pub mod rate_limits;
#[cfg(feature = "redis")]
mod redis_conn;
mod registry;
pub mod results;
pub mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use actor::{Actor, ActorFailure, Handler, IntoActorResult};
pub use args::{ArgError, ArgReader};
pub use broker::stub::StubBroker;
pub use broker::{
    broker_from_env, get_broker, set_broker, Broker, Consumer, DeadLetter, Delivery, DeliveryTag,
    QueueStats,
};
pub use builder::{Enqueued, MessageBuilder};
pub use error::{Error, Result};
pub use message::{is_valid_queue_name, now_ms, DecodeError, Message};
pub use middleware::{
    current_message, shutdown_requested, CurrentMessage, MessageContext, Middleware, Middlewares,
    Skip,
};
pub use tokio_util::sync::CancellationToken;
pub use options::ActorOptions;
pub use registry::{HandlerFn, Registration, Registry};
pub use worker::Worker;

fn redis_from_env(_url: &str) -> Result<std::sync::Arc<dyn Broker>> {
    Err(Error::Config(
        "REDIS_URL is set but this build has no Redis broker yet".into(),
    ))
}
