//! The stub backend's [`Inspect`] and [`Pause`]: offset pages over its in-memory queues.

use async_trait::async_trait;

use super::{Inner, StubBackend};
use crate::broker::{
    minute_of, offset_cursor, ActivityMinute, Inspect, ListedMessage, MessagePage, MessageState,
    Pause,
};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, is_valid_queue_name, now_ms, Message};

/// The page of `items` from `offset`, with the next offset if more follow.
fn page(items: Vec<ListedMessage>, offset: usize, limit: usize, total: usize) -> MessagePage {
    let next = (offset + limit < total).then(|| (offset + limit).to_string());
    MessagePage { items, next }
}

#[async_trait]
impl Inspect for StubBackend {
    async fn messages(
        &self,
        queue: &str,
        state: MessageState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MessagePage> {
        let offset = offset_cursor(cursor)?;
        let mut all = self.inner.lock();
        let q = Inner::queue(&mut all, queue)?;
        Ok(match state {
            MessageState::Ready => {
                let items = q
                    .ready
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|(id, bytes)| ListedMessage {
                        id: id.clone(),
                        message: Message::decode(bytes).map_err(|e| e.to_string()),
                        due_at: None,
                        dead_at: None,
                        reason: None,
                    })
                    .collect();
                page(items, offset, limit, q.ready.len())
            }
            MessageState::Delayed => {
                let items = q
                    .delayed
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|((eta, _), (id, message))| ListedMessage {
                        id: id.clone(),
                        message: Ok(message.clone()),
                        due_at: Some(*eta),
                        dead_at: None,
                        reason: None,
                    })
                    .collect();
                page(items, offset, limit, q.delayed.len())
            }
            MessageState::Dead => {
                let items = q
                    .dead
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|d| ListedMessage {
                        id: d.id.clone(),
                        message: Message::decode(&d.bytes).map_err(|e| e.to_string()),
                        due_at: None,
                        dead_at: Some(d.dead_at),
                        reason: Some(d.reason.clone()),
                    })
                    .collect();
                page(items, offset, limit, q.dead.len())
            }
        })
    }

    async fn queue_names(&self) -> Result<Vec<String>> {
        Ok(crate::broker::Backend::queues(self))
    }

    async fn delete(&self, queue: &str, state: MessageState, ids: &[String]) -> Result<usize> {
        let mut all = self.inner.lock();
        let q = Inner::queue(&mut all, queue)?;
        let wanted = |id: &String| ids.contains(id);
        Ok(match state {
            MessageState::Ready => {
                let before = q.ready.len();
                q.ready.retain(|(id, _)| !wanted(id));
                before - q.ready.len()
            }
            MessageState::Delayed => {
                let before = q.delayed.len();
                q.delayed.retain(|_, (id, _)| !wanted(id));
                before - q.delayed.len()
            }
            MessageState::Dead => {
                let before = q.dead.len();
                q.dead.retain(|d| !wanted(&d.id));
                before - q.dead.len()
            }
        })
    }

    async fn activity(&self, since_ms: u64) -> Result<Vec<ActivityMinute>> {
        // No heartbeat here: what the workers counted lands in the minute it is read in.
        let (processed, failed) = self.inner.activity.take();
        let mut minutes = self.inner.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if processed > 0 {
            let slot = minutes.entry(minute_of(now_ms())).or_default();
            slot.0 += processed;
            slot.1 += failed;
        }
        let keep_after = minute_of(now_ms()).saturating_sub(2 * 3_600_000);
        minutes.retain(|minute, _| *minute >= keep_after);
        Ok(minutes
            .range(minute_of(since_ms)..)
            .map(|(minute, (processed, failed))| ActivityMinute {
                minute_ms: *minute,
                processed: *processed,
                failed: *failed,
            })
            .collect())
    }
}

#[async_trait]
impl Pause for StubBackend {
    async fn paused(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .inner
            .lock()
            .iter()
            .filter(|(_, q)| q.paused)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let name = canonical_queue(queue);
        if !is_valid_queue_name(name) {
            return Err(Error::InvalidQueueName(queue.to_owned()));
        }
        let mut all = self.inner.lock();
        let q = all.entry(name.to_owned()).or_default();
        q.paused = paused;
        if !paused {
            q.wake.wake();
        }
        Ok(())
    }
}
