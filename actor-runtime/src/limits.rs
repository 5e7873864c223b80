//! Payload limits: the largest encoded message a broker stores or a worker decodes, and a
//! warning threshold below it.
//!
//! The limits are settings of each broker's config
//! (`RedisConfig::max_message_size` with the `redis` feature, and the
//! RabbitMQ config's with the `rabbitmq` feature), checked where the backend already has the
//! encoded bytes, so they cost a length comparison per message:
//!
//! - at enqueue, a message over the limit is refused with
//!   [`Error::MessageTooLarge`] and nothing is stored; one over
//!   the warning threshold is stored and logged as a warning;
//! - at the worker, a message over the limit (put there by another producer) is dead-lettered
//!   with the reason, without being decoded. On Redis the fetch script compares the payload's
//!   length and leaves it in Redis, so it is never even transferred.
//!
//! # Defaults
//!
//! [`DEFAULT_MAX_MESSAGE_SIZE`] (8 MiB) and [`DEFAULT_WARN_MESSAGE_SIZE`] (1 MiB) protect
//! the smallest deployment we plan for: two worker processes of one thread in a 512 MB
//! container, each with the default 64 MiB fetch byte budget (the payload bytes a process
//! holds fetched). Decoding multiplies a payload's size: a JSON array of small numbers takes
//! a 32-byte `serde_json::Value` per 2 bytes of text (16×), before the actor's typed copy.
//! An 8 MiB message is thus at most about 128 MiB decoded: one such message per process
//! (a message over the byte budget is fetched alone) keeps two processes near 256 MiB,
//! leaving the rest of the container to the runtime and the actors. At the 512 MiB Redis
//! allows, one message could need 8 GiB. Raise the limit only with the memory to match.
//!
//! ```
//! use actor_runtime::limits::{PayloadLimits, DEFAULT_MAX_MESSAGE_SIZE};
//!
//! let limits = PayloadLimits::default();
//! assert_eq!(limits.max_size, DEFAULT_MAX_MESSAGE_SIZE);
//! assert!(limits.warn_size < limits.max_size);
//! assert_eq!(actor_runtime::limits::parse_size("16MiB"), Ok(16 << 20));
//! ```

use crate::error::{Error, Result};
use crate::message::{canonical_queue, Message};
use crate::truncate::truncate;

/// The default largest encoded message, in bytes: 8 MiB (see the [module docs](self)).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 8 << 20;

/// The default size past which a message is stored but logged as a warning: 1 MiB.
pub const DEFAULT_WARN_MESSAGE_SIZE: usize = 1 << 20;

/// The largest encoded message a broker stores and a worker decodes, and the size past which
/// enqueues log a warning.
///
/// ```
/// use actor_runtime::limits::PayloadLimits;
///
/// let limits = PayloadLimits::new(64 << 10, 16 << 10);
/// assert_eq!((limits.max_size, limits.warn_size), (65_536, 16_384));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Messages larger than this many bytes (encoded) are refused at enqueue and
    /// dead-lettered undecoded at the worker.
    pub max_size: usize,
    /// Messages larger than this many bytes are enqueued with a warning.
    pub warn_size: usize,
}

impl Default for PayloadLimits {
    fn default() -> PayloadLimits {
        PayloadLimits {
            max_size: DEFAULT_MAX_MESSAGE_SIZE,
            warn_size: DEFAULT_WARN_MESSAGE_SIZE,
        }
    }
}

impl PayloadLimits {
    /// A limit of `max_size` bytes, warning past `warn_size`.
    pub fn new(max_size: usize, warn_size: usize) -> PayloadLimits {
        PayloadLimits {
            max_size,
            warn_size,
        }
    }

    /// These limits with `max_size` as the maximum, the warning threshold lowered to it if
    /// it was higher.
    #[cfg(any(feature = "redis", feature = "rabbitmq"))]
    pub(crate) fn with_max(self, max_size: usize) -> PayloadLimits {
        PayloadLimits {
            max_size,
            warn_size: self.warn_size.min(max_size),
        }
    }

    /// Checks the settings: a limit of at least 1 KiB (a message's envelope alone is a few
    /// hundred bytes), a warning threshold at most the limit.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.max_size < 1024 {
            return Err(format!(
                "the maximum message size must be at least 1024 bytes, got {}",
                self.max_size
            ));
        }
        if self.warn_size > self.max_size {
            return Err(format!(
                "the message size warning threshold ({} bytes) is over the maximum message size ({} bytes)",
                self.warn_size, self.max_size
            ));
        }
        Ok(())
    }

    /// Checks `message`, encoded to `size` bytes, before it is stored: over the limit, an
    /// [`Error::MessageTooLarge`]; over the warning threshold, a warning.
    #[cfg_attr(not(any(feature = "redis", feature = "rabbitmq")), allow(dead_code))]
    pub(crate) fn check_enqueue(&self, message: &Message, size: usize) -> Result<()> {
        if size > self.max_size {
            return Err(Error::MessageTooLarge {
                queue: canonical_queue(&message.queue_name).to_owned(),
                message_id: message.message_id.clone(),
                actor: truncate(&message.actor_name).into_owned(),
                size,
                limit: self.max_size,
            });
        }
        if size > self.warn_size {
            tracing::warn!(
                message_id = %truncate(&message.message_id),
                actor = %truncate(&message.actor_name),
                queue = %canonical_queue(&message.queue_name),
                size,
                warn_size = self.warn_size,
                max_size = self.max_size,
                "large message enqueued: over the size warning threshold"
            );
        }
        Ok(())
    }
}

/// Reads a size in bytes: a whole number, optionally followed by a unit (`k`/`KiB` = 1024,
/// `M`/`MiB` = 1024², `G`/`GiB` = 1024³; `KB`, `MB` and `GB` are decimal), as the
/// `MAX_MESSAGE_SIZE` and `MESSAGE_SIZE_WARNING` variables are written.
///
/// ```
/// use actor_runtime::limits::parse_size;
///
/// assert_eq!(parse_size("1048576"), Ok(1 << 20));
/// assert_eq!(parse_size("512k"), Ok(512 << 10));
/// assert_eq!(parse_size("2 MB"), Ok(2_000_000));
/// assert!(parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write bytes, or a number with k, M or G"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{text}`: unknown size unit `{other}` (use k, M or G, or KB, MB or GB)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

/// Reads `MAX_MESSAGE_SIZE` and `MESSAGE_SIZE_WARNING` from `get` over the defaults, each
/// problem naming its variable.
#[cfg_attr(not(any(feature = "redis", feature = "rabbitmq")), allow(dead_code))]
pub(crate) fn from_lookup(
    get: impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> PayloadLimits {
    let mut limits = PayloadLimits::default();
    let mut read = |key: &str| {
        let raw = get(key)?;
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        match parse_size(raw) {
            Ok(n) => Some(n),
            Err(why) => {
                problems.push(format!("{key}: {why}"));
                None
            }
        }
    };
    let max = read("MAX_MESSAGE_SIZE");
    let warn = read("MESSAGE_SIZE_WARNING");
    if let Some(max) = max {
        limits.max_size = max;
        // A lower limit than the default warning threshold lowers the threshold with it.
        limits.warn_size = limits.warn_size.min(max);
    }
    if let Some(warn) = warn {
        limits.warn_size = warn;
    }
    if let Err(why) = limits.validate() {
        problems.push(format!("MAX_MESSAGE_SIZE / MESSAGE_SIZE_WARNING: {why}"));
    }
    limits
}

/// The reason a worker dead-letters a message over its limit, unread.
pub(crate) fn too_large_reason(size: usize, limit: usize) -> String {
    format!(
        "message too large: {size} bytes is over the worker's limit of {limit} bytes \
         (max_message_size); dead-lettered without decoding it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("3kb"), Ok(3000));
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn variables_override_defaults_and_inconsistent_ones_are_refused() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };
        let mut problems = Vec::new();
        let limits = from_lookup(env(&[("MAX_MESSAGE_SIZE", "64k")]), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(limits, PayloadLimits::new(64 << 10, 64 << 10));
        let limits = from_lookup(
            env(&[("MAX_MESSAGE_SIZE", "2M"), ("MESSAGE_SIZE_WARNING", "512k")]),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(limits, PayloadLimits::new(2 << 20, 512 << 10));
        from_lookup(
            env(&[("MAX_MESSAGE_SIZE", "1M"), ("MESSAGE_SIZE_WARNING", "2M")]),
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("over the maximum"), "{problems:?}");
        problems.clear();
        from_lookup(env(&[("MAX_MESSAGE_SIZE", "huge")]), &mut problems);
        assert!(problems[0].starts_with("MAX_MESSAGE_SIZE:"), "{problems:?}");
    }

    #[test]
    fn an_oversized_message_is_refused_naming_size_and_limit() {
        let limits = PayloadLimits::new(2048, 1024);
        let message = Message::new("uploads", "store", vec![]);
        assert!(limits.check_enqueue(&message, 2048).is_ok());
        let err = limits.check_enqueue(&message, 2049).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("2049 bytes") && text.contains("2048"),
            "{text}"
        );
        assert!(text.contains("uploads") && text.contains("store"), "{text}");
    }
}
