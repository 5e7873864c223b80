//! A distributed barrier: the last of `parties` to arrive releases the others.

use std::sync::Arc;
use std::time::Duration;

use super::{BackendError, RateLimiterBackend};

/// A barrier for `parties` processes (Dramatiq's `Barrier`): `key` counts the parties yet to
/// arrive and `key@events` receives an event when the last one does. Group completion
/// callbacks use one per group.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::rate_limits::{Barrier, StubRateLimiterBackend};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let barrier = Barrier::new(Arc::new(StubRateLimiterBackend::new()), "import-42");
/// assert!(barrier.create(2).await.unwrap());
/// assert!(!barrier.wait(false, None).await.unwrap()); // one party still missing
/// assert!(barrier.wait(false, None).await.unwrap()); // the last one clears it
/// # });
/// ```
#[derive(Clone)]
pub struct Barrier {
    backend: Arc<dyn RateLimiterBackend>,
    key: String,
    events: String,
    ttl: Duration,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Barrier {
    /// The barrier under `key` (use a fresh UUID: keys must not be reused), living 15
    /// minutes by default.
    pub fn new(backend: Arc<dyn RateLimiterBackend>, key: impl Into<String>) -> Self {
        let key = key.into();
        Barrier {
            backend,
            events: format!("{key}@events"),
            key,
            ttl: Duration::from_millis(900_000),
        }
    }

    /// How long the barrier's keys live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The counter's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sets up the barrier for `parties` (at least 1); whether it was new.
    pub async fn create(&self, parties: u32) -> Result<bool, BackendError> {
        self.backend
            .add(&self.key, parties.max(1).into(), self.ttl)
            .await
    }

    /// Arrives at the barrier: `true` once every party has arrived. The last party clears
    /// it (and wakes blocked waiters); others return `false` at once without `block`, or
    /// wait up to `timeout` (`None`: forever) for the last one.
    pub async fn wait(&self, block: bool, timeout: Option<Duration>) -> Result<bool, BackendError> {
        let waiting = self.backend.decr(&self.key, 1, 1, self.ttl).await?;
        if !waiting {
            self.backend.wait_notify(&self.events, self.ttl).await?;
            return Ok(true);
        }
        if block {
            return self.backend.wait(&self.events, timeout).await;
        }
        Ok(false)
    }
}
