//! Dramatiq-style background jobs for Rust: declare actors with `#[actor]`, enqueue calls
//! with `my_actor::send(..)`, run them on a [`Worker`]. The Redis broker speaks Python
//! Dramatiq's wire format, so Python and Rust producers and workers can share queues.
//!
//! ```toml
//! [dependencies]
//! actor-runtime = "0.1"
//! tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use actor_runtime::{actor, get_broker, Worker};
//!
//! #[actor]
//! async fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! #[actor(queue_name = "emails", max_retries = 3, min_backoff = "1s")]
//! async fn send_email(to: String) -> Result<(), String> {
//!     println!("sending to {to}");
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), actor_runtime::Error> {
//!     // Redis when REDIS_URL is set; the in-memory stub (with a warning) otherwise.
//!     let broker = get_broker()?;
//!     let worker = Worker::new(broker.clone()).threads(4).start().await?;
//!
//!     add::send(1, 2).await?;
//!     send_email::message("ada@example.com".into())
//!         .delay(Duration::from_millis(10))
//!         .send()
//!         .await?;
//!
//!     broker.join("default", None, true).await?;
//!     broker.join("emails", None, true).await?;
//!     worker.stop().await?;
//!     Ok(())
//! }
//! ```
//!
//! # How registration works
//!
//! `#[actor]` keeps the function as written and adds, beside it, a type of the same name
//! (types and functions live in different namespaces) that implements [`Actor`], with
//! `message`/`send` constructors, plus an `inventory::submit!` of a [`Registration`](registry::Registration). When a
//! worker starts, [`Registry::global`](registry::Registry::global) collects every registration linked into the binary, the
//! way the `dramatiq` CLI imports actor modules; two actors with one name are an error naming
//! both.
//!
//! # Testing
//!
//! `cargo test` runs tests in parallel threads sharing one global broker: give each test its
//! own with [`with_broker`], or use [`testing::TestBroker`], a fresh stub broker whose
//! `drain()` runs a worker until the queues are empty and reports what ran and what failed.
//!
//! # Misuse is a compile error
//!
//! ```compile_fail
//! # use actor_runtime::actor;
//! #[actor(max_retries = "many")] // expected an integer
//! async fn f() {}
//! ```
//!
//! ```compile_fail
//! # use actor_runtime::actor;
//! struct NotSerde;
//! #[actor]
//! async fn g(x: NotSerde) {} // arguments must be serde types
//! ```

pub use actor_macros::actor;

mod actor;
mod args;
mod backoff;
pub mod broker;
mod builder;
#[cfg(feature = "redis")]
pub mod cancel;
#[cfg(all(feature = "cli", unix))]
pub mod cli;
pub mod composition;
#[cfg(feature = "dashboard")]
pub mod dashboard;
mod duration;
pub mod error;
mod failure;
pub mod limits;
mod log_fields;
pub mod message;
pub mod middleware;
mod options;
#[cfg(feature = "opentelemetry")]
mod otel;
#[cfg(feature = "periodic")]
pub mod periodic;
#[cfg(test)]
mod proptests;
pub mod rate_limits;
#[cfg(feature = "postgres")]
pub mod records;
pub mod registry;
pub mod results;
pub mod testing;
mod truncate;
pub mod unique;
pub mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use actor::{Actor, ActorFailure};
pub use broker::{get_broker, set_broker, with_broker, Broker};
pub use builder::{Enqueued, MessageBuilder};
pub use error::{Error, Result};
pub use message::Message;
pub use middleware::{current_message, Middleware};
pub use worker::Worker;
