//! Unique jobs: at most one message with a given key waits or runs at a time.
//!
//! A message carries its key in the `unique_key` option, from the actor's `unique_key`
//! function of its arguments (`#[actor(unique_key = ...)]`) or given at send time
//! ([`MessageBuilder::unique_key`](crate::MessageBuilder::unique_key)). Sending it claims
//! the key and stores the message in one atomic step (on Redis, one script call); while the
//! key is held, a send with the same key stores nothing and returns the holder's id instead
//! ([`Enqueued::is_duplicate`](crate::Enqueued::is_duplicate)).
//!
//! The key is released when its message finishes for good (it succeeds, is skipped, or is
//! dead-lettered), by the [`UniqueJobs`] middleware of the worker's default stack; a retry
//! keeps it (and renews its bound). Whatever happens to the worker, the key expires after
//! `unique_ttl` (the option, `#[actor(unique_ttl = "10m")]`, default
//! [`DEFAULT_UNIQUE_TTL`]), so a crash cannot lock it forever: pick a bound longer than
//! the message usually waits plus runs.
//!
//! ```
//! use actor_runtime::{actor, Broker};
//!
//! /// The mail provider may deliver one inbound email twice: only one runs.
//! #[actor(unique_key = email_key, unique_ttl = "10m")]
//! async fn process_email(email_id: String, body: String) {
//!     println!("processing {email_id}");
//! }
//!
//! fn email_key(email_id: &String, _body: &String) -> String {
//!     format!("email:{email_id}")
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let broker = Broker::stub();
//! let first = process_email::message("m-1".into(), "hi".into()).broker(broker.clone()).send().await.unwrap();
//! let again = process_email::message("m-1".into(), "hi".into()).broker(broker.clone()).send().await.unwrap();
//! assert!(!first.is_duplicate());
//! assert!(again.is_duplicate());
//! assert_eq!(again.message_id, first.message_id);
//! assert_eq!(broker.stats("default").await.unwrap().ready, 1);
//! # });
//! ```
//!
//! Brokers: Redis and the stub keep the keys; RabbitMQ has no store to claim a key in
//! atomically with the publish, so sending a message with a `unique_key` through it fails
//! with [`Error::Unsupported`](crate::Error::Unsupported) rather than enqueueing duplicates silently. Python Dramatiq
//! workers ignore the option: a message they run holds its key until the bound.

pub use crate::broker::{
    Claim, Sent, Unique, UniqueKeys, DEFAULT_UNIQUE_TTL, MAX_UNIQUE_KEY_LEN, MAX_UNIQUE_TTL,
    UNIQUE_KEY, UNIQUE_TTL,
};
pub use crate::middleware::UniqueJobs;
