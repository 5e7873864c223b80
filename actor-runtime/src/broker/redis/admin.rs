//! Operator and test operations: queue counts, join, dead letters, flush.

use std::time::Duration;

use tokio::time::Instant;

use super::conn::evalsha;
use super::delayed::promoted;
use super::scripts::REQUEUE_DEAD;
use super::{maintenance, Shared};
use crate::broker::{deadline_after, DeadLetter, QueueStats, WorkerInfo};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, now_ms, Message};

/// Counts by state: ready = `LLEN q`, delayed = `HLEN q.DQ.msgs`, in flight = payloads of
/// `q` not in its list (fetched by any worker, not yet acked), dead = `ZCARD q.XQ`.
pub(crate) async fn stats(shared: &Shared, queue: &str) -> Result<QueueStats> {
    let keys = shared.keys.queue(queue, &shared.worker_id);
    let mut pipe = redis::pipe();
    pipe.cmd("LLEN").arg(&keys.list);
    pipe.cmd("HLEN").arg(&keys.dq_msgs);
    pipe.cmd("HLEN").arg(&keys.msgs);
    pipe.cmd("ZCARD").arg(&keys.xq);
    let (ready, delayed, stored, dead): (u64, u64, u64, u64) =
        shared.conn.pipe("stats", &pipe).await?;
    Ok(QueueStats {
        ready,
        delayed,
        in_flight: stored.saturating_sub(ready),
        dead,
    })
}

/// Waits until no payload of `queue` or its delay queue is left (whoever fetched them).
pub(crate) async fn join(
    shared: &Shared,
    queue: &str,
    timeout: Option<Duration>,
    fail_fast: bool,
) -> Result<()> {
    let keys = shared.keys.queue(queue, &shared.worker_id);
    let deadline = timeout.map(deadline_after);
    let mut poll = Duration::from_millis(2);
    loop {
        let mut pipe = redis::pipe();
        pipe.cmd("HLEN").arg(&keys.msgs);
        pipe.cmd("HLEN").arg(&keys.dq_msgs);
        pipe.cmd("ZCARD").arg(&keys.xq);
        let (stored, delayed, dead): (u64, u64, u64) = shared.conn.pipe("join", &pipe).await?;
        if fail_fast && dead > 0 {
            if let Some(letter) = dead_letters(shared, queue, 1).await?.into_iter().next() {
                let (message_id, actor, fallback) = match &letter.message {
                    Ok(m) => (
                        m.message_id.clone(),
                        m.actor_name.clone(),
                        m.options
                            .get("traceback")
                            .and_then(|t| t.as_str())
                            .map(str::to_owned),
                    ),
                    Err(_) => (letter.id.clone(), String::new(), None),
                };
                return Err(Error::DeadLettered {
                    queue: queue.to_owned(),
                    message_id,
                    actor,
                    reason: letter
                        .reason
                        .or(fallback)
                        .unwrap_or_else(|| "no reason recorded".into()),
                });
            }
        }
        if stored + delayed == 0 {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::JoinTimeout {
                queue: queue.to_owned(),
                timeout: timeout.unwrap_or_default(),
            });
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(Duration::from_millis(20));
    }
}

/// The oldest `limit` dead letters of `queue`, with the reason when one of our workers
/// recorded it.
pub(crate) async fn dead_letters(
    shared: &Shared,
    queue: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let keys = shared.keys.queue(queue, &shared.worker_id);
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(&keys.xq).arg(0).arg(limit - 1).arg("WITHSCORES");
    let entries: Vec<(String, f64)> = shared.conn.query("dead letters", &cmd).await?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    let mut pipe = redis::pipe();
    pipe.cmd("HMGET").arg(&keys.xq_msgs).arg(&ids);
    pipe.cmd("HMGET").arg(&keys.xq_reasons).arg(&ids);
    let (payloads, reasons): (Vec<Option<Vec<u8>>>, Vec<Option<String>>) =
        shared.conn.pipe("dead letters", &pipe).await?;
    Ok(entries
        .into_iter()
        .zip(payloads)
        .zip(reasons)
        .map(|(((id, score), payload), reason)| DeadLetter {
            message: match payload {
                Some(bytes) => Message::decode(&bytes).map_err(|e| e.to_string()),
                None => Err("the payload is missing".into()),
            },
            id,
            dead_at: score as u64,
            reason,
        })
        .collect())
}

/// Moves dead letters (all, or those with the given ids) back to the tail of `queue`, each
/// under a new redis_message_id. Undecodable ones stay dead. Returns how many moved.
pub(crate) async fn requeue_dead_letters(
    shared: &Shared,
    queue: &str,
    ids: Option<&[String]>,
) -> Result<usize> {
    const CHUNK: usize = 500;
    let keys = shared.keys.queue(queue, &shared.worker_id);
    let ids: Vec<String> = match ids {
        Some(ids) => ids.to_vec(),
        None => {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(&keys.xq).arg(0).arg(-1);
            shared.conn.query("dead letters", &cmd).await?
        }
    };
    let mut moved = 0;
    for chunk in ids.chunks(CHUNK) {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&keys.xq_msgs).arg(chunk);
        let payloads: Vec<Option<Vec<u8>>> = shared.conn.query("dead letters", &cmd).await?;
        let mut script = evalsha(
            &REQUEUE_DEAD,
            &[
                &keys.xq,
                &keys.xq_msgs,
                &keys.xq_reasons,
                &keys.list,
                &keys.msgs,
            ],
        );
        let mut any = false;
        for (id, payload) in chunk.iter().zip(payloads) {
            let Some(message) = payload.and_then(|p| Message::decode(&p).ok()) else {
                continue;
            };
            let (new_id, payload) = promoted(message, queue);
            script.arg(id).arg(new_id).arg(payload);
            any = true;
        }
        if any {
            let n: usize = shared
                .conn
                .eval("requeue dead letters", &REQUEUE_DEAD, &script)
                .await?;
            moved += n;
        }
    }
    Ok(moved)
}

/// Deletes every dead letter of `queue`; returns how many there were.
pub(crate) async fn purge_dead_letters(shared: &Shared, queue: &str) -> Result<usize> {
    let keys = shared.keys.queue(queue, &shared.worker_id);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZCARD")
        .arg(&keys.xq)
        .cmd("DEL")
        .arg(&keys.xq)
        .arg(&keys.xq_msgs)
        .arg(&keys.xq_reasons)
        .ignore();
    let (count,): (usize,) = shared.conn.pipe("purge dead letters", &pipe).await?;
    Ok(count)
}

/// Deletes the dead letters of `queue` with these ids; returns how many there were.
pub(crate) async fn delete_dead_letters(
    shared: &Shared,
    queue: &str,
    ids: &[String],
) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let keys = shared.keys.queue(queue, &shared.worker_id);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZREM")
        .arg(&keys.xq)
        .arg(ids)
        .cmd("HDEL")
        .arg(&keys.xq_msgs)
        .arg(ids)
        .ignore()
        .cmd("HDEL")
        .arg(&keys.xq_reasons)
        .arg(ids)
        .ignore();
    let (count,): (usize,) = shared.conn.pipe("delete dead letters", &pipe).await?;
    Ok(count)
}

/// Processes other than this one whose heartbeat is within the heartbeat timeout (every
/// client heartbeats, as in Dramatiq, so a busy producer shows too), with the queues they
/// hold fetched messages of and how many.
pub(crate) async fn workers(shared: &Shared) -> Result<Vec<WorkerInfo>> {
    let now = now_ms();
    let cutoff = now.saturating_sub(shared.config.heartbeat_timeout.as_millis() as u64);
    // A beat is due every interval; one and a half without one is a missed beat, not jitter.
    let interval = shared.config.heartbeat_interval_or_default().as_millis() as u64;
    let stale_before = now.saturating_sub(interval + interval / 2);
    let mut cmd = redis::cmd("ZRANGEBYSCORE");
    cmd.arg(shared.keys.heartbeats())
        .arg(cutoff)
        .arg("+inf")
        .arg("WITHSCORES");
    let entries: Vec<(String, f64)> = shared.conn.query("workers", &cmd).await?;
    let mut workers = Vec::with_capacity(entries.len());
    for (id, last_heartbeat) in entries {
        if id == shared.worker_id {
            continue;
        }
        let ack_sets = maintenance::scan(shared, &shared.keys.acks_pattern(&id)).await?;
        let mut info = WorkerInfo::new(id.clone(), last_heartbeat as u64);
        info.stale = info.last_heartbeat < stale_before;
        let mut in_flight = 0;
        if !ack_sets.is_empty() {
            let mut pipe = redis::pipe();
            for key in &ack_sets {
                pipe.cmd("SCARD").arg(key);
            }
            let counts: Vec<u64> = shared.conn.pipe("workers", &pipe).await?;
            in_flight = counts.iter().sum();
        }
        info.queues = ack_sets
            .iter()
            .filter_map(|key| shared.keys.queue_of_acks(&id, key))
            .map(|queue| canonical_queue(queue).to_owned())
            .collect();
        info.queues.dedup();
        info.in_flight = Some(in_flight);
        workers.push(info);
    }
    Ok(workers)
}

/// Deletes every message of `queue`: ready, delayed, in flight with this process, dead.
/// Other workers' ack sets are left alone; their acks then find nothing to do.
pub(crate) async fn flush(shared: &Shared, queue: &str) -> Result<()> {
    let keys = shared.keys.queue(queue, &shared.worker_id);
    let mut cmd = redis::cmd("DEL");
    cmd.arg(&[
        &keys.list,
        &keys.msgs,
        &keys.acks,
        &keys.dq_list,
        &keys.dq_msgs,
        &keys.dq_acks,
        &keys.xq,
        &keys.xq_msgs,
        &keys.xq_reasons,
    ]);
    let _: u64 = shared.conn.query("flush", &cmd).await?;
    if let Some(state) = shared.consumed(queue) {
        state.delayed().take_all();
        state.outstanding().clear();
    }
    Ok(())
}

/// At close: takes this process out of the heartbeats if it holds no fetched message, so
/// no one has to find it dead. With messages still held it stays, and they are recovered
/// once it counts as dead.
pub(crate) async fn leave_heartbeats(shared: &Shared) {
    match maintenance::scan(shared, &shared.keys.acks_pattern(&shared.worker_id)).await {
        Ok(held) if held.is_empty() => {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(shared.keys.heartbeats()).arg(&shared.worker_id);
            if let Err(err) = shared.conn.query::<()>("leave heartbeats", &cmd).await {
                tracing::debug!(error = %err, "could not remove this worker's heartbeat");
            }
        }
        Ok(held) => {
            tracing::warn!(ack_sets = %crate::log_fields::list(&held), "closing with fetched messages still unacked; they come back once this worker counts as dead");
        }
        Err(err) => tracing::debug!(error = %err, "could not check this worker's ack sets"),
    }
}
