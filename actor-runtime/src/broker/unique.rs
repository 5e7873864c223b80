//! The broker's side of unique jobs (see [`unique`](crate::unique)): the options, the claim a
//! message makes, the backend capability that claims a key atomically with storing a message,
//! and what a send did.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::message::Message;

/// The message option holding the uniqueness key (a non-empty string).
pub const UNIQUE_KEY: &str = "unique_key";
/// The message option holding the key's bound in ms (a positive integer).
pub const UNIQUE_TTL: &str = "unique_ttl";
/// How long a key is held at most, unless the message or actor says otherwise: one hour.
pub const DEFAULT_UNIQUE_TTL: Duration = Duration::from_secs(3600);
/// The longest bound accepted: 30 days.
pub const MAX_UNIQUE_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The longest key accepted, in bytes.
pub const MAX_UNIQUE_KEY_LEN: usize = 1024;

/// A message's uniqueness claim, read from its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unique {
    /// The key.
    pub key: String,
    /// How long it is held at most.
    pub ttl: Duration,
}

impl Unique {
    /// The claim `message` makes: `None` without a `unique_key` option, an
    /// [`Error::InvalidOption`] when its options are not a usable claim.
    ///
    /// ```
    /// use actor_runtime::unique::Unique;
    /// use actor_runtime::Message;
    ///
    /// let mut message = Message::new("default", "f", vec![]);
    /// assert_eq!(Unique::of(&message).unwrap(), None);
    /// message.options.insert("unique_key".into(), "k".into());
    /// message.options.insert("unique_ttl".into(), 5000.into());
    /// assert_eq!(Unique::of(&message).unwrap().unwrap().ttl.as_millis(), 5000);
    /// message.options.insert("unique_key".into(), 7.into());
    /// assert!(Unique::of(&message).is_err());
    /// ```
    pub fn of(message: &Message) -> Result<Option<Unique>> {
        let Some(key) = message.options.get(UNIQUE_KEY) else {
            return Ok(None);
        };
        let invalid = |reason: String| Error::InvalidOption {
            option: UNIQUE_KEY,
            message_id: message.message_id.clone(),
            reason,
        };
        let key = match key.as_str() {
            Some("") => return Err(invalid("the key is empty".into())),
            Some(key) if key.len() > MAX_UNIQUE_KEY_LEN => {
                return Err(invalid(format!(
                    "the key is {} bytes long, more than {MAX_UNIQUE_KEY_LEN}",
                    key.len()
                )))
            }
            Some(key) => key.to_owned(),
            None => return Err(invalid(format!("expected a string, got `{key}`"))),
        };
        let ttl = match message.options.get(UNIQUE_TTL) {
            None => DEFAULT_UNIQUE_TTL,
            Some(value) => match value.as_u64() {
                Some(ms) if ms > 0 && ms <= MAX_UNIQUE_TTL.as_millis() as u64 => {
                    Duration::from_millis(ms)
                }
                _ => {
                    return Err(Error::InvalidOption {
                        option: UNIQUE_TTL,
                        message_id: message.message_id.clone(),
                        reason: format!(
                            "expected milliseconds from 1 to {}, got `{value}`",
                            MAX_UNIQUE_TTL.as_millis()
                        ),
                    })
                }
            },
        };
        Ok(Some(Unique { key, ttl }))
    }
}

/// What sending a message with a uniqueness key did.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// The key was free (or already this message's): the message is stored, as returned.
    Stored(Message),
    /// Another message holds the key: nothing was stored.
    Held {
        /// The id of the message holding the key.
        holder: String,
    },
}

/// A backend that can claim a uniqueness key atomically with storing a message
/// ([`Backend::unique_keys`](crate::broker::Backend::unique_keys)).
#[async_trait]
pub trait UniqueKeys: Send + Sync {
    /// Stores `message` (ready to store: its queue, or its delay queue with an `eta`) if
    /// `unique.key` is free or held by this message's id, claiming the key for `unique.ttl`;
    /// otherwise stores nothing and names the holder. With `renew` (a retry of the holder)
    /// the message is stored whoever holds the key, and the key is claimed again if free or
    /// its own.
    async fn enqueue_unique(&self, message: Message, unique: &Unique, renew: bool)
        -> Result<Claim>;

    /// Releases `key` if `message_id` still holds it; whether it did.
    async fn release(&self, key: &str, message_id: &str) -> Result<bool>;

    /// The id of the message holding `key`, if any.
    async fn holder(&self, key: &str) -> Result<Option<String>>;
}

/// What [`Broker::send_message`](crate::Broker::send_message) did with a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// The message as stored; for a duplicate, the message as given with the holder's id.
    pub message: Message,
    /// Whether another message held its uniqueness key, so nothing was stored.
    pub duplicate: bool,
}
