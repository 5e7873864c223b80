//! Dead letters (`q.XQ`, listed and moved with `basic.get`), queue counts, flushes and
//! joins.
//!
//! Dead letters are read with `basic.get` on a channel of their own and left unacked; the
//! ones to keep go back to `q.XQ` when that channel closes. RabbitMQ keeps no reason on a
//! dead letter beyond its `x-death` header (`rejected`, `expired`): the actor's error is in
//! the worker's log.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::AMQPValue;
use lapin::Channel;
use tokio::time::Instant;

use super::declare::{dq, message_count, xq};
use super::publish::{properties, publish, Failed};
use super::{RabbitmqBackend, Shared};
use crate::broker::{DeadLetter, DeadLetters, QueueStats};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, Message};

pub(super) async fn stats(shared: &Shared, queue: &str) -> Result<QueueStats> {
    Ok(QueueStats {
        ready: message_count(shared, queue).await?,
        delayed: message_count(shared, &dq(queue)).await?
            + shared.held(queue).load(Ordering::Acquire),
        in_flight: shared.in_flight(queue).load(Ordering::Acquire),
        dead: message_count(shared, &xq(queue)).await?,
    })
}

pub(super) async fn flush(shared: &Shared, queue: &str) -> Result<()> {
    for name in [queue.to_owned(), dq(queue), xq(queue)] {
        purge(shared, &name).await?;
    }
    Ok(())
}

/// Purges `name` on a channel of its own; a missing queue has nothing to purge.
async fn purge(shared: &Shared, name: &str) -> Result<u64> {
    let (channel, _) = shared.conn.channel().await?;
    match channel
        .queue_purge(name.into(), QueuePurgeOptions::default())
        .await
    {
        Ok(count) => {
            let _ = channel.close(200, "purged".into()).await;
            Ok(u64::from(count))
        }
        Err(err) if err.is_amqp_soft_error() => Ok(0),
        Err(err) => Err(shared.conn.error(&format!("purging `{name}`"), err)),
    }
}

/// Waits until `queue` and its delay queue have no ready messages and this process holds
/// none of theirs (messages other processes hold unacked are not visible over AMQP; like
/// Dramatiq's, this join sees only the counts).
pub(super) async fn join(
    shared: &Shared,
    queue: &str,
    timeout: Option<Duration>,
    fail_fast: bool,
) -> Result<()> {
    let started = Instant::now();
    let dead_before = if fail_fast {
        message_count(shared, &xq(queue)).await?
    } else {
        0
    };
    let mut quiet = 0;
    loop {
        let stats = stats(shared, queue).await?;
        if fail_fast && stats.dead > dead_before {
            return Err(Error::DeadLettered {
                queue: queue.to_owned(),
                message_id: "unknown".into(),
                actor: "unknown".into(),
                reason: format!("a message was dead-lettered to {}", xq(queue)),
            });
        }
        if stats.ready == 0 && stats.delayed == 0 && stats.in_flight == 0 {
            quiet += 1;
            if quiet >= 2 {
                return Ok(());
            }
        } else {
            quiet = 0;
        }
        if let Some(timeout) = timeout {
            if started.elapsed() >= timeout {
                return Err(Error::JoinTimeout {
                    queue: queue.to_owned(),
                    timeout,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Up to `limit` dead letters of `queue`, fetched unacked on `channel`.
async fn get_dead(
    shared: &Shared,
    channel: &Channel,
    queue: &str,
    limit: usize,
) -> Result<Vec<BasicGetMessage>> {
    let name = xq(queue);
    let mut got = Vec::new();
    while got.len() < limit {
        match channel
            .basic_get(name.as_str().into(), BasicGetOptions { no_ack: false })
            .await
        {
            Ok(Some(message)) => got.push(message),
            Ok(None) => break,
            Err(err) if err.is_amqp_soft_error() => break,
            Err(err) => return Err(shared.conn.error(&format!("reading `{name}`"), err)),
        }
    }
    Ok(got)
}

fn dead_letter(message: &BasicGetMessage) -> DeadLetter {
    let delivery = &message.delivery;
    let decoded = Message::decode(&delivery.data).map_err(|err| err.to_string());
    let id = match &decoded {
        Ok(message) => message.message_id.clone(),
        Err(_) => format!("delivery-{}", delivery.delivery_tag),
    };
    let (mut dead_at, mut reason) = (0, None);
    let death = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-death").cloned());
    if let Some(AMQPValue::FieldArray(deaths)) = death {
        if let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() {
            if let Some(AMQPValue::Timestamp(at)) = first.inner().get("time") {
                dead_at = at.saturating_mul(1000);
            }
            if let Some(AMQPValue::LongString(why)) = first.inner().get("reason") {
                reason = Some(why.to_string());
            }
        }
    }
    DeadLetter {
        id,
        message: decoded,
        dead_at,
        reason,
    }
}

/// Runs `body` on a channel of its own, closed afterwards (returning what was not acked).
async fn on_channel<T, F, Fut>(shared: &Shared, body: F) -> Result<T>
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let (channel, _) = shared.conn.channel().await?;
    let result = body(channel.clone()).await;
    let _ = channel.close(200, "done".into()).await;
    result
}

fn wanted(ids: Option<&[String]>) -> impl Fn(&DeadLetter) -> bool + '_ {
    let set: Option<HashSet<&str>> = ids.map(|ids| ids.iter().map(String::as_str).collect());
    move |letter| {
        set.as_ref()
            .is_none_or(|set| set.contains(letter.id.as_str()))
    }
}

#[async_trait]
impl DeadLetters for RabbitmqBackend {
    async fn list(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let shared = &self.shared;
        on_channel(shared, |channel| async move {
            let got = get_dead(shared, &channel, queue, limit).await?;
            Ok(got.iter().map(dead_letter).collect())
        })
        .await
    }

    async fn requeue(&self, queue: &str, ids: Option<&[String]>) -> Result<usize> {
        let shared = &self.shared;
        shared.declare(queue).await?;
        let total = message_count(shared, &xq(queue)).await? as usize;
        on_channel(shared, |channel| async move {
            let got = get_dead(shared, &channel, queue, total).await?;
            let wanted = wanted(ids);
            let mut moving = Vec::new();
            let mut batch = Vec::new();
            for message in &got {
                let letter = dead_letter(message);
                if !wanted(&letter) {
                    continue;
                }
                let Ok(mut decoded) = letter.message else {
                    continue;
                };
                decoded = decoded.undelayed();
                decoded.queue_name = canonical_queue(&decoded.queue_name).to_owned();
                batch.push((queue.to_owned(), decoded.encode(), properties(&decoded)));
                moving.push(message.delivery.delivery_tag);
            }
            match publish(shared, &batch).await {
                Ok(()) => {}
                Err(Failed::Lost(err)) | Err(Failed::Refused(err)) => return Err(err),
                Err(Failed::Unroutable(queue)) => return Err(Error::QueueNotFound(queue)),
            }
            for tag in &moving {
                channel
                    .basic_ack(*tag, BasicAckOptions::default())
                    .await
                    .map_err(|err| shared.conn.error("acking a requeued dead letter", err))?;
            }
            Ok(moving.len())
        })
        .await
    }

    async fn delete(&self, queue: &str, ids: Option<&[String]>) -> Result<usize> {
        let shared = &self.shared;
        if ids.is_none() {
            return Ok(purge(shared, &xq(queue)).await? as usize);
        }
        let total = message_count(shared, &xq(queue)).await? as usize;
        on_channel(shared, |channel| async move {
            let got = get_dead(shared, &channel, queue, total).await?;
            let wanted = wanted(ids);
            let mut deleted = 0;
            for message in &got {
                if wanted(&dead_letter(message)) {
                    channel
                        .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .map_err(|err| shared.conn.error("deleting a dead letter", err))?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }
}
