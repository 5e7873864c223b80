//! Delayed messages a process holds until they are due, and their atomic move from the delay
//! queue to the queue.
//!
//! Memory goes by count, not size. Claiming (`lua/claim_delayed.lua`) moves ids from `q.DQ`
//! to this worker's delay ack set and returns only their eta and payload size, so a held
//! message costs about 150 bytes however large it is; its payload stays in Redis until
//! it is due, and is read then, in batches of at most `PROMOTE_BYTES`. Holding whole
//! messages, as Dramatiq does, took an idle worker to 1.56 GB with 1,500 delayed 1 MB ones.
//! [`RedisConfig::delay_prefetch`](super::RedisConfig::delay_prefetch) caps the count.
//!
//! There is no horizon (claiming only what is due soon): `q.DQ` is a list in arrival order,
//! shared with Python, so an eta is only known once its payload is read. Leaving far-future
//! messages in the list would mean decoding them again on every poll, and pushing them back
//! would wake every consumer to decode them again. Ids are claimed up to the count cap
//! whatever their eta, as Dramatiq does; at ~150 bytes each, the cap is the bound that matters.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::conn::evalsha;
use super::scripts::{CLAIM_DELAYED, FETCH_CHUNK, NACK, PROMOTE, SCRIPT_CHUNK};
use super::{DqPoll, QueueState, Shared};
use crate::error::Result;
use crate::message::{eta_too_far, new_message_id, now_ms, Message};
use crate::truncate::truncate;

/// Most payload bytes one claim decodes in Redis (always at least one message). cjson reads
/// string-heavy JSON at about 130 MB/s, so one claim holds the server for ~15 ms (unless one
/// message alone is larger).
const CLAIM_BYTES: u64 = 2 << 20;
/// Most payload bytes one promotion reads into memory (always at least one message).
const PROMOTE_BYTES: u64 = 8 << 20;
/// Most messages per promotion (three script arguments each).
const PROMOTE_CHUNK: usize = SCRIPT_CHUNK / 3;

/// A claimed delayed message (its id is in this worker's `.DQ` ack set): no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) id: String,
    pub(crate) eta: u64,
    /// The payload's length in bytes, to cut promotions by size before reading them.
    pub(crate) size: u64,
}

/// Held delayed messages of one queue, ordered by eta (then arrival).
#[derive(Debug, Default)]
pub(crate) struct Delayed {
    by_eta: BTreeMap<(u64, u64), Held>,
    seq: u64,
}

impl Delayed {
    pub(crate) fn insert(&mut self, held: Held) {
        self.seq += 1;
        self.by_eta.insert((held.eta, self.seq), held);
    }

    pub(crate) fn len(&self) -> usize {
        self.by_eta.len()
    }

    pub(crate) fn next_eta(&self) -> Option<u64> {
        self.by_eta.keys().next().map(|(eta, _)| *eta)
    }

    /// Removes and returns the messages due at `now` (ms) in eta order: at most `max`, and
    /// no more than `max_bytes` of payload unless a single message is larger.
    pub(crate) fn take_due(&mut self, now: u64, max: usize, max_bytes: u64) -> Vec<Held> {
        let mut due = Vec::new();
        let mut bytes = 0u64;
        while due.len() < max {
            match self.by_eta.first_entry() {
                Some(entry)
                    if entry.key().0 <= now
                        && (due.is_empty() || bytes + entry.get().size <= max_bytes) =>
                {
                    bytes += entry.get().size;
                    due.push(entry.remove());
                }
                _ => break,
            }
        }
        due
    }

    pub(crate) fn take_all(&mut self) -> Vec<Held> {
        std::mem::take(&mut self.by_eta).into_values().collect()
    }

    pub(crate) fn ids(&self) -> HashSet<String> {
        self.by_eta.values().map(|h| h.id.clone()).collect()
    }
}

impl Extend<Held> for Delayed {
    fn extend<I: IntoIterator<Item = Held>>(&mut self, held: I) {
        for held in held {
            self.insert(held);
        }
    }
}

/// The message as it enters `queue` from its delay queue: `queue_name` without `.DQ`, no
/// `eta`, a new `redis_message_id` (returned with the payload). `message_id` is unchanged.
pub(crate) fn promoted(message: Message, queue: &str) -> (String, Vec<u8>) {
    let id = new_message_id();
    let mut message = message.undelayed();
    message.queue_name = queue.to_owned();
    message
        .options
        .insert("redis_message_id".into(), id.clone().into());
    (id, message.encode())
}

/// A claim's reply: (id, eta or -1, payload size) per id claimed, ids dropped for want of a
/// payload, and how many ids are left in the delay queue.
type Claimed = (Vec<(String, i64, u64)>, Vec<String>, u64);

/// Claims delayed messages when the delay queue changed (or the poll interval passed) and
/// there is room. Undecodable ones are dead-lettered on the spot.
pub(super) async fn refill_delayed(
    shared: &Shared,
    queue: &QueueState,
    poll: &mut DqPoll,
) -> Result<()> {
    let gen = queue.signal.dq_gen.load(Ordering::Acquire);
    let interval = if queue.signal.live.load(Ordering::Acquire) {
        shared.config.safety_poll_interval
    } else {
        shared.config.poll_interval
    };
    let due = poll.gen != gen || poll.last.is_none_or(|last| last.elapsed() >= interval);
    let room = shared
        .config
        .delay_prefetch
        .saturating_sub(queue.delayed().len());
    if !due || room == 0 {
        return Ok(());
    }
    let keys = &queue.keys;
    let mut cmd = evalsha(
        &CLAIM_DELAYED,
        &[
            &keys.dq_list,
            &keys.dq_msgs,
            &keys.dq_acks,
            &keys.heartbeats,
        ],
    );
    cmd.arg(room.min(FETCH_CHUNK))
        .arg(CLAIM_BYTES)
        .arg(&shared.worker_id)
        .arg(now_ms())
        .arg(shared.config.limits.max_size.min(1 << 52));
    let mut retried = false;
    let reply = shared
        .conn
        .eval_noting_retries("claim delayed", &CLAIM_DELAYED, &cmd, &mut retried)
        .await;
    if retried {
        // An attempt whose reply was lost may have claimed ids nobody here holds.
        queue.needs_reclaim.store(true, Ordering::Release);
    }
    let (claimed, missing, left): Claimed = reply?;
    poll.last = Some(Instant::now());
    poll.gen = gen;
    let dq = format!("{}.DQ", queue.name);
    for id in missing {
        tracing::warn!(queue = %dq, redis_message_id = %id, "dropped a delayed id whose payload is missing (Dramatiq #266)");
    }
    let mut undated = Vec::new();
    let mut too_far = Vec::new();
    let mut too_large = Vec::new();
    {
        let mut delayed = queue.delayed();
        for (id, eta, size) in claimed {
            if eta == -2 {
                too_large.push((id, size));
                continue;
            }
            match u64::try_from(eta) {
                Ok(eta) if eta_too_far(eta) => too_far.push((id, eta.to_string())),
                Ok(eta) => delayed.insert(Held { id, eta, size }),
                Err(_) => undated.push(id),
            }
        }
    }
    for (id, eta) in too_far {
        dead_letter(shared, queue, &dq, &id, &too_far_reason(&eta)).await?;
    }
    let limit = shared.config.limits.max_size;
    for (id, size) in too_large {
        let reason = crate::limits::too_large_reason(size as usize, limit);
        dead_letter(shared, queue, &dq, &id, &reason).await?;
    }
    if let Err(err) = date_in_rust(shared, queue, &dq, undated).await {
        // Claimed ids not held yet are orphans in our ack set: the next round returns them.
        queue.needs_reclaim.store(true, Ordering::Release);
        return Err(err);
    }
    if left > 0 && queue.delayed().len() < shared.config.delay_prefetch {
        // The claim stopped at its count or byte budget: claim again in the next round, which
        // this wake-up starts at once. Every claim takes at least one id, so this ends.
        queue.signal.wake(true);
    }
    Ok(())
}

/// Claimed messages the script could not date (cjson refused the payload, or no plain
/// integer eta): read one payload at a time and hold or dead-letter it as our decoder says.
async fn date_in_rust(
    shared: &Shared,
    queue: &QueueState,
    dq: &str,
    ids: Vec<String>,
) -> Result<()> {
    for id in ids {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&queue.keys.dq_msgs).arg(&id);
        let payload: Option<Vec<u8>> = shared.conn.query("read delayed", &cmd).await?;
        let Some(payload) = payload else {
            // Deleted since the claim (a flush): nothing to hold.
            forget(shared, queue, &[id]).await?;
            continue;
        };
        match Message::decode(&payload) {
            Ok(message) => match message.eta() {
                Some(eta) if eta_too_far(eta) => {
                    let eta = message.options.get("eta").map(ToString::to_string);
                    let reason = too_far_reason(eta.as_deref().unwrap_or_default());
                    dead_letter(shared, queue, dq, &id, &reason).await?;
                }
                // Python takes a non-number for "now"; so does a missing eta here.
                eta => queue.delayed().insert(Held {
                    id,
                    eta: eta.unwrap_or(0),
                    size: payload.len() as u64,
                }),
            },
            Err(err) => dead_letter(shared, queue, dq, &id, &undecodable_reason(&err)).await?,
        }
    }
    Ok(())
}

/// Moves due delayed messages to the queue, batch by batch (see [`promote`]).
pub(super) async fn promote_due(shared: &Shared, queue: &QueueState) -> Result<()> {
    loop {
        let due = queue
            .delayed()
            .take_due(now_ms(), PROMOTE_CHUNK, PROMOTE_BYTES);
        if due.is_empty() {
            return Ok(());
        }
        promote(shared, queue, due).await?;
    }
}

/// Reads the payloads of `due`, rewrites them for the queue and moves them in one atomic
/// script (`lua/promote.lua`), which skips ids no longer in our ack set (taken back by
/// dead-worker recovery meanwhile). A payload gone meanwhile is skipped; one that does not
/// decode is dead-lettered. On failure the unsettled messages go back to memory; a retry
/// cannot move one twice.
async fn promote(shared: &Shared, queue: &QueueState, due: Vec<Held>) -> Result<()> {
    let keys = &queue.keys;
    let mut read = redis::cmd("HMGET");
    read.arg(&keys.dq_msgs);
    for held in &due {
        read.arg(&held.id);
    }
    let payloads: Vec<Option<Vec<u8>>> = match shared.conn.query("read due delayed", &read).await {
        Ok(payloads) => payloads,
        Err(err) => {
            queue.delayed().extend(due);
            return Err(err);
        }
    };
    let mut script = evalsha(
        &PROMOTE,
        &[&keys.dq_acks, &keys.dq_msgs, &keys.list, &keys.msgs],
    );
    let (mut moving, mut undecodable, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for (held, payload) in due.into_iter().zip(payloads) {
        let Some(payload) = payload else {
            gone.push(held.id);
            continue;
        };
        match Message::decode(&payload) {
            Ok(message) => {
                let (new_id, payload) = promoted(message, &queue.name);
                script.arg(&held.id).arg(new_id).arg(payload);
                moving.push(held);
            }
            Err(err) => undecodable.push((held, err.to_string())),
        }
    }
    if !moving.is_empty() {
        match shared.conn.eval::<u64>("promote", &PROMOTE, &script).await {
            Ok(moved) if (moved as usize) < moving.len() => {
                tracing::debug!(queue = %queue.name, skipped = moving.len() - moved as usize, "delayed messages taken back by dead-worker recovery were skipped");
            }
            Ok(_) => {}
            Err(err) => {
                let mut delayed = queue.delayed();
                delayed.extend(moving);
                delayed.extend(undecodable.into_iter().map(|(held, _)| held));
                return Err(err);
            }
        }
    }
    let dq = format!("{}.DQ", queue.name);
    let mut undecodable = undecodable.into_iter();
    while let Some((held, err)) = undecodable.next() {
        if let Err(failed) =
            dead_letter(shared, queue, &dq, &held.id, &undecodable_reason(&err)).await
        {
            let rest = undecodable.map(|(held, _)| held);
            queue.delayed().extend(std::iter::once(held).chain(rest));
            return Err(failed);
        }
    }
    if !gone.is_empty() {
        tracing::debug!(queue = %queue.name, skipped = gone.len(), "delayed messages deleted meanwhile (a flush or recovery) were skipped");
        forget(shared, queue, &gone).await?;
    }
    Ok(())
}

/// Dead-letters claimed delayed message `id`, recording `reason` (cut to about 1 KB).
async fn dead_letter(
    shared: &Shared,
    queue: &QueueState,
    dq: &str,
    id: &str,
    reason: &str,
) -> Result<()> {
    let reason = truncate(reason);
    tracing::error!(queue = %dq, redis_message_id = %id, %reason, "dead-lettering a delayed message");
    let keys = &queue.keys;
    let mut cmd = evalsha(
        &NACK,
        &[
            &keys.dq_acks,
            &keys.dq_msgs,
            &keys.xq,
            &keys.xq_msgs,
            &keys.xq_reasons,
        ],
    );
    cmd.arg(id).arg(now_ms()).arg(reason.as_ref());
    let _: u64 = shared.conn.eval("nack", &NACK, &cmd).await?;
    Ok(())
}

fn undecodable_reason(err: &impl std::fmt::Display) -> String {
    format!("undecodable message: {}", truncate(&err.to_string()))
}

fn too_far_reason(eta: &str) -> String {
    format!("eta {} is more than 100 years away", truncate(eta))
}

/// Drops claimed ids whose payload is gone from our delay ack set, so none is left there.
async fn forget(shared: &Shared, queue: &QueueState, ids: &[String]) -> Result<()> {
    let mut cmd = redis::cmd("SREM");
    cmd.arg(&queue.keys.dq_acks).arg(ids);
    let _: u64 = shared.conn.query("forget delayed", &cmd).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn held(id: &str, eta: u64, size: u64) -> Held {
        Held {
            id: id.into(),
            eta,
            size,
        }
    }

    fn ids(batch: Vec<Held>) -> Vec<String> {
        batch.into_iter().map(|h| h.id).collect()
    }

    #[test]
    fn releases_only_due_messages_in_eta_order() {
        let mut delayed = Delayed::default();
        delayed.insert(held("late", 30, 10));
        delayed.insert(held("early", 10, 10));
        delayed.insert(held("also-early", 10, 10));
        assert_eq!(delayed.next_eta(), Some(10));
        let due = delayed.take_due(20, 10, PROMOTE_BYTES);
        assert_eq!(ids(due), ["early", "also-early"]);
        assert_eq!(delayed.len(), 1);
    }

    #[test]
    fn due_batches_are_cut_by_bytes_and_count() {
        let mut delayed = Delayed::default();
        for (i, size) in [3 * MB, 3 * MB, 3 * MB, 100, 100, 100]
            .into_iter()
            .enumerate()
        {
            delayed.insert(held(&format!("m{i}"), i as u64, size));
        }
        assert_eq!(ids(delayed.take_due(99, 10, 8 * MB)), ["m0", "m1"]);
        assert_eq!(ids(delayed.take_due(99, 2, 8 * MB)), ["m2", "m3"]);
        assert_eq!(ids(delayed.take_due(99, 10, 8 * MB)), ["m4", "m5"]);
        assert!(delayed.take_due(99, 10, 8 * MB).is_empty());
    }

    #[test]
    fn a_message_larger_than_the_byte_budget_goes_alone() {
        let mut delayed = Delayed::default();
        delayed.insert(held("huge", 1, 20 * MB));
        delayed.insert(held("small", 2, 10));
        assert_eq!(ids(delayed.take_due(5, 10, 8 * MB)), ["huge"]);
        assert_eq!(ids(delayed.take_due(5, 10, 8 * MB)), ["small"]);
    }

    #[test]
    fn held_messages_carry_no_payload() {
        // An id, an eta and a size: a payload field would make this grow with the message.
        assert!(std::mem::size_of::<Held>() <= 40);
        let mut delayed = Delayed::default();
        delayed.extend((0..3).map(|i| held(&i.to_string(), 7, 5 * MB)));
        assert_eq!(delayed.len(), 3);
        assert_eq!(delayed.ids().len(), 3);
        assert_eq!(delayed.take_all().len(), 3);
        assert_eq!(delayed.next_eta(), None);
    }

    #[test]
    fn promotion_rewrites_queue_eta_and_redis_id_only() {
        let mut message = Message::new("q.DQ", "a", vec![1.into()]);
        message.options.insert("eta".into(), 5.into());
        message
            .options
            .insert("redis_message_id".into(), "old".into());
        message.options.insert("retries".into(), 2.into());
        let (id, payload) = promoted(message.clone(), "q");
        let moved = Message::decode(&payload).unwrap();
        assert_eq!(moved.queue_name, "q");
        assert_eq!(moved.options.get("eta"), None);
        assert_eq!(moved.options["redis_message_id"], id.as_str());
        assert_ne!(id, "old");
        assert_eq!(moved.options["retries"], 2);
        assert_eq!(moved.message_id, message.message_id);
        assert_eq!(moved.args, message.args);
    }
}
