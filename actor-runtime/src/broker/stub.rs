//! The in-memory backend: the zero-setup default and the test double.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::backend::{
    deadline_after, Backend, Consumer, DeadLetter, DeadLetters, Delivery, DeliveryTag, QueueStats,
    Wake,
};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, is_valid_queue_name, now_ms, Message};
use crate::truncate::truncate;

mod inspect;

/// An in-memory backend with the Redis backend's semantics: FIFO queues, delayed messages,
/// unacked messages kept until ack, dead letters, per-queue counts. [`Broker::stub`](crate::Broker::stub)
/// wraps one.
///
/// Messages are stored encoded, so a message that would not survive the wire fails here too.
/// It lives in one process: use it for tests and for trying things out, not production.
///
/// ```
/// use actor_runtime::{actor, Broker, Worker};
///
/// #[actor]
/// async fn double(x: i64) -> i64 {
///     x * 2
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
/// let worker = Worker::new(broker.clone()).start().await.unwrap();
/// double::message(21).broker(broker.clone()).send().await.unwrap();
/// broker.join("default", None, true).await.unwrap();
/// worker.stop().await.unwrap();
/// # });
/// ```
#[derive(Debug)]
pub struct StubBackend {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<HashMap<String, QueueState>>,
    /// Woken on every change, for `join`.
    changed: Notify,
    next_id: AtomicU64,
    /// Uniqueness keys: key -> (holder's message id, expiry).
    unique: Mutex<HashMap<String, (String, std::time::Instant)>>,
    /// What workers processed, not yet added to `minutes`.
    activity: Arc<super::ActivityCounter>,
    /// Minute start (ms) -> (processed, failed).
    minutes: Mutex<BTreeMap<u64, (u64, u64)>>,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<(String, Vec<u8>)>,
    /// By (eta, insertion id).
    delayed: BTreeMap<(u64, u64), (String, Message)>,
    unacked: HashMap<String, Vec<u8>>,
    dead: Vec<StubDeadLetter>,
    /// Woken when messages become ready.
    wake: Arc<Wake>,
    /// Consumers fetch nothing while set.
    paused: bool,
}

#[derive(Debug, Clone)]
struct StubDeadLetter {
    id: String,
    bytes: Vec<u8>,
    dead_at: u64,
    reason: String,
}

impl Default for StubBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl StubBackend {
    /// An empty broker with no middleware.
    pub fn new() -> Self {
        StubBackend {
            inner: Arc::new(Inner::default()),
        }
    }

    /// Puts raw bytes in `queue` as a foreign producer could, e.g. to see how a worker
    /// handles a malformed payload.
    pub fn enqueue_bytes(&self, queue: &str, bytes: Vec<u8>) -> Result<()> {
        let queue = canonical_queue(queue);
        if !is_valid_queue_name(queue) {
            return Err(Error::InvalidQueueName(queue.to_owned()));
        }
        let id = self.inner.new_id();
        {
            let mut state = self.inner.lock();
            let q = state.entry(queue.to_owned()).or_default();
            q.ready.push_back((id, bytes));
            q.wake.wake();
        }
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Every dead-lettered message of every queue, with its reason.
    pub fn dead_letters_all(&self) -> Vec<(Message, String)> {
        let state = self.inner.lock();
        let mut all: Vec<_> = state
            .values()
            .flat_map(|q| q.dead.iter())
            .filter_map(|d| Some((d.dead_at, Message::decode(&d.bytes).ok()?, d.reason.clone())))
            .collect();
        all.sort_by_key(|(at, _, _)| *at);
        all.into_iter().map(|(_, m, r)| (m, r)).collect()
    }
}

impl StubBackend {
    /// Waits until no queue holds a ready or fetched message, nor a delayed one due within
    /// `horizon` (with `skip_delays`, delayed messages are made due at once); returns the
    /// delayed messages left, due later. At `deadline`, gives up with the busy queues.
    /// For [`TestBroker::drain`](crate::testing::TestBroker::drain).
    pub(crate) async fn settle(
        &self,
        horizon: Duration,
        skip_delays: bool,
        deadline: Instant,
    ) -> std::result::Result<Vec<Message>, Vec<String>> {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let horizon_ms = u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX);
            let limit = now_ms().saturating_add(horizon_ms);
            let (mut busy, mut next_eta) = (Vec::new(), None::<u64>);
            {
                let mut state = self.inner.lock();
                for (name, q) in state.iter_mut() {
                    if skip_delays && promote_due(q, u64::MAX) {
                        q.wake.wake();
                    }
                    let due = q.delayed.keys().next().map(|(eta, _)| *eta);
                    let due = due.filter(|eta| *eta <= limit);
                    if !q.ready.is_empty() || !q.unacked.is_empty() || due.is_some() {
                        busy.push(name.clone());
                    }
                    if let Some(eta) = due {
                        next_eta = Some(next_eta.map_or(eta, |next| next.min(eta)));
                    }
                }
                if busy.is_empty() {
                    let mut later: Vec<_> = state
                        .values()
                        .flat_map(|q| q.delayed.iter())
                        .map(|((eta, seq), (_, m))| (*eta, *seq, m.clone()))
                        .collect();
                    later.sort_by_key(|(eta, seq, _)| (*eta, *seq));
                    return Ok(later.into_iter().map(|(_, _, m)| m).collect());
                }
            }
            // A due message waits for a consumer to fetch it, which says nothing: look again
            // at its eta, then every few ms.
            let mut until = deadline;
            if let Some(eta) = next_eta {
                let wait = eta.saturating_sub(now_ms()).max(5);
                until = until.min(deadline_after(Duration::from_millis(wait)));
            }
            if tokio::time::timeout_at(until, changed).await.is_err() && Instant::now() >= deadline
            {
                busy.sort();
                return Err(busy);
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, QueueState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> String {
        format!("stub-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn queue<'a>(
        state: &'a mut HashMap<String, QueueState>,
        queue: &str,
    ) -> Result<&'a mut QueueState> {
        state
            .get_mut(canonical_queue(queue))
            .ok_or_else(|| Error::QueueNotFound(queue.to_owned()))
    }
}

/// Moves due delayed messages to the ready queue, as a Redis worker moves `.DQ` messages.
fn promote_due(q: &mut QueueState, now: u64) -> bool {
    let mut moved = false;
    while let Some(entry) = q.delayed.first_entry() {
        if entry.key().0 > now {
            break;
        }
        let (id, message) = entry.remove();
        q.ready.push_back((id, message.undelayed().encode()));
        moved = true;
    }
    moved
}

#[async_trait]
impl Backend for StubBackend {
    fn kind(&self) -> &'static str {
        "stub"
    }

    async fn declare_queue(&self, queue: &str) -> Result<()> {
        let name = canonical_queue(queue);
        if !is_valid_queue_name(name) {
            return Err(Error::InvalidQueueName(queue.to_owned()));
        }
        self.inner.lock().entry(name.to_owned()).or_default();
        Ok(())
    }

    fn queues(&self) -> Vec<String> {
        let mut names: Vec<_> = self.inner.lock().keys().cloned().collect();
        names.sort();
        names
    }

    async fn enqueue(&self, messages: Vec<Message>) -> Result<Vec<Message>> {
        for message in &messages {
            self.declare_queue(&message.queue_name).await?;
        }
        let mut stored = Vec::with_capacity(messages.len());
        {
            let mut state = self.inner.lock();
            for message in messages {
                let id = self.inner.new_id();
                let q = Inner::queue(&mut state, &message.queue_name)?;
                match message
                    .eta()
                    .filter(|_| message.queue_name.ends_with(".DQ"))
                {
                    Some(eta) => {
                        let seq = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                        q.delayed.insert((eta, seq), (id, message.clone()));
                    }
                    None => q.ready.push_back((id, message.encode())),
                }
                q.wake.wake();
                stored.push(message);
            }
        }
        self.inner.changed.notify_waiters();
        Ok(stored)
    }

    fn unique_keys(&self) -> Option<&dyn crate::broker::UniqueKeys> {
        Some(self)
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    fn inspect(&self) -> Option<&dyn super::Inspect> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn super::Pause> {
        Some(self)
    }

    fn activity_counter(&self) -> Option<Arc<super::ActivityCounter>> {
        Some(self.inner.activity.clone())
    }

    async fn consume(&self, queue: &str, _prefetch: usize) -> Result<Box<dyn Consumer>> {
        self.declare_queue(queue).await?;
        let queue = canonical_queue(queue);
        let wake = Inner::queue(&mut self.inner.lock(), queue)?.wake.clone();
        Ok(Box::new(StubConsumer {
            inner: self.inner.clone(),
            queue: Arc::from(queue),
            wake,
            seen: AtomicU64::new(0),
            next_eta: AtomicU64::new(0),
        }))
    }

    async fn flush(&self, queue: &str) -> Result<()> {
        {
            let mut state = self.inner.lock();
            let q = Inner::queue(&mut state, queue)?;
            q.ready.clear();
            q.delayed.clear();
            q.unacked.clear();
            q.dead.clear();
        }
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn join(&self, queue: &str, timeout: Option<Duration>, fail_fast: bool) -> Result<()> {
        let deadline = timeout.map(deadline_after);
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next_eta = {
                let mut state = self.inner.lock();
                let q = Inner::queue(&mut state, queue)?;
                if fail_fast {
                    if let Some(dead) = q.dead.first() {
                        let message = Message::decode(&dead.bytes).ok();
                        return Err(Error::DeadLettered {
                            queue: queue.to_owned(),
                            message_id: message
                                .as_ref()
                                .map_or_else(|| dead.id.clone(), |m| m.message_id.clone()),
                            actor: message.map(|m| m.actor_name).unwrap_or_default(),
                            reason: dead.reason.clone(),
                        });
                    }
                }
                if q.ready.is_empty() && q.delayed.is_empty() && q.unacked.is_empty() {
                    return Ok(());
                }
                q.delayed.keys().next().map(|(eta, _)| *eta)
            };
            // Delayed messages become due without any notification: wake for them too.
            let mut wake = deadline;
            if let Some(eta) = next_eta {
                let due = deadline_after(Duration::from_millis(eta.saturating_sub(now_ms())));
                wake = Some(wake.map_or(due, |w| w.min(due)));
            }
            match wake {
                Some(at) => {
                    if tokio::time::timeout_at(at, changed).await.is_err()
                        && deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Err(Error::JoinTimeout {
                            queue: queue.to_owned(),
                            timeout: timeout.unwrap_or_default(),
                        });
                    }
                }
                None => changed.await,
            }
        }
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let mut state = self.inner.lock();
        let q = Inner::queue(&mut state, queue)?;
        Ok(QueueStats {
            ready: q.ready.len() as u64,
            delayed: q.delayed.len() as u64,
            in_flight: q.unacked.len() as u64,
            dead: q.dead.len() as u64,
        })
    }
}

#[async_trait]
impl DeadLetters for StubBackend {
    async fn list(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut state = self.inner.lock();
        let q = Inner::queue(&mut state, queue)?;
        Ok(q.dead
            .iter()
            .take(limit)
            .map(|d| DeadLetter {
                id: d.id.clone(),
                message: Message::decode(&d.bytes).map_err(|e| e.to_string()),
                dead_at: d.dead_at,
                reason: Some(d.reason.clone()),
            })
            .collect())
    }

    async fn requeue(&self, queue: &str, ids: Option<&[String]>) -> Result<usize> {
        let moved = {
            let mut state = self.inner.lock();
            let q = Inner::queue(&mut state, queue)?;
            let (back, keep): (Vec<_>, Vec<_>) = q
                .dead
                .drain(..)
                .partition(|d| ids.is_none_or(|ids| ids.contains(&d.id)));
            q.dead = keep;
            let moved = back.len();
            q.ready.extend(back.into_iter().map(|d| (d.id, d.bytes)));
            q.wake.wake();
            moved
        };
        self.inner.changed.notify_waiters();
        Ok(moved)
    }

    async fn delete(&self, queue: &str, ids: Option<&[String]>) -> Result<usize> {
        let mut state = self.inner.lock();
        let q = Inner::queue(&mut state, queue)?;
        let before = q.dead.len();
        q.dead
            .retain(|d| ids.is_some_and(|ids| !ids.contains(&d.id)));
        Ok(before - q.dead.len())
    }
}

/// Consumes one queue of a [`StubBackend`].
struct StubConsumer {
    inner: Arc<Inner>,
    queue: Arc<str>,
    wake: Arc<Wake>,
    /// The wake generation when the last fetch began.
    seen: AtomicU64,
    /// The earliest delayed message's eta after the last fetch (ms; 0: none).
    next_eta: AtomicU64,
}

impl StubConsumer {
    /// Waits for a push since the last fetch began, the next delayed message's eta, or
    /// `deadline`.
    async fn wait_until(&self, deadline: Instant) {
        let mut until = deadline;
        let eta = self.next_eta.load(Ordering::Acquire);
        if eta != 0 {
            until = until.min(deadline_after(Duration::from_millis(
                eta.saturating_sub(now_ms()),
            )));
        }
        self.wake
            .wait(self.seen.load(Ordering::Acquire), until)
            .await;
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut QueueState) -> T) -> Result<T> {
        let result = {
            let mut state = self.inner.lock();
            f(Inner::queue(&mut state, &self.queue)?)
        };
        self.inner.changed.notify_waiters();
        Ok(result)
    }
}

#[async_trait]
impl Consumer for StubConsumer {
    async fn fetch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        self.fetch_bounded(max, usize::MAX, timeout).await
    }

    async fn fetch_bounded(
        &self,
        max: usize,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = deadline_after(timeout);
        loop {
            self.seen.store(self.wake.generation(), Ordering::Release);
            let (batch, next_eta) = {
                let mut state = self.inner.lock();
                let q = Inner::queue(&mut state, &self.queue)?;
                promote_due(q, now_ms());
                let (mut batch, mut taken) = (Vec::new(), 0usize);
                while batch.len() < max && !q.paused {
                    let Some(size) = q.ready.front().map(|(_, bytes)| bytes.len()) else {
                        break;
                    };
                    if !batch.is_empty() && taken.saturating_add(size) > max_bytes {
                        break;
                    }
                    let Some((id, bytes)) = q.ready.pop_front() else {
                        break;
                    };
                    taken += size;
                    let message = Message::decode(&bytes);
                    q.unacked.insert(id.clone(), bytes);
                    batch.push(Delivery {
                        tag: DeliveryTag {
                            queue: self.queue.clone(),
                            id,
                        },
                        size,
                        message,
                    });
                }
                (batch, q.delayed.keys().next().map_or(0, |(eta, _)| *eta))
            };
            self.next_eta.store(next_eta, Ordering::Release);
            if !batch.is_empty() || Instant::now() >= deadline {
                return Ok(batch);
            }
            self.wait_until(deadline).await;
        }
    }

    async fn wait(&self, timeout: Duration) {
        self.wait_until(deadline_after(timeout)).await;
    }

    async fn ack(&self, tags: &[DeliveryTag]) -> Result<()> {
        self.with_queue(|q| {
            for tag in tags {
                q.unacked.remove(&tag.id);
            }
        })
    }

    async fn nack(&self, tag: &DeliveryTag, reason: &str) -> Result<()> {
        self.with_queue(|q| {
            if let Some(bytes) = q.unacked.remove(&tag.id) {
                q.dead.push(StubDeadLetter {
                    id: tag.id.clone(),
                    bytes,
                    dead_at: now_ms(),
                    reason: truncate(reason).into_owned(),
                });
            }
        })
    }

    async fn requeue(&self, tags: &[DeliveryTag]) -> Result<()> {
        self.with_queue(|q| {
            // Back to the head, in their original order: they keep their place in line.
            for tag in tags.iter().rev() {
                if let Some(bytes) = q.unacked.remove(&tag.id) {
                    q.ready.push_front((tag.id.clone(), bytes));
                }
            }
            q.wake.wake();
        })
    }
}

#[async_trait]
impl crate::broker::UniqueKeys for StubBackend {
    async fn enqueue_unique(
        &self,
        message: Message,
        unique: &crate::broker::Unique,
        renew: bool,
    ) -> Result<crate::broker::Claim> {
        let now = std::time::Instant::now();
        let claimed = {
            let mut keys = self.inner.unique.lock().unwrap_or_else(|e| e.into_inner());
            let holder = keys
                .get(&unique.key)
                .filter(|(_, expiry)| *expiry > now)
                .map(|(id, _)| id.clone());
            match holder {
                Some(holder) if holder != message.message_id && !renew => {
                    return Ok(crate::broker::Claim::Held { holder })
                }
                Some(holder) if holder != message.message_id => false,
                _ => {
                    let claim = (message.message_id.clone(), now + unique.ttl);
                    keys.insert(unique.key.clone(), claim);
                    true
                }
            }
        };
        let id = message.message_id.clone();
        match self.enqueue(vec![message]).await {
            Ok(mut stored) => stored
                .pop()
                .map(crate::broker::Claim::Stored)
                .ok_or(Error::Closed),
            Err(err) => {
                if claimed {
                    self.release(&unique.key, &id).await?;
                }
                Err(err)
            }
        }
    }

    async fn release(&self, key: &str, message_id: &str) -> Result<bool> {
        let mut keys = self.inner.unique.lock().unwrap_or_else(|e| e.into_inner());
        let held = keys.get(key).is_some_and(|(id, _)| id == message_id);
        if held {
            keys.remove(key);
        }
        Ok(held)
    }

    async fn holder(&self, key: &str) -> Result<Option<String>> {
        let keys = self.inner.unique.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        Ok(keys
            .get(key)
            .filter(|(_, expiry)| *expiry > now)
            .map(|(id, _)| id.clone()))
    }
}
