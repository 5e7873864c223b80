//! Delayed messages a process holds in memory until they are due, and their atomic move from
//! the delay queue to the queue.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::conn::evalsha;
use super::consumer::{fetch_script, FETCH_CHUNK, SCRIPT_CHUNK};
use super::scripts::{NACK, PROMOTE};
use super::{DqPoll, QueueState, Shared};
use crate::error::Result;
use crate::message::{eta_too_far, new_message_id, now_ms, Message};
use crate::truncate::truncate;

/// A delayed message fetched from `q.DQ` (its id is in this worker's `.DQ` ack set).
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) id: String,
    pub(crate) eta: u64,
    pub(crate) message: Message,
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

    /// Removes and returns the messages due at `now` (ms), at most `max`.
    pub(crate) fn take_due(&mut self, now: u64, max: usize) -> Vec<Held> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.by_eta.first_entry() {
                Some(entry) if entry.key().0 <= now => due.push(entry.remove()),
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

/// The message as it enters `queue` from its delay queue: `queue_name` without `.DQ`, no
/// `eta`, a new `redis_message_id` (returned with the payload). `message_id` is unchanged.
pub(crate) fn promoted(message: &Message, queue: &str) -> (String, Vec<u8>) {
    let mut message = message.clone();
    let id = new_message_id();
    message.queue_name = queue.to_owned();
    message.options.remove("eta");
    message
        .options
        .insert("redis_message_id".into(), id.clone().into());
    (id, message.encode())
}

/// Fetches delayed messages into memory when the delay queue changed (or the poll interval
/// passed) and there is room. Undecodable ones are dead-lettered on the spot.
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
    let max = room.min(FETCH_CHUNK);
    let pairs = fetch_script(
        shared,
        queue,
        [&keys.dq_list, &keys.dq_msgs, &keys.dq_acks],
        max,
    )
    .await?;
    let full = pairs.len() == max;
    poll.last = Some(Instant::now());
    // A full batch may have left more behind: look again next round.
    poll.gen = if full { gen.wrapping_sub(1) } else { gen };
    let dq = format!("{}.DQ", queue.name);
    for (id, payload) in pairs {
        let reason = match Message::decode(&payload) {
            Ok(message) => match message.eta() {
                Some(eta) if eta_too_far(eta) => {
                    let eta = message.options.get("eta").map(ToString::to_string);
                    let eta = truncate(eta.as_deref().unwrap_or_default()).into_owned();
                    tracing::error!(queue = %dq, redis_message_id = %id, message_id = %truncate(&message.message_id), %eta, "delayed message due more than 100 years from now; dead-lettering it");
                    format!("eta {eta} is more than 100 years away")
                }
                eta => {
                    // Python replaces a non-number with "now"; so does a missing eta here.
                    let eta = eta.unwrap_or(0);
                    queue.delayed().insert(Held { id, eta, message });
                    continue;
                }
            },
            Err(err) => {
                let err = truncate(&err.to_string()).into_owned();
                tracing::error!(queue = %dq, redis_message_id = %id, error = %err, "undecodable delayed message; dead-lettering it");
                format!("undecodable message: {err}")
            }
        };
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
        cmd.arg(&id).arg(now_ms()).arg(reason);
        let _: u64 = shared.conn.eval("nack", &NACK, &cmd).await?;
    }
    Ok(())
}

/// Moves due delayed messages to the queue, atomically per batch (see `lua/promote.lua`). On
/// failure they go back to memory; a retry cannot move one twice.
pub(super) async fn promote_due(shared: &Shared, queue: &QueueState) -> Result<()> {
    loop {
        let due = queue.delayed().take_due(now_ms(), SCRIPT_CHUNK / 3);
        if due.is_empty() {
            return Ok(());
        }
        let keys = &queue.keys;
        let mut cmd = evalsha(
            &PROMOTE,
            &[&keys.dq_acks, &keys.dq_msgs, &keys.list, &keys.msgs],
        );
        for held in &due {
            let (new_id, payload) = promoted(&held.message, &queue.name);
            cmd.arg(&held.id).arg(new_id).arg(payload);
        }
        match shared.conn.eval::<u64>("promote", &PROMOTE, &cmd).await {
            Ok(moved) => {
                if (moved as usize) < due.len() {
                    tracing::debug!(queue = %queue.name, skipped = due.len() - moved as usize, "delayed messages taken back by dead-worker recovery or a flush were skipped");
                }
            }
            Err(err) => {
                let mut delayed = queue.delayed();
                for held in due {
                    delayed.insert(held);
                }
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &str, eta: u64) -> Held {
        Held {
            id: id.into(),
            eta,
            message: Message::new("q.DQ", "a", vec![]),
        }
    }

    #[test]
    fn releases_only_due_messages_in_eta_order() {
        let mut delayed = Delayed::default();
        delayed.insert(held("late", 30));
        delayed.insert(held("early", 10));
        delayed.insert(held("also-early", 10));
        assert_eq!(delayed.next_eta(), Some(10));
        let due: Vec<_> = delayed.take_due(20, 10).into_iter().map(|h| h.id).collect();
        assert_eq!(due, ["early", "also-early"]);
        assert_eq!(delayed.len(), 1);
    }

    #[test]
    fn promotion_rewrites_queue_eta_and_redis_id_only() {
        let mut message = Message::new("q.DQ", "a", vec![1.into()]);
        message.options.insert("eta".into(), 5.into());
        message
            .options
            .insert("redis_message_id".into(), "old".into());
        message.options.insert("retries".into(), 2.into());
        let (id, payload) = promoted(&message, "q");
        let moved = Message::decode(&payload).unwrap();
        assert_eq!(moved.queue_name, "q");
        assert_eq!(moved.options.get("eta"), None);
        assert_eq!(moved.options["redis_message_id"], id.as_str());
        assert_ne!(id, "old");
        assert_eq!(moved.options["retries"], 2);
        assert_eq!(moved.message_id, message.message_id);
    }
}
