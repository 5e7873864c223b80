//! The in-memory rate-limiter backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{BackendError, RateLimiterBackend};
use crate::broker::{deadline_after, later};

/// Counters and event lists in this process's memory, with TTLs: limiters and barriers for
/// one process and for tests. Clones share the state.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::rate_limits::{BucketRateLimiter, StubRateLimiterBackend};
///
/// let backend = Arc::new(StubRateLimiterBackend::new());
/// let limiter = BucketRateLimiter::new(backend, "k", 10, std::time::Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct StubRateLimiterBackend {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, (i64, Instant)>,
    events: HashMap<String, Events>,
}

#[derive(Debug, Default)]
struct Events {
    count: u64,
    expires: Option<Instant>,
    notify: Arc<Notify>,
}

impl State {
    fn get(&mut self, key: &str, now: Instant) -> Option<i64> {
        match self.counters.get(key) {
            Some((value, expires)) if *expires > now => Some(*value),
            Some(_) => {
                self.counters.remove(key);
                None
            }
            None => None,
        }
    }

    fn sweep(&mut self, now: Instant) {
        if self.counters.len() > 1024 {
            self.counters.retain(|_, (_, expires)| *expires > now);
        }
    }
}

impl StubRateLimiterBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value of counter `key`, if set and unexpired.
    pub fn counter(&self, key: &str) -> Option<i64> {
        self.state().get(key, Instant::now())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bounded_add(&self, key: &str, delta: i64, ok: impl Fn(i64) -> bool, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let value = state.get(key, now).unwrap_or(0) + delta;
        if !ok(value) {
            return false;
        }
        state
            .counters
            .insert(key.to_owned(), (value, later(now, ttl)));
        true
    }
}

#[async_trait]
impl RateLimiterBackend for StubRateLimiterBackend {
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut state = self.state();
        state.sweep(now);
        if state.get(key, now).is_some() {
            return Ok(false);
        }
        state
            .counters
            .insert(key.to_owned(), (value, later(now, ttl)));
        Ok(true)
    }

    async fn incr(
        &self,
        key: &str,
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        Ok(self.bounded_add(key, amount, |v| v <= maximum, ttl))
    }

    async fn decr(
        &self,
        key: &str,
        amount: i64,
        minimum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        Ok(self.bounded_add(key, -amount, |v| v >= minimum, ttl))
    }

    async fn incr_and_sum(
        &self,
        key: &str,
        keys: &[String],
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut state = self.state();
        let value = state.get(key, now).unwrap_or(0) + amount;
        if value > maximum {
            return Ok(false);
        }
        let sum: i64 = keys.iter().filter_map(|k| state.get(k, now)).sum();
        if amount + sum > maximum {
            return Ok(false);
        }
        state
            .counters
            .insert(key.to_owned(), (value, later(now, ttl)));
        Ok(true)
    }

    async fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<bool, BackendError> {
        let deadline = timeout.map(deadline_after);
        loop {
            let notify = {
                let mut state = self.state();
                let events = state.events.entry(key.to_owned()).or_default();
                if events.count > 0 && events.expires.is_none_or(|e| e > Instant::now()) {
                    return Ok(true);
                }
                events.notify.clone()
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state().events.get(key).is_some_and(|e| e.count > 0) {
                continue;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(false);
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<(), BackendError> {
        let mut state = self.state();
        let events = state.events.entry(key.to_owned()).or_default();
        events.count += 1;
        events.expires = Some(deadline_after(ttl));
        events.notify.notify_waiters();
        Ok(())
    }
}
