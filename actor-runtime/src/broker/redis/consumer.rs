//! Consuming one queue: batched fetches into this worker's ack set, delayed messages claimed
//! and held (ids only) until due, and wake-ups on keyspace notifications.
//!
//! Cancel safety: every fetch round runs in a spawned task, so dropping `fetch` never
//! interrupts a script. A fetched batch nobody receives puts itself back at the head of the
//! queue when dropped ([`Fetched`]). Delayed messages go straight into the queue's shared
//! store, so they are never lost with a dropped future either.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::conn::evalsha;
use super::delayed::{promote_due, refill_delayed};
use super::scripts::{ACK, FETCH, FETCH_CHUNK, NACK, REQUEUE, SCRIPT_CHUNK};
use super::{QueueState, Shared};
use crate::broker::{deadline_after, later, Consumer, Delivery, DeliveryTag};
use crate::error::{Error, Result};
use crate::message::{now_ms, DecodeError, Message};
use crate::truncate::truncate;

/// A consumer of one queue (and, internally, its delay queue).
pub(crate) struct RedisConsumer {
    shared: Arc<Shared>,
    queue: Arc<QueueState>,
    /// The queue's wake generation when the last round began.
    seen: AtomicU64,
    /// The earliest eta of the delayed messages held after the last round (ms; 0: none).
    next_eta: AtomicU64,
}

impl RedisConsumer {
    pub(crate) fn new(shared: Arc<Shared>, queue: Arc<QueueState>) -> Self {
        RedisConsumer {
            shared,
            queue,
            seen: AtomicU64::new(0),
            next_eta: AtomicU64::new(0),
        }
    }

    /// One fetch round of at most `max` messages, run as its own task (cancel safety).
    async fn round(&self, max: usize, max_bytes: usize) -> Result<Vec<Delivery>> {
        self.seen
            .store(self.queue.signal.ready.generation(), Ordering::Release);
        let round = tokio::spawn(round(
            self.shared.clone(),
            self.queue.clone(),
            max,
            max_bytes,
        ));
        let (fetched, next_eta) = match round.await {
            Ok(result) => result?,
            Err(err) => {
                return Err(Error::Connection {
                    context: "the fetch task failed".into(),
                    source: Some(Box::new(err)),
                })
            }
        };
        self.next_eta
            .store(next_eta.unwrap_or(0), Ordering::Release);
        Ok(fetched.take())
    }

    /// Waits for a push since the last round began, the next held delayed message's eta,
    /// the poll interval (notifications may be off or lost), or `deadline`.
    async fn wait_until(&self, deadline: Instant) {
        if self.queue.pause.cached() {
            // Pushes do not matter while paused; the flag does, when next due to be read.
            tokio::time::sleep_until(deadline.min(self.queue.pause.next_check())).await;
            return;
        }
        let signal = &self.queue.signal;
        let now = Instant::now();
        let poll = if signal.live.load(Ordering::Acquire) {
            self.shared.config.safety_poll_interval
        } else {
            self.shared.config.poll_interval
        };
        let mut until = deadline.min(later(now, poll));
        let eta = self.next_eta.load(Ordering::Acquire);
        if eta != 0 {
            until = until.min(later(
                now,
                Duration::from_millis(eta.saturating_sub(now_ms())),
            ));
        }
        signal
            .ready
            .wait(self.seen.load(Ordering::Acquire), until)
            .await;
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
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
        let max = max.clamp(1, FETCH_CHUNK);
        loop {
            // Paused by an operator: fetch nothing (the flag is read at most once a second).
            if self.queue.pause.check(&self.shared, &self.queue.name).await {
                if Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                self.wait_until(deadline).await;
                continue;
            }
            let batch = self.round(max, max_bytes).await?;
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
        for (queue, ids) in by_queue(tags) {
            let acks = self.shared.keys.acks(&self.shared.worker_id, queue);
            let msgs = self.shared.keys.msgs(queue);
            for chunk in ids.chunks(SCRIPT_CHUNK) {
                let mut cmd = evalsha(&ACK, &[&acks, &msgs]);
                cmd.arg(chunk);
                let _: u64 = self.shared.conn.eval("ack", &ACK, &cmd).await?;
                self.settled(chunk);
            }
        }
        Ok(())
    }

    async fn nack(&self, tag: &DeliveryTag, reason: &str) -> Result<()> {
        let keys = &self.queue.keys;
        let acks = self.shared.keys.acks(&self.shared.worker_id, &tag.queue);
        let msgs = self.shared.keys.msgs(&tag.queue);
        let mut cmd = evalsha(
            &NACK,
            &[&acks, &msgs, &keys.xq, &keys.xq_msgs, &keys.xq_reasons],
        );
        cmd.arg(&tag.id)
            .arg(now_ms())
            .arg(truncate(reason).as_ref());
        let _: u64 = self.shared.conn.eval("nack", &NACK, &cmd).await?;
        self.settled(std::slice::from_ref(&tag.id));
        Ok(())
    }

    async fn requeue(&self, tags: &[DeliveryTag]) -> Result<()> {
        for (queue, ids) in by_queue(tags) {
            // Settled first: once back in the list, an id may be fetched again at once.
            self.settled(&ids);
            if let Err(err) = requeue_ids(&self.shared, queue, &ids).await {
                self.queue.needs_reclaim.store(true, Ordering::Release);
                return Err(err);
            }
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        // Under the lock, so no round is promoting or fetching delayed messages meanwhile.
        let _poll = self.queue.lock.lock().await;
        let held = self.queue.delayed().take_all();
        if held.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = held.iter().map(|h| h.id.clone()).collect();
        let dq = format!("{}.DQ", self.queue.name);
        match requeue_ids(&self.shared, &dq, &ids).await {
            Ok(()) => {
                tracing::debug!(queue = %self.queue.name, count = ids.len(), "returned held delayed messages to the delay queue");
                // Other consumers of this queue in this process fetch them again.
                self.queue.signal.wake(true);
                Ok(())
            }
            Err(err) => {
                for held in held {
                    self.queue.delayed().insert(held);
                }
                Err(err)
            }
        }
    }
}

impl RedisConsumer {
    fn settled(&self, ids: &[String]) {
        let mut outstanding = self.queue.outstanding();
        for id in ids {
            outstanding.remove(id);
        }
    }
}

/// Ids grouped by the queue they were fetched from, order kept.
fn by_queue(tags: &[DeliveryTag]) -> HashMap<&str, Vec<String>> {
    let mut groups: HashMap<&str, Vec<String>> = HashMap::new();
    for tag in tags {
        groups.entry(&tag.queue).or_default().push(tag.id.clone());
    }
    groups
}

/// Returns fetched ids of `queue` (`q` or `q.DQ`) from this worker's ack set to the head of
/// the queue, in order.
async fn requeue_ids(shared: &Shared, queue: &str, ids: &[String]) -> Result<()> {
    let acks = shared.keys.acks(&shared.worker_id, queue);
    let (msgs, list) = (shared.keys.msgs(queue), shared.keys.list(queue));
    // Last chunk first, so the whole batch ends up in its original order.
    for chunk in ids.rchunks(SCRIPT_CHUNK) {
        let mut cmd = evalsha(&REQUEUE, &[&acks, &msgs, &list]);
        cmd.arg(chunk);
        let _: u64 = shared.conn.eval("requeue", &REQUEUE, &cmd).await?;
    }
    Ok(())
}

/// A fetched batch that returns itself to the head of its queue if dropped unread.
pub(crate) struct Fetched {
    deliveries: Vec<Delivery>,
    shared: Arc<Shared>,
    queue: Arc<QueueState>,
}

impl Fetched {
    fn take(mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        if self.deliveries.is_empty() {
            return;
        }
        let ids: Vec<String> = self.deliveries.drain(..).map(|d| d.tag.id).collect();
        let (shared, queue) = (self.shared.clone(), self.queue.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(queue = %queue.name, count = ids.len(), "a fetched batch was dropped outside the runtime; it comes back when this worker counts as dead");
            return;
        };
        {
            let mut outstanding = queue.outstanding();
            for id in &ids {
                outstanding.remove(id);
            }
        }
        runtime.spawn(async move {
            let name = queue.name.clone();
            if let Err(err) = requeue_ids(&shared, &name, &ids).await {
                tracing::error!(queue = %name, error = %err, count = ids.len(), "could not return an unread batch; the next fetch reclaims it");
                queue.needs_reclaim.store(true, Ordering::Release);
            }
            queue.signal.wake(false);
        });
    }
}

/// One fetch round, run as its own task: reclaim orphans if a fetch failed, claim delayed
/// messages from the delay queue, promote the due ones, then fetch up to `max` ready
/// messages. Returns them with the next eta held.
async fn round(
    shared: Arc<Shared>,
    queue: Arc<QueueState>,
    max: usize,
    max_bytes: usize,
) -> Result<(Fetched, Option<u64>)> {
    let mut poll = queue.lock.lock().await;
    if queue.needs_reclaim.load(Ordering::Acquire) {
        reclaim(&shared, &queue).await?;
    }
    refill_delayed(&shared, &queue, &mut poll).await?;
    promote_due(&shared, &queue).await?;
    let deliveries = fetch_ready(&shared, &queue, max, max_bytes).await?;
    if queue.needs_reclaim.load(Ordering::Acquire) {
        // A fetch attempt of this round lost its reply; what it popped goes back now. A
        // failure here leaves the flag for the next round, and the batch is still good.
        if let Err(err) = reclaim(&shared, &queue).await {
            tracing::warn!(queue = %queue.name, error = %err, "reclaiming after a lost fetch reply failed; retrying next fetch");
        }
    }
    let next_eta = queue.delayed().next_eta();
    drop(poll);
    Ok((
        Fetched {
            deliveries,
            shared,
            queue,
        },
        next_eta,
    ))
}

/// Runs the fetch script on `list`/`msgs` into `acks`: (id, payload) pairs, at most `max` of
/// them and `max_bytes` of payload (at least one). A failed attempt may have popped ids nobody
/// will see, so it marks the queue for reclaiming (done before the next fetch, or at once by
/// the caller once it has recorded what it got). A payload over the maximum message size
/// stays in Redis: it comes back as its length alone.
async fn fetch_script(
    shared: &Shared,
    queue: &QueueState,
    keys: [&str; 3],
    max: usize,
    max_bytes: usize,
) -> Result<Vec<(String, Payload)>> {
    let [list, msgs, acks] = keys;
    let heartbeats = &queue.keys.heartbeats;
    let mut cmd = evalsha(&FETCH, &[list, msgs, acks, heartbeats]);
    cmd.arg(max)
        .arg(&shared.worker_id)
        .arg(now_ms())
        // Lua numbers are doubles: no need to send more than they hold exactly.
        .arg(max_bytes.min(1 << 52))
        .arg(shared.config.limits.max_size.min(1 << 52));
    let mut retried = false;
    let reply = shared
        .conn
        .eval_noting_retries("fetch", &FETCH, &cmd, &mut retried)
        .await;
    if retried {
        queue.needs_reclaim.store(true, Ordering::Release);
    }
    let (found, missing, oversized): FetchReply = reply?;
    for id in missing {
        tracing::warn!(queue = %list, redis_message_id = %id, "dropped a queued id whose payload is missing (Dramatiq #266)");
    }
    let mut pairs = Vec::with_capacity(found.len() / 2 + oversized.len());
    let mut it = found.into_iter();
    while let (Some(id), Some(payload)) = (it.next(), it.next()) {
        pairs.push((
            String::from_utf8_lossy(&id).into_owned(),
            Payload::Bytes(payload),
        ));
    }
    pairs.extend(
        oversized
            .into_iter()
            .map(|(id, size)| (id, Payload::TooLarge(size))),
    );
    Ok(pairs)
}

/// The fetch script's reply: id/payload pairs flat, ids without a payload, and (id, length)
/// of the payloads over the limit.
type FetchReply = (Vec<Vec<u8>>, Vec<String>, Vec<(String, usize)>);

/// A fetched payload, or the length of one left in Redis for being over the limit.
enum Payload {
    Bytes(Vec<u8>),
    TooLarge(usize),
}

async fn fetch_ready(
    shared: &Shared,
    queue: &QueueState,
    max: usize,
    max_bytes: usize,
) -> Result<Vec<Delivery>> {
    let keys = &queue.keys;
    let lists = [keys.list.as_str(), &keys.msgs, &keys.acks];
    let pairs = fetch_script(shared, queue, lists, max, max_bytes).await?;
    let limits = shared.config.limits;
    let mut outstanding = queue.outstanding();
    Ok(pairs
        .into_iter()
        .map(|(id, payload)| {
            outstanding.insert(id.clone());
            let (size, message) = match payload {
                Payload::Bytes(payload) => (payload.len(), Message::decode(&payload)),
                // Held as nothing: its bytes never left Redis.
                Payload::TooLarge(size) => (0, Err(DecodeError::too_large(size, limits.max_size))),
            };
            if size > limits.warn_size {
                tracing::warn!(queue = %queue.name, redis_message_id = %id, size, warn_size = limits.warn_size, "large message fetched: over the size warning threshold");
            }
            Delivery {
                tag: DeliveryTag {
                    queue: queue.name.clone(),
                    id,
                },
                size,
                message,
            }
        })
        .collect())
}

/// After a fetch whose reply was lost: ids in this worker's ack sets that no one here holds
/// go back to the head of their queue, so they are not stranded until this process dies.
async fn reclaim(shared: &Shared, queue: &QueueState) -> Result<()> {
    let keys = &queue.keys;
    let known = queue.outstanding().clone();
    orphans_back(shared, &keys.acks, &queue.name, &known).await?;
    let known = queue.delayed().ids();
    orphans_back(shared, &keys.dq_acks, &format!("{}.DQ", queue.name), &known).await?;
    queue.needs_reclaim.store(false, Ordering::Release);
    Ok(())
}

async fn orphans_back(
    shared: &Shared,
    acks: &str,
    queue: &str,
    known: &HashSet<String>,
) -> Result<()> {
    let mut cmd = redis::cmd("SMEMBERS");
    cmd.arg(acks);
    let members: Vec<String> = shared.conn.query("reclaim", &cmd).await?;
    let orphans: Vec<String> = members
        .into_iter()
        .filter(|id| !known.contains(id))
        .collect();
    if !orphans.is_empty() {
        tracing::warn!(
            queue,
            count = orphans.len(),
            "returning messages whose fetch reply was lost"
        );
        requeue_ids(shared, queue, &orphans).await?;
    }
    Ok(())
}
