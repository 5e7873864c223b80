//! Delayed messages a process holds in memory until they are due, and their atomic move from
//! the delay queue to the queue.

use std::collections::{BTreeMap, HashSet};

use crate::message::{new_message_id, Message};

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
