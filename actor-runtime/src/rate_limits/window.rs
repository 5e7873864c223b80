//! At most `limit` acquisitions in any window of `window` seconds.

use std::sync::Arc;
use std::time::Duration;

use super::{limiter_api, BackendError, RateLimitGuard, RateLimiterBackend};
use crate::message::now_ms;

/// At most `limit` acquisitions of `key` in the last `window` seconds (a sliding window
/// with one-second steps): one counter per second, `key@{unix seconds}`, each living `window`
/// seconds, and an acquisition succeeds only if the sum over the window stays within `limit`.
/// Slots are not given back.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::rate_limits::{WindowRateLimiter, StubRateLimiterBackend};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = Arc::new(StubRateLimiterBackend::new());
/// let limiter = WindowRateLimiter::new(backend, "search-api", 2, 10);
/// assert!(limiter.try_acquire().await.is_some());
/// assert!(limiter.try_acquire().await.is_some());
/// assert!(limiter.try_acquire().await.is_none()); // 3 in 10 s would exceed 2
/// # });
/// ```
#[derive(Clone)]
pub struct WindowRateLimiter {
    backend: Arc<dyn RateLimiterBackend>,
    key: String,
    limit: i64,
    window: u64,
}

impl std::fmt::Debug for WindowRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowRateLimiter")
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish()
    }
}

impl WindowRateLimiter {
    /// At most `limit` (at least 1) per `window_secs` (at least 1) seconds.
    pub fn new(
        backend: Arc<dyn RateLimiterBackend>,
        key: impl Into<String>,
        limit: u32,
        window_secs: u64,
    ) -> Self {
        WindowRateLimiter {
            backend,
            key: key.into(),
            limit: limit.max(1).into(),
            window: window_secs.max(1),
        }
    }

    /// The keys of the window ending at `unix_secs`, current second first.
    pub fn window_keys(&self, unix_secs: u64) -> Vec<String> {
        (0..self.window)
            .map(|i| format!("{}@{}", self.key, unix_secs.saturating_sub(i)))
            .collect()
    }

    async fn acquire_slot(&self) -> Result<bool, BackendError> {
        let keys = self.window_keys(now_ms() / 1000);
        let ttl = Duration::from_secs(self.window);
        self.backend
            .incr_and_sum(&keys[0], &keys, 1, self.limit, ttl)
            .await
    }

    fn guard(&self) -> RateLimitGuard {
        RateLimitGuard::expiring()
    }
}

limiter_api!(WindowRateLimiter);
