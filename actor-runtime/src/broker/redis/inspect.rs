//! The Redis backend's [`Inspect`] and [`Pause`]: pages of a queue read with `LRANGE`,
//! `ZRANGE` or `HSCAN` plus `HMGET` (never the whole queue), the paused queues in
//! `{ns}:__paused__`, and the workers' per-minute activity in `{ns}:__activity__.{minute}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::checked_queue;
use super::conn::evalsha;
use super::scripts::DELETE_LISTED;
use super::{RedisBackend, Shared};
use crate::broker::{
    minute_of, offset_cursor, ActivityMinute, Inspect, ListedMessage, MessagePage, MessageState,
    Pause,
};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, is_valid_queue_name, now_ms, Message};

/// How often a consumer reads its queue's pause flag, at most.
pub(crate) const PAUSE_CHECK: Duration = Duration::from_secs(1);

/// How long the per-minute activity hashes are kept.
const ACTIVITY_TTL_MS: u64 = 2 * 3_600_000;

/// A queue's pause flag as this process last read it, and when.
#[derive(Debug, Default)]
pub(crate) struct PauseFlag {
    paused: AtomicBool,
    checked: Mutex<Option<Instant>>,
}

impl PauseFlag {
    /// The flag as last read, without I/O.
    pub(crate) fn cached(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// When the flag is next due to be read.
    pub(crate) fn next_check(&self) -> Instant {
        let checked = *self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.map_or_else(Instant::now, |at| at + PAUSE_CHECK)
    }

    /// Whether `queue` is paused: the cached flag, read again from Redis (one `SISMEMBER`)
    /// when it is older than [`PAUSE_CHECK`]. A failed read keeps the previous value.
    pub(crate) async fn check(&self, shared: &Shared, queue: &str) -> bool {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.is_some_and(|at| at.elapsed() < PAUSE_CHECK) {
                return self.cached();
            }
            *checked = Some(Instant::now());
        }
        let mut cmd = redis::cmd("SISMEMBER");
        cmd.arg(shared.keys.paused()).arg(queue);
        match shared.conn.query::<bool>("read the pause flag", &cmd).await {
            Ok(paused) => {
                if paused != self.cached() {
                    tracing::info!(
                        queue,
                        paused,
                        "queue {}",
                        if paused {
                            "paused by an operator: fetching stops"
                        } else {
                            "resumed"
                        }
                    );
                }
                self.paused.store(paused, Ordering::Release);
            }
            Err(err) => tracing::debug!(queue, error = %err, "could not read the pause flag"),
        }
        self.cached()
    }
}

fn decode(payload: Option<Vec<u8>>) -> std::result::Result<Message, String> {
    match payload {
        Some(bytes) => Message::decode(&bytes).map_err(|e| e.to_string()),
        None => Err("the payload is gone (fetched or deleted meanwhile)".into()),
    }
}

#[async_trait]
impl Inspect for RedisBackend {
    async fn messages(
        &self,
        queue: &str,
        state: MessageState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MessagePage> {
        let shared = &self.shared;
        let keys = shared.keys.queue(checked_queue(queue)?, &shared.worker_id);
        let limit = limit.max(1);
        match state {
            MessageState::Ready | MessageState::Dead => {
                let offset = offset_cursor(cursor)?;
                // One more than the page says whether another follows.
                let (stop, ids, scores): (usize, Vec<String>, Vec<f64>) =
                    if state == MessageState::Ready {
                        let mut cmd = redis::cmd("LRANGE");
                        cmd.arg(&keys.list).arg(offset).arg(offset + limit);
                        let ids: Vec<String> = shared.conn.query("list messages", &cmd).await?;
                        (offset + limit, ids, Vec::new())
                    } else {
                        let mut cmd = redis::cmd("ZRANGE");
                        cmd.arg(&keys.xq)
                            .arg(offset)
                            .arg(offset + limit)
                            .arg("WITHSCORES");
                        let entries: Vec<(String, f64)> =
                            shared.conn.query("list dead letters", &cmd).await?;
                        let (ids, scores) = entries.into_iter().unzip();
                        (offset + limit, ids, scores)
                    };
                let more = ids.len() > limit;
                let ids = &ids[..ids.len().min(limit)];
                if ids.is_empty() {
                    return Ok(MessagePage::default());
                }
                let dead = state == MessageState::Dead;
                let (payloads, reasons): (Vec<Option<Vec<u8>>>, Vec<Option<String>>) = if dead {
                    let mut pipe = redis::pipe();
                    pipe.cmd("HMGET").arg(&keys.xq_msgs).arg(ids);
                    pipe.cmd("HMGET").arg(&keys.xq_reasons).arg(ids);
                    shared.conn.pipe("list dead letters", &pipe).await?
                } else {
                    let mut cmd = redis::cmd("HMGET");
                    cmd.arg(&keys.msgs).arg(ids);
                    let payloads: Vec<Option<Vec<u8>>> =
                        shared.conn.query("list messages", &cmd).await?;
                    let none = vec![None; payloads.len()];
                    (payloads, none)
                };
                let items = ids
                    .iter()
                    .zip(payloads)
                    .zip(reasons)
                    .enumerate()
                    .map(|(i, ((id, payload), reason))| ListedMessage {
                        id: id.clone(),
                        message: decode(payload),
                        due_at: None,
                        dead_at: dead.then(|| scores.get(i).copied().unwrap_or(0.0) as u64),
                        reason: reason.filter(|_| dead),
                    })
                    .collect();
                Ok(MessagePage {
                    items,
                    next: more.then(|| stop.to_string()),
                })
            }
            MessageState::Delayed => {
                let cursor = match cursor {
                    None | Some("") => 0u64,
                    Some(text) => text.parse().map_err(|_| {
                        Error::InvalidArgument(format!(
                            "`{text}` is not a page cursor of this queue"
                        ))
                    })?,
                };
                let mut cmd = redis::cmd("HSCAN");
                cmd.arg(&keys.dq_msgs).arg(cursor).arg("COUNT").arg(limit);
                let (next, pairs): (u64, Vec<(String, Vec<u8>)>) =
                    shared.conn.query("list delayed messages", &cmd).await?;
                let items = pairs
                    .into_iter()
                    .map(|(id, payload)| {
                        let message = decode(Some(payload));
                        let due_at = message.as_ref().ok().and_then(Message::eta);
                        ListedMessage {
                            id,
                            message,
                            due_at,
                            dead_at: None,
                            reason: None,
                        }
                    })
                    .collect();
                Ok(MessagePage {
                    items,
                    next: (next != 0).then(|| next.to_string()),
                })
            }
        }
    }

    async fn queue_names(&self) -> Result<Vec<String>> {
        let shared = &self.shared;
        let mut names: std::collections::BTreeSet<String> =
            crate::broker::Backend::queues(self).into_iter().collect();
        // Queue keys, not message keys: payloads live in one hash per queue, so this scans
        // a few keys per queue however long the queues are.
        let prefix = format!("{}:", shared.keys.namespace());
        for pattern in [
            shared.keys.msgs_pattern(),
            shared.keys.dead_letter_pattern(),
        ] {
            for key in super::maintenance::scan(shared, &pattern).await? {
                let Some(rest) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let name = rest
                    .strip_suffix(".msgs")
                    .or_else(|| rest.strip_suffix(".XQ"))
                    .unwrap_or(rest);
                let name = canonical_queue(name);
                if is_valid_queue_name(name) && !name.starts_with("__") {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    async fn delete(&self, queue: &str, state: MessageState, ids: &[String]) -> Result<usize> {
        let shared = &self.shared;
        let keys = shared.keys.queue(checked_queue(queue)?, &shared.worker_id);
        if ids.is_empty() {
            return Ok(0);
        }
        if state == MessageState::Dead {
            return super::admin::delete_dead_letters(shared, canonical_queue(queue), ids).await;
        }
        let (list, msgs, unlisted) = match state {
            MessageState::Ready => (&keys.list, &keys.msgs, "0"),
            _ => (&keys.dq_list, &keys.dq_msgs, "1"),
        };
        let mut deleted = 0;
        for chunk in ids.chunks(500) {
            let mut cmd = evalsha(&DELETE_LISTED, &[list, msgs]);
            cmd.arg(unlisted).arg(chunk);
            let n: usize = shared
                .conn
                .eval("delete messages", &DELETE_LISTED, &cmd)
                .await?;
            deleted += n;
        }
        Ok(deleted)
    }

    async fn activity(&self, since_ms: u64) -> Result<Vec<ActivityMinute>> {
        let shared = &self.shared;
        let now = minute_of(now_ms());
        let first = minute_of(since_ms).max(now.saturating_sub(ACTIVITY_TTL_MS));
        let minutes: Vec<u64> = (first..=now).step_by(60_000).collect();
        let mut pipe = redis::pipe();
        for minute in &minutes {
            pipe.cmd("HMGET")
                .arg(shared.keys.activity(*minute))
                .arg("processed")
                .arg("failed");
        }
        let counts: Vec<(Option<u64>, Option<u64>)> =
            shared.conn.pipe("read activity", &pipe).await?;
        Ok(minutes
            .into_iter()
            .zip(counts)
            .map(|(minute_ms, (processed, failed))| ActivityMinute {
                minute_ms,
                processed: processed.unwrap_or(0),
                failed: failed.unwrap_or(0),
            })
            .collect())
    }
}

#[async_trait]
impl Pause for RedisBackend {
    async fn paused(&self) -> Result<Vec<String>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.shared.keys.paused());
        let mut names: Vec<String> = self.shared.conn.query("read paused queues", &cmd).await?;
        names.sort();
        Ok(names)
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let queue = checked_queue(queue)?;
        let mut cmd = redis::cmd(if paused { "SADD" } else { "SREM" });
        cmd.arg(self.shared.keys.paused()).arg(queue);
        let _: u64 = self.shared.conn.query("pause a queue", &cmd).await?;
        Ok(())
    }
}

/// Adds what this process's workers counted since the last beat to the current minute's
/// activity hash (with the heartbeat, on its connection); on failure the counts are kept
/// for the next beat.
pub(crate) async fn report_activity(shared: &Shared, conn: &mut redis::aio::ConnectionManager) {
    let (processed, failed) = shared.activity.take();
    if processed == 0 {
        return;
    }
    let key = shared.keys.activity(minute_of(now_ms()));
    let mut pipe = redis::pipe();
    pipe.cmd("HINCRBY")
        .arg(&key)
        .arg("processed")
        .arg(processed)
        .ignore()
        .cmd("HINCRBY")
        .arg(&key)
        .arg("failed")
        .arg(failed)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(ACTIVITY_TTL_MS)
        .ignore();
    if let Err(err) = pipe.query_async::<()>(conn).await {
        tracing::debug!(error = %err, "could not report activity; kept for the next heartbeat");
        shared.activity.restore(processed, failed);
    }
}
