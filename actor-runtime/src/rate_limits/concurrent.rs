//! A distributed semaphore: at most `limit` holders at once.

use std::sync::Arc;
use std::time::Duration;

use super::{limiter_api, BackendError, RateLimitGuard, RateLimiterBackend};

/// At most `limit` concurrent holders of `key` across every process (a distributed mutex
/// with `limit = 1`). The counter lives under `key` for `ttl` (15 minutes by default) past
/// its last change, so a crashed holder's slot frees itself.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use actor_runtime::rate_limits::{ConcurrentRateLimiter, StubRateLimiterBackend};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = Arc::new(StubRateLimiterBackend::new());
/// let pool = ConcurrentRateLimiter::new(backend, "db-exports", 2).ttl(Duration::from_secs(60));
/// let a = pool.acquire().await.unwrap();
/// let b = pool.acquire().await.unwrap();
/// assert!(pool.acquire().await.is_err()); // a third holder would exceed 2
/// drop((a, b));
/// # });
/// ```
#[derive(Clone)]
pub struct ConcurrentRateLimiter {
    backend: Arc<dyn RateLimiterBackend>,
    key: String,
    limit: i64,
    ttl: Duration,
}

impl std::fmt::Debug for ConcurrentRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentRateLimiter")
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl ConcurrentRateLimiter {
    /// At most `limit` (at least 1) holders of `key`.
    pub fn new(backend: Arc<dyn RateLimiterBackend>, key: impl Into<String>, limit: u32) -> Self {
        ConcurrentRateLimiter {
            backend,
            key: key.into(),
            limit: limit.max(1).into(),
            ttl: Duration::from_millis(900_000),
        }
    }

    /// How long the counter outlives its last change (default 15 minutes): the longest a
    /// crashed holder keeps its slot.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    async fn acquire_slot(&self) -> Result<bool, BackendError> {
        if self.backend.add(&self.key, 1, self.ttl).await? {
            return Ok(true);
        }
        self.backend.incr(&self.key, 1, self.limit, self.ttl).await
    }

    fn guard(&self) -> RateLimitGuard {
        RateLimitGuard::counter(self.backend.clone(), &self.key, self.ttl)
    }
}

limiter_api!(ConcurrentRateLimiter);
