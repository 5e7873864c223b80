//! The Dramatiq message envelope.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One message: which actor to run, with which arguments, plus options.
///
/// On the wire this is exactly Dramatiq's seven-key JSON object; Python Dramatiq refuses any
/// other top-level key, so extensions live in [`options`](Message::options), which keeps
/// unknown keys on a round trip.
///
/// ```
/// use actor_runtime::Message;
///
/// let msg = Message::new("default", "add", vec![1.into(), 2.into()]);
/// let bytes = msg.encode();
/// let back = Message::decode(&bytes).unwrap();
/// assert_eq!(back.actor_name, "add");
/// assert_eq!(back.message_id, msg.message_id);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// The queue the message sits in (`name.DQ` while it waits in a delay queue).
    pub queue_name: String,
    /// The registered name of the actor that runs it.
    pub actor_name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, by parameter name.
    pub kwargs: Map<String, Value>,
    /// Broker and middleware options (`eta`, `retries`, `redis_message_id`, ...).
    pub options: Map<String, Value>,
    /// A UUID, stable across retries and moves between queues.
    #[serde(default = "new_message_id")]
    pub message_id: String,
    /// When the message was first built, in ms since the Unix epoch.
    #[serde(default = "now_ms")]
    pub message_timestamp: u64,
}

/// Why bytes could not be read as a [`Message`]: malformed JSON, or (at a worker) a payload
/// over the maximum message size, left undecoded.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DecodeError(Why);

#[derive(Debug, thiserror::Error)]
enum Why {
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("{}", crate::limits::too_large_reason(*size, *limit))]
    TooLarge { size: usize, limit: usize },
}

impl From<serde_json::Error> for DecodeError {
    fn from(err: serde_json::Error) -> DecodeError {
        DecodeError(Why::Malformed(err))
    }
}

impl DecodeError {
    /// A payload of `size` bytes over the `limit` a worker decodes, left undecoded.
    ///
    /// ```
    /// let err = actor_runtime::message::DecodeError::too_large(20_000_000, 8 << 20);
    /// assert_eq!(err.over_limit(), Some((20_000_000, 8 << 20)));
    /// assert!(err.to_string().contains("20000000 bytes"));
    /// ```
    pub fn too_large(size: usize, limit: usize) -> DecodeError {
        DecodeError(Why::TooLarge { size, limit })
    }

    /// `(size, limit)` when the payload was over the maximum message size, not decoded.
    pub fn over_limit(&self) -> Option<(usize, usize)> {
        match self.0 {
            Why::TooLarge { size, limit } => Some((size, limit)),
            Why::Malformed(_) => None,
        }
    }
}

impl Message {
    /// A message for `actor_name` on `queue_name`, with a fresh id and timestamp.
    pub fn new(queue_name: &str, actor_name: &str, args: Vec<Value>) -> Message {
        Message {
            queue_name: queue_name.to_owned(),
            actor_name: actor_name.to_owned(),
            args,
            kwargs: Map::new(),
            options: Map::new(),
            message_id: new_message_id(),
            message_timestamp: now_ms(),
        }
    }

    /// Compact JSON, as Dramatiq's encoder writes it.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising owned strings, maps and JSON values cannot fail.
        // Sized for a small message's envelope and arguments, saving the first regrowths.
        let mut out = Vec::with_capacity(
            256 + self.queue_name.len() + self.actor_name.len() + self.message_id.len(),
        );
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Reads a message, accepting the `NaN`/`Infinity` tokens that Python's `json` writes.
    ///
    /// `Infinity` and `-Infinity` become the largest finite floats and `NaN` becomes `null`,
    /// since JSON (and so `serde_json`) has no such values.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        Ok(decode_json(bytes)?)
    }

    /// The queue without a `.DQ`/`.XQ` suffix.
    pub fn canonical_queue(&self) -> &str {
        canonical_queue(&self.queue_name)
    }

    /// An integer option (`retries`, `eta`, `max_age`...), if present and numeric.
    pub fn option_u64(&self, key: &str) -> Option<u64> {
        match self.options.get(key)? {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            _ => None,
        }
    }

    /// How many times this message has been retried so far.
    pub fn retries(&self) -> u32 {
        self.option_u64("retries").unwrap_or(0).min(u32::MAX as u64) as u32
    }

    /// `eta` option: when a delayed message becomes due, in ms since the epoch.
    pub fn eta(&self) -> Option<u64> {
        self.option_u64("eta")
    }

    /// The delay envelope: the message bound for its queue's delay queue (`q.DQ`), due at
    /// `eta` (ms since the epoch). The [`Broker`](crate::Broker) builds it on enqueue with a
    /// delay; [`undelayed`](Message::undelayed) undoes it.
    ///
    /// ```
    /// use actor_runtime::Message;
    ///
    /// let message = Message::new("emails", "send", vec![]).delayed(1_700_000_000_000);
    /// assert_eq!((message.queue_name.as_str(), message.eta()), ("emails.DQ", Some(1_700_000_000_000)));
    /// let message = message.undelayed();
    /// assert_eq!((message.queue_name.as_str(), message.eta()), ("emails", None));
    /// ```
    pub fn delayed(mut self, eta: u64) -> Message {
        self.queue_name = delay_queue(&self.queue_name);
        self.options.insert("eta".into(), eta.into());
        self
    }

    /// The message as it enters its queue once due: `queue_name` canonical (no `.DQ`), no
    /// `eta`. What a consumer hands out, and what a retry or a requeue starts from.
    pub fn undelayed(mut self) -> Message {
        let canonical = canonical_queue(&self.queue_name).len();
        self.queue_name.truncate(canonical);
        self.options.remove("eta");
        self
    }
}

/// Parses JSON as Python's `json` writes it, `NaN`/`Infinity` tokens included.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(err) => match replace_non_finite(bytes) {
            Some(fixed) => serde_json::from_slice(&fixed),
            None => Err(err),
        },
    }
}

/// The queue name without a `.DQ`/`.XQ` suffix.
pub(crate) fn canonical_queue(name: &str) -> &str {
    name.strip_suffix(".DQ")
        .or_else(|| name.strip_suffix(".XQ"))
        .unwrap_or(name)
}

/// The delay queue of `name`.
pub(crate) fn delay_queue(name: &str) -> String {
    format!("{}.DQ", canonical_queue(name))
}

/// Whether `name` is a valid queue name (`[a-zA-Z_][a-zA-Z0-9._-]*`, no reserved suffix).
pub fn is_valid_queue_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.ends_with(".DQ")
        && !name.ends_with(".XQ")
}

/// A random (version 4) UUID for a message id.
///
/// Drawn from `fastrand`'s per-thread generator (seeded from the OS) rather than
/// `Uuid::new_v4`, which asks the kernel for entropy on every call: ids need uniqueness, not
/// secrecy, and two system calls per enqueue were a measurable share of a send.
pub(crate) fn new_message_id() -> String {
    let bytes = fastrand::u128(..).to_le_bytes();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The longest a message may be delayed: 100 years (of 365.25 days).
///
/// A longer delay is a producer's mistake (a timestamp passed as a delay, a unit mix-up),
/// not a plan, and past about 584 million years it no longer fits an eta in ms. Enqueueing
/// with a longer delay is [`Error::DelayTooLong`](crate::Error::DelayTooLong); a message
/// whose `eta` (or pipeline `delay`) is further away, written by another producer, is
/// dead-lettered by the worker with the reason.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(actor_runtime::message::MAX_DELAY, Duration::from_secs(36_525 * 86_400));
/// ```
pub const MAX_DELAY: Duration = Duration::from_secs(36_525 * 86_400);

/// When a message sent now with `delay` becomes due, in ms since the epoch; `None` for a
/// delay over [`MAX_DELAY`].
pub(crate) fn eta_after(delay: Duration) -> Option<u64> {
    if delay > MAX_DELAY {
        return None;
    }
    now_ms().checked_add(delay.as_millis() as u64)
}

/// Whether `eta` (ms since the epoch) is further than [`MAX_DELAY`] from now.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn eta_too_far(eta: u64) -> bool {
    eta.saturating_sub(now_ms()) > MAX_DELAY.as_millis() as u64
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Rewrites bare `NaN`, `Infinity` and `-Infinity` tokens (outside strings) into valid JSON.
/// Returns `None` when there is none, so the original parse error stands.
fn replace_non_finite(bytes: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [(&[u8], &[u8]); 3] = [
        (b"-Infinity", b"-1.7976931348623157e308"),
        (b"Infinity", b"1.7976931348623157e308"),
        (b"NaN", b"null"),
    ];
    let mut out = Vec::with_capacity(bytes.len() + 32);
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    let mut i = 0;
    'scan: while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else {
            for (token, replacement) in TOKENS {
                if bytes[i..].starts_with(token) {
                    out.extend_from_slice(replacement);
                    i += token.len();
                    changed = true;
                    continue 'scan;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_exactly_the_seven_dramatiq_keys() {
        let msg = Message::new("default", "add", vec![1.into()]);
        let value: Value = serde_json::from_slice(&msg.encode()).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "actor_name",
                "args",
                "kwargs",
                "message_id",
                "message_timestamp",
                "options",
                "queue_name"
            ]
        );
    }

    #[test]
    fn rejects_extra_top_level_keys() {
        let raw = br#"{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},"message_id":"x","message_timestamp":1,"extra":1}"#;
        assert!(Message::decode(raw).is_err());
    }

    #[test]
    fn rejects_missing_required_fields() {
        let raw = br#"{"queue_name":"q","args":[],"kwargs":{},"options":{}}"#;
        let err = Message::decode(raw).unwrap_err();
        assert!(err.to_string().contains("actor_name"), "{err}");
    }

    #[test]
    fn fills_missing_id_and_timestamp_as_dramatiq_does() {
        let raw = br#"{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{}}"#;
        let msg = Message::decode(raw).unwrap();
        assert_eq!(msg.message_id.len(), 36);
        assert!(msg.message_timestamp > 0);
    }

    #[test]
    fn accepts_python_non_finite_numbers_outside_strings_only() {
        let raw = br#"{"queue_name":"q","actor_name":"a","args":[NaN,"NaN Infinity"],"kwargs":{},"options":{"time_limit":Infinity,"x":-Infinity},"message_id":"m","message_timestamp":1}"#;
        let msg = Message::decode(raw).unwrap();
        assert_eq!(msg.args[0], Value::Null);
        assert_eq!(msg.args[1], "NaN Infinity");
        assert_eq!(msg.options["time_limit"].as_f64(), Some(f64::MAX));
        assert_eq!(msg.options["x"].as_f64(), Some(f64::MIN));
    }

    #[test]
    fn preserves_unknown_options() {
        let mut msg = Message::new("q", "a", vec![]);
        msg.options
            .insert("custom".into(), serde_json::json!({"k": [1, 2]}));
        let back = Message::decode(&msg.encode()).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn message_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_message_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(10) {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 4, "{id}");
        }
    }

    #[test]
    fn etas_are_bounded_by_the_maximum_delay() {
        let now = now_ms();
        let eta = eta_after(Duration::from_secs(1)).unwrap();
        assert!((now + 1000..now + 2000).contains(&eta), "{eta}");
        assert!(eta_after(MAX_DELAY).is_some());
        assert_eq!(eta_after(MAX_DELAY + Duration::from_millis(1)), None);
        assert_eq!(eta_after(Duration::MAX), None);
        assert!(!eta_too_far(eta_after(MAX_DELAY).unwrap()));
        assert!(eta_too_far(u64::MAX));
        assert!(!eta_too_far(0));
    }

    #[test]
    fn queue_names() {
        assert!(is_valid_queue_name("default"));
        assert!(is_valid_queue_name("_a.b-c9"));
        assert!(!is_valid_queue_name("9a"));
        assert!(!is_valid_queue_name("a b"));
        assert!(!is_valid_queue_name("a.DQ"));
        assert_eq!(canonical_queue("a.DQ"), "a");
        assert_eq!(delay_queue("a.XQ"), "a.DQ");
    }
}
