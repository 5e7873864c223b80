//! At most `limit` acquisitions per fixed time bucket.

use std::sync::Arc;
use std::time::Duration;

use super::{limiter_api, BackendError, RateLimitGuard, RateLimiterBackend};
use crate::message::now_ms;

/// At most `limit` acquisitions of `key` per bucket of `bucket` length, the buckets aligned
/// on the epoch (`key@{bucket start ms}`, living one bucket). Slots are not given back. Bursts
/// of up to `2 × limit` can straddle a bucket boundary; use [`WindowRateLimiter`] to smooth.
///
/// [`WindowRateLimiter`]: super::WindowRateLimiter
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use actor_runtime::rate_limits::{BucketRateLimiter, StubRateLimiterBackend};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = Arc::new(StubRateLimiterBackend::new());
/// let per_minute = BucketRateLimiter::new(backend, "sms", 100, Duration::from_secs(60));
/// assert!(per_minute.try_acquire().await.is_some());
/// # });
/// ```
#[derive(Clone)]
pub struct BucketRateLimiter {
    backend: Arc<dyn RateLimiterBackend>,
    key: String,
    limit: i64,
    bucket_ms: u64,
}

impl std::fmt::Debug for BucketRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketRateLimiter")
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("bucket_ms", &self.bucket_ms)
            .finish()
    }
}

impl BucketRateLimiter {
    /// At most `limit` (at least 1) per `bucket` (at least 1 ms; Dramatiq's default is 1 s).
    pub fn new(
        backend: Arc<dyn RateLimiterBackend>,
        key: impl Into<String>,
        limit: u32,
        bucket: Duration,
    ) -> Self {
        BucketRateLimiter {
            backend,
            key: key.into(),
            limit: limit.max(1).into(),
            bucket_ms: (bucket.as_millis() as u64).max(1),
        }
    }

    /// The key of the bucket holding `now_ms`.
    pub fn bucket_key(&self, now_ms: u64) -> String {
        format!("{}@{}", self.key, now_ms - now_ms % self.bucket_ms)
    }

    async fn acquire_slot(&self) -> Result<bool, BackendError> {
        let key = self.bucket_key(now_ms());
        let ttl = Duration::from_millis(self.bucket_ms);
        if self.backend.add(&key, 1, ttl).await? {
            return Ok(true);
        }
        self.backend.incr(&key, 1, self.limit, ttl).await
    }

    fn guard(&self) -> RateLimitGuard {
        RateLimitGuard::expiring()
    }
}

limiter_api!(BucketRateLimiter);
