//! Dramatiq 2.x's Redis key layout (dramatiq-wire.md §1.2), plus the dead-letter reasons hash
//! that only we read.

/// Key names of one namespace.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    ns: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Keys {
        Keys {
            ns: namespace.to_owned(),
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.ns
    }

    /// `{ns}:__heartbeats__`: worker id -> last heartbeat, ms.
    pub(crate) fn heartbeats(&self) -> String {
        format!("{}:__heartbeats__", self.ns)
    }

    /// `{ns}:__unique__.{key}`: the id of the message holding uniqueness key `key`.
    pub(crate) fn unique(&self, key: &str) -> String {
        format!("{}:__unique__.{key}", self.ns)
    }

    /// The list of `queue` (which may be a `.DQ` name).
    pub(crate) fn list(&self, queue: &str) -> String {
        format!("{}:{queue}", self.ns)
    }

    /// The payload hash of `queue` (which may be a `.DQ` name).
    pub(crate) fn msgs(&self, queue: &str) -> String {
        format!("{}:{queue}.msgs", self.ns)
    }

    /// `worker`'s set of fetched, unacked ids of `queue` (which may be a `.DQ` name).
    pub(crate) fn acks(&self, worker: &str, queue: &str) -> String {
        format!("{}:__acks__.{worker}.{queue}", self.ns)
    }

    /// A SCAN pattern matching every ack set of `worker`.
    pub(crate) fn acks_pattern(&self, worker: &str) -> String {
        format!(
            "{}:__acks__.{}.*",
            glob_escape(&self.ns),
            glob_escape(worker)
        )
    }

    /// The queue an ack set of `worker` belongs to, from its key.
    pub(crate) fn queue_of_acks<'k>(&self, worker: &str, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.ns)?
            .strip_prefix(":__acks__.")?
            .strip_prefix(worker)?
            .strip_prefix('.')
            .filter(|q| !q.is_empty())
    }

    /// A SCAN pattern matching every dead-letter zset of the namespace.
    pub(crate) fn dead_letter_pattern(&self) -> String {
        format!("{}:*.XQ", glob_escape(&self.ns))
    }

    /// Matches every payload hash of the namespace (`q.msgs`, `q.DQ.msgs`, `q.XQ.msgs`).
    pub(crate) fn msgs_pattern(&self) -> String {
        format!("{}:*.msgs", glob_escape(&self.ns))
    }

    /// Matches every queue's dead-letter reasons hash in the namespace.
    pub(crate) fn dead_letter_reasons_pattern(&self) -> String {
        format!("{}:*.XQ.reasons", glob_escape(&self.ns))
    }

    /// The canonical queue of a dead-letter zset key; `None` for the runtime's own keys
    /// (`__unique__.<key>` may end in `.XQ` too: its key is the sender's text).
    pub(crate) fn queue_of_dead_letters<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.ns)?
            .strip_prefix(':')?
            .strip_suffix(".XQ")
            .filter(|q| !q.is_empty() && !q.starts_with("__"))
    }

    /// `{ns}:__paused__`: SET of the canonical queues our workers do not fetch from. Ours
    /// only: Python workers do not read it.
    pub(crate) fn paused(&self) -> String {
        format!("{}:__paused__", self.ns)
    }

    /// `{ns}:__activity__.{minute_ms}`: HASH `processed`, `failed` -> what the workers
    /// reported for the minute starting at `minute_ms`. Ours only; expires after 2 hours.
    pub(crate) fn activity(&self, minute_ms: u64) -> String {
        format!("{}:__activity__.{minute_ms}", self.ns)
    }

    /// The keys of canonical queue `queue` as seen by `worker`.
    pub(crate) fn queue(&self, queue: &str, worker: &str) -> QueueKeys {
        let dq = format!("{queue}.DQ");
        QueueKeys {
            list: self.list(queue),
            msgs: self.msgs(queue),
            acks: self.acks(worker, queue),
            dq_list: self.list(&dq),
            dq_msgs: self.msgs(&dq),
            dq_acks: self.acks(worker, &dq),
            xq: format!("{}:{queue}.XQ", self.ns),
            xq_msgs: format!("{}:{queue}.XQ.msgs", self.ns),
            xq_reasons: format!("{}:{queue}.XQ.reasons", self.ns),
            heartbeats: self.heartbeats(),
        }
    }
}

/// Every key of one canonical queue.
#[derive(Clone, Debug)]
pub(crate) struct QueueKeys {
    /// LIST of ready ids.
    pub(crate) list: String,
    /// HASH id -> payload, until ack or nack.
    pub(crate) msgs: String,
    /// This worker's SET of fetched ids.
    pub(crate) acks: String,
    /// The delay queue's LIST, HASH and this worker's ack SET.
    pub(crate) dq_list: String,
    pub(crate) dq_msgs: String,
    pub(crate) dq_acks: String,
    /// Dead letters: ZSET id -> ms, HASH id -> payload.
    pub(crate) xq: String,
    pub(crate) xq_msgs: String,
    /// HASH id -> why it was dead-lettered. Ours only: Dramatiq never reads it.
    pub(crate) xq_reasons: String,
    pub(crate) heartbeats: String,
}

/// Escapes the glob metacharacters of SCAN's MATCH.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_dramatiqs_layout() {
        let keys = Keys::new("dramatiq");
        let q = keys.queue("default", "w1");
        assert_eq!(q.list, "dramatiq:default");
        assert_eq!(q.msgs, "dramatiq:default.msgs");
        assert_eq!(q.acks, "dramatiq:__acks__.w1.default");
        assert_eq!(q.dq_list, "dramatiq:default.DQ");
        assert_eq!(q.dq_msgs, "dramatiq:default.DQ.msgs");
        assert_eq!(q.dq_acks, "dramatiq:__acks__.w1.default.DQ");
        assert_eq!(q.xq, "dramatiq:default.XQ");
        assert_eq!(q.xq_msgs, "dramatiq:default.XQ.msgs");
        assert_eq!(q.heartbeats, "dramatiq:__heartbeats__");
    }

    #[test]
    fn parses_scanned_keys() {
        let keys = Keys::new("a*b");
        assert_eq!(keys.acks_pattern("w"), "a\\*b:__acks__.w.*");
        assert_eq!(
            keys.queue_of_acks("w", "a*b:__acks__.w.jobs.DQ"),
            Some("jobs.DQ")
        );
        assert_eq!(keys.queue_of_acks("w", "a*b:__acks__.x.jobs"), None);
        assert_eq!(keys.queue_of_dead_letters("a*b:jobs.XQ"), Some("jobs"));
        assert_eq!(keys.queue_of_dead_letters("other:jobs.XQ"), None);
    }
}
