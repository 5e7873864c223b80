//! The in-memory results backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{decode_result, encode_result, ResultBackend, ResultError, ResultKeys};
use crate::actor::ActorFailure;
use crate::broker::{deadline_after, later};
use crate::message::Message;

/// Results kept in this process's memory, with their TTL, for the stub broker and tests.
///
/// Values are stored encoded as on Redis, so what would not survive Redis fails here too.
/// Blocking reads sleep until the result is stored (no polling). Clones share the storage.
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::results::{ResultBackend, StubResultBackend};
/// use actor_runtime::Message;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let backend = StubResultBackend::new();
/// let message = Message::new("default", "add", vec![]);
/// let waiter = {
///     let (backend, message) = (backend.clone(), message.clone());
///     tokio::spawn(async move { backend.get(&message, true, Duration::from_secs(5)).await })
/// };
/// backend.store(&message, &Ok("done".into()), Duration::from_secs(60)).await.unwrap();
/// assert_eq!(waiter.await.unwrap().unwrap(), "done");
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct StubResultBackend {
    inner: Arc<Inner>,
    keys: ResultKeys,
}

#[derive(Debug, Default)]
struct Inner {
    slots: Mutex<HashMap<String, Slot>>,
    stores: AtomicU64,
}

#[derive(Debug, Default)]
struct Slot {
    value: Option<(Vec<u8>, Instant)>,
    /// Woken when a value is stored; readers waiting hold a clone.
    stored: Arc<Notify>,
}

impl Slot {
    fn live_value(&self, now: Instant) -> Option<&[u8]> {
        match &self.value {
            Some((bytes, expires)) if *expires > now => Some(bytes),
            _ => None,
        }
    }
}

impl StubResultBackend {
    /// An empty backend with Dramatiq's key layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// With another key namespace or plain keys.
    pub fn with_keys(mut self, keys: ResultKeys) -> Self {
        self.keys = keys;
        self
    }

    /// How many unexpired results are stored.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.slots()
            .values()
            .filter(|s| s.live_value(now).is_some())
            .count()
    }

    /// Whether no unexpired result is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every result.
    pub fn clear(&self) {
        self.slots().retain(|_, slot| {
            slot.value = None;
            Arc::strong_count(&slot.stored) > 1
        });
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired values nobody waits for.
    fn sweep(slots: &mut HashMap<String, Slot>, now: Instant) {
        slots.retain(|_, slot| {
            slot.live_value(now).is_some() || Arc::strong_count(&slot.stored) > 1
        });
    }
}

#[async_trait]
impl ResultBackend for StubResultBackend {
    async fn store(
        &self,
        message: &Message,
        result: &Result<Value, ActorFailure>,
        ttl: Duration,
    ) -> Result<(), ResultError> {
        let bytes = encode_result(result);
        let key = self.keys.key(message);
        let now = Instant::now();
        let mut slots = self.slots();
        if self.inner.stores.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            Self::sweep(&mut slots, now);
        }
        let slot = slots.entry(key).or_default();
        slot.value = Some((bytes, later(now, ttl)));
        slot.stored.notify_waiters();
        Ok(())
    }

    async fn get(
        &self,
        message: &Message,
        block: bool,
        timeout: Duration,
    ) -> Result<Value, ResultError> {
        let key = self.keys.key(message);
        let deadline = deadline_after(timeout);
        loop {
            let stored = {
                let mut slots = self.slots();
                if let Some(bytes) = slots.get(&key).and_then(|s| s.live_value(Instant::now())) {
                    return decode_result(message, bytes);
                }
                if !block {
                    return Err(ResultError::Missing {
                        message_id: message.message_id.clone(),
                    });
                }
                slots.entry(key.clone()).or_default().stored.clone()
            };
            let timed_out = {
                let notified = stored.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // Stored between the check and `enable`? Then it is visible now.
                if let Some(bytes) = self
                    .slots()
                    .get(&key)
                    .and_then(|s| s.live_value(Instant::now()))
                {
                    return decode_result(message, bytes);
                }
                tokio::time::timeout_at(deadline, notified).await.is_err()
            };
            drop(stored);
            if timed_out {
                let mut slots = self.slots();
                if let Some(bytes) = slots.get(&key).and_then(|s| s.live_value(Instant::now())) {
                    return decode_result(message, bytes);
                }
                if slots
                    .get(&key)
                    .is_some_and(|s| s.value.is_none() && Arc::strong_count(&s.stored) == 1)
                {
                    slots.remove(&key);
                }
                return Err(ResultError::Timeout {
                    message_id: message.message_id.clone(),
                    timeout,
                });
            }
        }
    }
}
