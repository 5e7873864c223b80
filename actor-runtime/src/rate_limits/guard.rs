//! A held slot, and the error of a full limiter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::RateLimiterBackend;

/// A limiter had no slot free (or its backend could not be asked).
///
/// It implements `Display` and `Error`, so an actor can return it as its error: the message
/// is then retried later by the Retries middleware, as Dramatiq retries on
/// `RateLimitExceeded`.
///
/// ```
/// use actor_runtime::rate_limits::RateLimitExceeded;
///
/// let err = RateLimitExceeded::new("emails", None);
/// assert_eq!(err.to_string(), "rate limit exceeded for key `emails`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitExceeded {
    /// The limiter's key.
    pub key: String,
    /// Set when the backend failed rather than the limit being reached.
    pub backend_error: Option<String>,
}

impl RateLimitExceeded {
    /// The limit of `key` was reached (`backend_error: None`), or the backend failed.
    pub fn new(key: &str, backend_error: Option<String>) -> Self {
        RateLimitExceeded {
            key: key.to_owned(),
            backend_error,
        }
    }
}

impl fmt::Display for RateLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend_error {
            None => write!(f, "rate limit exceeded for key `{}`", self.key),
            Some(err) => write!(
                f,
                "rate limiter for key `{}` is unavailable: {err}",
                self.key
            ),
        }
    }
}

impl std::error::Error for RateLimitExceeded {}

/// A slot taken from a limiter. For a [`ConcurrentRateLimiter`](super::ConcurrentRateLimiter)
/// the slot is given back by [`release`](Self::release), or on drop (in the background);
/// bucket and window slots are never given back, they expire with their bucket.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::rate_limits::{ConcurrentRateLimiter, StubRateLimiterBackend};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mutex = ConcurrentRateLimiter::new(Arc::new(StubRateLimiterBackend::new()), "m", 1);
/// let guard = mutex.acquire().await.unwrap();
/// assert!(mutex.try_acquire().await.is_none());
/// guard.release().await;
/// assert!(mutex.try_acquire().await.is_some());
/// # });
/// ```
#[must_use = "dropping the guard gives the slot back"]
pub struct RateLimitGuard {
    release: Option<Release>,
}

struct Release {
    backend: Arc<dyn RateLimiterBackend>,
    key: String,
    ttl: Duration,
}

impl Release {
    async fn run(self) {
        if let Err(err) = self.backend.decr(&self.key, 1, 0, self.ttl).await {
            tracing::error!(key = %self.key, error = %err, "could not release a rate limiter slot; it frees when its TTL ends");
        }
    }
}

impl fmt::Debug for RateLimitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitGuard")
            .field("key", &self.release.as_ref().map(|r| &r.key))
            .finish()
    }
}

impl RateLimitGuard {
    /// A guard with nothing to give back (bucket and window limiters).
    pub(crate) fn expiring() -> Self {
        RateLimitGuard { release: None }
    }

    /// A guard that decrements `key` when released.
    pub(crate) fn counter(backend: Arc<dyn RateLimiterBackend>, key: &str, ttl: Duration) -> Self {
        RateLimitGuard {
            release: Some(Release {
                backend,
                key: key.to_owned(),
                ttl,
            }),
        }
    }

    /// Gives the slot back now (a backend error is logged: the slot then frees when the
    /// counter's TTL ends).
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            release.run().await;
        }
    }
}

impl Drop for RateLimitGuard {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(release.run());
            }
            Err(_) => {
                tracing::warn!(key = %release.key, "rate limiter guard dropped outside a runtime; the slot frees when its TTL ends");
            }
        }
    }
}
