//! Middleware: hooks around enqueueing and processing messages, as in Dramatiq.
//!
//! A [`Broker`](crate::Broker) holds an ordered stack ([`Middlewares`]); `before_*` hooks
//! run in order and `after_*` hooks in reverse, each given the broker. The default stack is
//! Dramatiq's: [`AgeLimit`], [`TimeLimit`], [`ShutdownNotifications`], [`Callbacks`],
//! [`Pipelines`], [`Retries`], then ours, [`UniqueJobs`]. Write your own by implementing [`Middleware`] (with
//! [`async_trait`](macro@async_trait)) and adding it with [`Broker::add_middleware`](crate::Broker::add_middleware).

mod age_limit;
mod callbacks;
pub(crate) mod current;
mod pipelines;
mod prometheus;
mod retries;
mod shutdown;
mod time_limit;
mod unique;

use std::sync::Arc;

pub use async_trait::async_trait;

pub use crate::broker::{
    CancelFlag, Fate, MessageContext, Middleware, Middlewares, Shutdown, Skip,
};
pub use age_limit::AgeLimit;
pub use callbacks::Callbacks;
pub use current::{cancel_requested, current_message, shutdown_requested, CurrentMessage};
pub use pipelines::Pipelines;
pub use prometheus::{Prometheus, DURATION_BUCKETS_MS, MAX_LABEL_SETS, SIZE_BUCKETS_BYTES};
pub use retries::{compute_backoff, Retries};
pub use shutdown::ShutdownNotifications;
pub use time_limit::TimeLimit;
pub use unique::UniqueJobs;

/// Dramatiq's default stack, in its order, then [`UniqueJobs`]
/// (which releases uniqueness keys, and costs nothing to messages without one).
pub fn default_middleware() -> Vec<Arc<dyn Middleware>> {
    vec![
        Arc::new(AgeLimit::default()),
        Arc::new(TimeLimit::default()),
        Arc::new(ShutdownNotifications::default()),
        Arc::new(Callbacks),
        Arc::new(Pipelines),
        Arc::new(Retries::default()),
        Arc::new(UniqueJobs),
    ]
}
