//! The broker's timers: heartbeats, dead-worker recovery and the dead-letter TTL.
//!
//! Dramatiq runs recovery on 0.1% of commands, for the queue at hand only, with `KEYS`; a
//! crashed worker's messages then come back "whenever" (#527). Here every process sweeps the
//! whole namespace on a timer, with `SCAN`, so they come back within about one heartbeat
//! timeout, Python workers' messages included.

use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::conn::evalsha;
use super::scripts::{FORGET, HEARTBEAT, PURGE_DEAD, RECOVER, SWEEP_REASONS};
use super::Shared;
use crate::error::Result;
use crate::message::now_ms;

/// Records this process's heartbeat every interval, on a connection and a thread of its own
/// (see `Shared::start`), so busy or blocking actors and a saturated pool never delay it
/// (Dramatiq #692).
pub(crate) async fn heartbeat_loop(shared: Weak<Shared>, stop: CancellationToken) {
    let Some(conn) = shared.upgrade().map(|s| s.conn.clone()) else {
        return;
    };
    let mut manager = match conn.dedicated() {
        Ok(manager) => manager,
        Err(err) => {
            tracing::error!(error = %err, "no heartbeat connection; heartbeats stop");
            return;
        }
    };
    loop {
        let Some((interval, cmd)) = shared.upgrade().map(|s| {
            let mut cmd = evalsha(&HEARTBEAT, &[&s.keys.heartbeats()]);
            cmd.arg(now_ms()).arg(&s.worker_id);
            (s.config.heartbeat_interval_or_default(), cmd)
        }) else {
            return;
        };
        let beat = conn.eval_on::<i64>("heartbeat", &mut manager, &HEARTBEAT, &cmd);
        let wait = match beat.await.map(drop) {
            Ok(()) => {
                if let Some(shared) = shared.upgrade() {
                    super::inspect::report_activity(&shared, &mut manager).await;
                }
                interval
            }
            Err(err) => {
                tracing::warn!(error = %err, "heartbeat failed; retrying shortly");
                interval.min(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Recovers dead workers' messages and purges expired dead letters every maintenance
/// interval (the first pass right away).
pub(crate) async fn maintenance_loop(shared: Weak<Shared>, stop: CancellationToken) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let interval = shared.config.maintenance_interval_or_default();
        let pass = async {
            if let Err(err) = recover_dead_workers(&shared).await {
                tracing::warn!(error = %err, "dead-worker recovery failed; retrying next pass");
            }
            if let Err(err) = purge_expired_dead_letters(&shared).await {
                tracing::warn!(error = %err, "purging expired dead letters failed; retrying next pass");
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = pass => {}
        }
        drop(shared);
        // Jitter spreads the sweeps of many processes started together.
        let wait = interval.mul_f64(0.9 + 0.2 * fastrand::f64());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Requeues the fetched messages of every worker whose heartbeat is older than the
/// heartbeat timeout, in every queue, then forgets the worker. Returns how many messages
/// came back.
pub(crate) async fn recover_dead_workers(shared: &Shared) -> Result<u64> {
    let timeout = shared.config.heartbeat_timeout.as_millis() as u64;
    let dead_before = now_ms().saturating_sub(timeout);
    let heartbeats = shared.keys.heartbeats();
    let mut cmd = redis::cmd("ZRANGEBYSCORE");
    cmd.arg(&heartbeats)
        .arg("-inf")
        .arg(format!("({dead_before}"));
    let dead: Vec<String> = shared.conn.query("find dead workers", &cmd).await?;
    let mut recovered = 0u64;
    for worker in dead.iter().filter(|w| **w != shared.worker_id) {
        let (n, alive) = recover_acks(shared, worker, dead_before).await?;
        recovered += n;
        if alive {
            continue;
        }
        let mut cmd = evalsha(&FORGET, &[&heartbeats]);
        cmd.arg(worker).arg(dead_before);
        let _: i64 = shared
            .conn
            .eval("forget dead worker", &FORGET, &cmd)
            .await?;
    }
    Ok(recovered)
}

/// Requeues the fetched messages of `worker` now, whatever its last heartbeat: its process
/// is known to be dead (its supervisor saw it exit). Its heartbeat stays for the sweep above
/// to forget once it times out, which also recovers anything a command of the process still
/// on its way to Redis at its death stored meanwhile. Returns how many came back.
pub(crate) async fn recover_worker(shared: &Shared, worker: &str) -> Result<u64> {
    // Any heartbeat is older than this.
    let dead_before = i64::MAX as u64;
    Ok(recover_acks(shared, worker, dead_before).await?.0)
}

/// Requeues the messages in `worker`'s ack sets, stopping if it turns out to have sent a
/// heartbeat since `dead_before`. Returns how many came back, and whether it is alive.
async fn recover_acks(shared: &Shared, worker: &str, dead_before: u64) -> Result<(u64, bool)> {
    let heartbeats = shared.keys.heartbeats();
    let mut recovered = 0;
    for ack_set in scan(shared, &shared.keys.acks_pattern(worker)).await? {
        let Some(queue) = shared.keys.queue_of_acks(worker, &ack_set) else {
            continue;
        };
        let list = shared.keys.list(queue);
        let msgs = shared.keys.msgs(queue);
        let mut cmd = evalsha(&RECOVER, &[&ack_set, &list, &msgs, &heartbeats]);
        cmd.arg(worker).arg(dead_before);
        let n: i64 = shared.conn.eval("recover", &RECOVER, &cmd).await?;
        if n < 0 {
            return Ok((recovered, true));
        }
        if n > 0 {
            recovered += n as u64;
            tracing::warn!(worker = %worker, queue, count = n, "requeued the messages of a dead worker");
        }
    }
    Ok((recovered, false))
}

/// Deletes dead letters older than the dead-message TTL in every queue of the namespace.
/// Returns how many.
pub(crate) async fn purge_expired_dead_letters(shared: &Shared) -> Result<u64> {
    const CHUNK: u64 = 1000;
    let cutoff = now_ms().saturating_sub(shared.config.dead_message_ttl.as_millis() as u64);
    let mut purged = 0;
    for xq in scan(shared, &shared.keys.dead_letter_pattern()).await? {
        let Some(queue) = shared.keys.queue_of_dead_letters(&xq) else {
            continue;
        };
        let keys = shared.keys.queue(queue, &shared.worker_id);
        loop {
            let mut cmd = evalsha(&PURGE_DEAD, &[&keys.xq, &keys.xq_msgs, &keys.xq_reasons]);
            cmd.arg(cutoff).arg(CHUNK);
            let n: u64 = shared
                .conn
                .eval("purge dead letters", &PURGE_DEAD, &cmd)
                .await?;
            purged += n;
            if n < CHUNK {
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(count = purged, "purged expired dead letters");
    }
    sweep_orphan_reasons(shared).await?;
    Ok(purged)
}

/// Deletes dead-letter reasons whose dead letter is gone: Python's flush and dead-letter TTL
/// remove `.XQ` entries (or the whole zset) without knowing our reasons hash.
pub(crate) async fn sweep_orphan_reasons(shared: &Shared) -> Result<u64> {
    const PAGE: u64 = 500;
    let mut swept = 0;
    for reasons in scan(shared, &shared.keys.dead_letter_reasons_pattern()).await? {
        let Some(xq) = reasons
            .strip_suffix(".reasons")
            .filter(|xq| shared.keys.queue_of_dead_letters(xq).is_some())
        else {
            continue;
        };
        let mut cursor = "0".to_owned();
        loop {
            let mut cmd = evalsha(&SWEEP_REASONS, &[xq, &reasons]);
            cmd.arg(&cursor).arg(PAGE);
            let (next, deleted): (String, u64) = shared
                .conn
                .eval("sweep dead-letter reasons", &SWEEP_REASONS, &cmd)
                .await?;
            swept += deleted;
            if next == "0" {
                break;
            }
            cursor = next;
        }
    }
    if swept > 0 {
        tracing::info!(
            count = swept,
            "deleted the reasons of dead letters deleted elsewhere"
        );
    }
    Ok(swept)
}

/// Every key matching `pattern`, by SCAN (never KEYS, which blocks the server and is
/// disabled on managed Redis: Dramatiq #491, #682).
pub(crate) async fn scan(shared: &Shared, pattern: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, batch): (u64, Vec<String>) = shared.conn.query("scan", &cmd).await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}
