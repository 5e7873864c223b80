//! Rate limiters and barriers shared by every worker (and Python Dramatiq) through a backend:
//! [`ConcurrentRateLimiter`] (a distributed semaphore, or mutex with `limit = 1`),
//! [`BucketRateLimiter`] (so many per fixed time bucket), [`WindowRateLimiter`] (so many per
//! sliding window of seconds) and [`Barrier`].
//!
//! Keys are the raw keys you give, un-namespaced, laid out as Dramatiq lays them: `key` for a
//! concurrent counter, `key@{bucket start ms}`, `key@{unix second}`, and `key` +
//! `key@events` for a barrier. A limiter that is full returns [`RateLimitExceeded`]; an actor
//! can return it as its error and Retries runs the message again later.
//!
//! ```
//! use std::sync::Arc;
//! use actor_runtime::actor;
//! use actor_runtime::rate_limits::{ConcurrentRateLimiter, RateLimitExceeded, StubRateLimiterBackend};
//!
//! fn api_mutex() -> ConcurrentRateLimiter {
//!     // In production: RedisRateLimiterBackend, shared by every worker.
//!     static BACKEND: std::sync::OnceLock<Arc<StubRateLimiterBackend>> = std::sync::OnceLock::new();
//!     let backend = BACKEND.get_or_init(|| Arc::new(StubRateLimiterBackend::new())).clone();
//!     ConcurrentRateLimiter::new(backend, "partner-api", 1)
//! }
//!
//! #[actor(max_retries = 100, min_backoff = "1s")]
//! async fn call_partner(order: u64) -> Result<(), RateLimitExceeded> {
//!     api_mutex()
//!         .run(|| async move { println!("calling the partner API for {order}") })
//!         .await
//! }
//! ```

mod barrier;
mod bucket;
mod concurrent;
mod guard;
#[cfg(feature = "redis")]
mod redis;
mod stub;
mod window;

use std::time::Duration;

use async_trait::async_trait;

pub use barrier::Barrier;
pub use bucket::BucketRateLimiter;
pub use concurrent::ConcurrentRateLimiter;
pub use guard::{RateLimitExceeded, RateLimitGuard};
#[cfg(feature = "redis")]
pub use redis::RedisRateLimiterBackend;
pub use stub::StubRateLimiterBackend;
pub use window::WindowRateLimiter;

/// The rate-limiter backend could not be reached or answered nonsense.
///
/// ```
/// let err = actor_runtime::rate_limits::BackendError("connection refused".into());
/// assert_eq!(err.to_string(), "rate limiter backend error: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limiter backend error: {0}")]
pub struct BackendError(pub String);

/// The atomic counter operations limiters and barriers are built from (Dramatiq's rate
/// limiter backend). Every operation is atomic in the backend, so any number of processes
/// can share it; counters are integers stored as decimal strings, as Python writes them.
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::rate_limits::{RateLimiterBackend, StubRateLimiterBackend};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = StubRateLimiterBackend::new();
/// let ttl = Duration::from_secs(10);
/// assert!(backend.add("k", 1, ttl).await.unwrap());
/// assert!(!backend.add("k", 1, ttl).await.unwrap()); // already there
/// assert!(backend.incr("k", 1, 2, ttl).await.unwrap()); // 2 <= 2
/// assert!(!backend.incr("k", 1, 2, ttl).await.unwrap()); // 3 > 2
/// assert!(backend.decr("k", 2, 0, ttl).await.unwrap()); // 0 >= 0
/// # });
/// ```
#[async_trait]
pub trait RateLimiterBackend: Send + Sync + 'static {
    /// Sets `key` to `value` for `ttl` unless it exists; whether it was set.
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool, BackendError>;

    /// Adds `amount` to `key` (missing: 0) and resets its TTL, unless the result would
    /// exceed `maximum`; whether it did.
    async fn incr(
        &self,
        key: &str,
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Subtracts `amount` from `key` (missing: 0) and resets its TTL, unless the result
    /// would go below `minimum`; whether it did.
    async fn decr(
        &self,
        key: &str,
        amount: i64,
        minimum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Adds `amount` to `key` unless that exceeds `maximum`, or `amount` plus the sum of
    /// `keys` (which include `key`) does; whether it did.
    async fn incr_and_sum(
        &self,
        key: &str,
        keys: &[String],
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Waits until the event list `key` has an event, up to `timeout` (`None`: forever);
    /// whether one came. Events are not consumed.
    async fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<bool, BackendError>;

    /// Adds an event to the list `key`, waking every waiter, and sets its TTL.
    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<(), BackendError>;
}

/// Implements the acquisition API on a limiter with `acquire_slot` (and `guard`).
macro_rules! limiter_api {
    ($ty:ty) => {
        impl $ty {
            /// Takes a slot, or [`RateLimitExceeded`](crate::rate_limits::RateLimitExceeded)
            /// when the limit is reached (or the backend is unreachable: a limiter never lets
            /// work through unchecked).
            pub async fn acquire(
                &self,
            ) -> Result<$crate::rate_limits::RateLimitGuard, $crate::rate_limits::RateLimitExceeded>
            {
                match self.acquire_slot().await {
                    Ok(true) => Ok(self.guard()),
                    Ok(false) => Err($crate::rate_limits::RateLimitExceeded::new(&self.key, None)),
                    Err(err) => Err($crate::rate_limits::RateLimitExceeded::new(
                        &self.key,
                        Some(err.0),
                    )),
                }
            }

            /// [`acquire`](Self::acquire) without the error (Dramatiq's
            /// `raise_on_failure=False`): the guard, or `None` when no slot was had.
            pub async fn try_acquire(&self) -> Option<$crate::rate_limits::RateLimitGuard> {
                match self.acquire().await {
                    Ok(guard) => Some(guard),
                    Err(err) => {
                        if let Some(error) = &err.backend_error {
                            tracing::warn!(key = %self.key, %error, "rate limiter backend failed");
                        }
                        None
                    }
                }
            }

            /// Runs `work` holding a slot (released when it finishes), or returns
            /// [`RateLimitExceeded`](crate::rate_limits::RateLimitExceeded) without running it.
            pub async fn run<F, Fut, T>(
                &self,
                work: F,
            ) -> Result<T, $crate::rate_limits::RateLimitExceeded>
            where
                F: FnOnce() -> Fut,
                Fut: std::future::Future<Output = T>,
            {
                let guard = self.acquire().await?;
                let output = work().await;
                guard.release().await;
                Ok(output)
            }

            /// The limiter's key.
            pub fn key(&self) -> &str {
                &self.key
            }
        }
    };
}
pub(crate) use limiter_api;

#[cfg(test)]
mod tests;
