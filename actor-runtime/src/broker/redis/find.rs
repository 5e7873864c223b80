//! Finding a message by its `message_id` (for cancellation): where it is in this namespace,
//! waiting, delayed, held by a worker or dead-lettered. An operator's lookup, not a hot path:
//! it SCANs for the payload hashes, then searches each in pages inside Redis
//! (`cancel/lua/find.lua`), so only matching payloads travel.

use std::sync::LazyLock;

use redis::Script;

use super::conn::evalsha;
use super::keys::glob_escape;
use super::RedisBackend;
use crate::error::Result;
use crate::message::Message;

static FIND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../cancel/lua/find.lua")));

/// Fields per HSCAN page of the search: bounds how long one script call holds the server.
const PAGE: usize = 1000;

/// Where a message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In its queue's list, waiting to be fetched.
    Waiting,
    /// Fetched by a worker and not acked: prefetched or running.
    Held,
    /// In the delay queue (or claimed by a worker until due), due at the eta.
    Delayed(Option<u64>),
    /// Dead-lettered.
    Dead,
}

/// A message found by id: its canonical queue and place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) queue: String,
    pub(crate) place: Place,
}

impl RedisBackend {
    /// Where the message with `message_id` is, if anywhere in this namespace: the liveliest
    /// copy (waiting, then held, then delayed) wins over a dead-lettered one.
    pub(crate) async fn find_message(&self, message_id: &str) -> Result<Option<Found>> {
        let shared = &self.shared;
        let ns = shared.keys.namespace();
        let prefix = format!("{ns}:");
        let pattern = format!("{}:*.msgs", glob_escape(ns));
        let mut hashes = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(PAGE);
            let (next, keys): (u64, Vec<String>) = shared.conn.query("find scan", &scan).await?;
            hashes.extend(keys);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        hashes.sort();
        hashes.dedup();
        let needle = format!("\"message_id\":{}", serde_json::Value::from(message_id));
        let mut best: Option<(u8, Found)> = None;
        for hash in hashes {
            let Some(name) = hash
                .strip_prefix(&prefix)
                .and_then(|h| h.strip_suffix(".msgs"))
                // The runtime's own keys (`__unique__.<key>`...) may end in `.msgs` too.
                .filter(|name| !name.starts_with("__"))
            else {
                continue;
            };
            for (field, payload) in search(self, &hash, &needle).await? {
                let Ok(message) = Message::decode(&payload) else {
                    continue;
                };
                if message.message_id != message_id {
                    continue;
                }
                let found = if let Some(queue) = name.strip_suffix(".XQ") {
                    Found {
                        queue: queue.to_owned(),
                        place: Place::Dead,
                    }
                } else if let Some(queue) = name.strip_suffix(".DQ") {
                    Found {
                        queue: queue.to_owned(),
                        place: Place::Delayed(message.eta()),
                    }
                } else {
                    let mut lpos = redis::cmd("LPOS");
                    lpos.arg(shared.keys.list(name)).arg(&field);
                    let at: Option<i64> = shared.conn.query("find position", &lpos).await?;
                    Found {
                        queue: name.to_owned(),
                        place: if at.is_some() {
                            Place::Waiting
                        } else {
                            Place::Held
                        },
                    }
                };
                let rank = match found.place {
                    Place::Waiting => 0,
                    Place::Held => 1,
                    Place::Delayed(_) => 2,
                    Place::Dead => 3,
                };
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((rank, found));
                }
            }
        }
        Ok(best.map(|(_, found)| found))
    }
}

/// The (field, payload) pairs of `hash` whose payload contains `needle`.
async fn search(
    backend: &RedisBackend,
    hash: &str,
    needle: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut matches = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let mut cmd = evalsha(&FIND, &[hash]);
        cmd.arg(&cursor).arg(needle).arg(PAGE);
        let (next, found): (String, Vec<Vec<u8>>) =
            backend.shared.conn.eval("find", &FIND, &cmd).await?;
        let mut it = found.into_iter();
        while let (Some(field), Some(payload)) = (it.next(), it.next()) {
            matches.push((String::from_utf8_lossy(&field).into_owned(), payload));
        }
        if next == "0" {
            return Ok(matches);
        }
        cursor = next;
    }
}
