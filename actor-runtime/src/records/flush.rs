//! The flusher: writes the buffer to PostgreSQL in batches, one `UNNEST` upsert per batch,
//! with the monotonic guard in SQL; reconnects and retries when PostgreSQL is away.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::buffer::{Row, MAX_ERRORS};
use super::{Inner, RecordsError};

/// A change is newer than the stored row: a higher attempt, or the same attempt and a
/// higher state order (see [`state`](super::state)).
const NEWER: &str = "(EXCLUDED.attempt, EXCLUDED.state_order) > (j.attempt, j.state_order)";

/// The batched upsert: one statement for the whole batch, each column an array.
pub(crate) fn upsert_sql(table: &str) -> String {
    let latest = |c: &str| {
        format!(
            "{c} = CASE WHEN {NEWER} THEN COALESCE(EXCLUDED.{c}, j.{c}) ELSE COALESCE(j.{c}, EXCLUDED.{c}) END"
        )
    };
    format!(
        "INSERT INTO {table} AS j (message_id, queue_name, actor_name, state, state_order, attempt, \
           max_retries, enqueued_at, eta, started_at, finished_at, duration_ms, worker_id, \
           last_error, errors, parent_id, group_id, args, updated_at) \
         SELECT *, clock_timestamp() FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[], \
           $6::int4[], $7::int4[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], \
           $11::timestamptz[], $12::float8[], $13::text[], $14::text[], $15::jsonb[], \
           $16::text[], $17::text[], $18::jsonb[]) \
         ON CONFLICT (message_id) DO UPDATE SET \
           state = CASE WHEN {NEWER} THEN EXCLUDED.state ELSE j.state END, \
           state_order = CASE WHEN {NEWER} THEN EXCLUDED.state_order ELSE j.state_order END, \
           attempt = CASE WHEN {NEWER} THEN EXCLUDED.attempt ELSE j.attempt END, \
           max_retries = COALESCE(EXCLUDED.max_retries, j.max_retries), \
           enqueued_at = COALESCE(j.enqueued_at, EXCLUDED.enqueued_at), \
           {eta}, {started}, {worker}, {error}, \
           finished_at = CASE WHEN {NEWER} AND EXCLUDED.state_order < 3 THEN EXCLUDED.finished_at \
             WHEN {NEWER} THEN COALESCE(EXCLUDED.finished_at, j.finished_at) \
             ELSE COALESCE(j.finished_at, EXCLUDED.finished_at) END, \
           duration_ms = CASE WHEN {NEWER} AND EXCLUDED.state_order < 3 THEN EXCLUDED.duration_ms \
             WHEN {NEWER} AND EXCLUDED.finished_at IS NOT NULL THEN COALESCE(EXCLUDED.duration_ms, \
               extract(epoch FROM EXCLUDED.finished_at - j.started_at) * 1000) \
             ELSE COALESCE(j.duration_ms, EXCLUDED.duration_ms) END, \
           errors = CASE WHEN jsonb_array_length(EXCLUDED.errors) = 0 THEN j.errors ELSE ( \
             SELECT COALESCE(jsonb_agg(e ORDER BY (e->>'attempt')::int, e->>'at'), '[]'::jsonb) FROM ( \
               SELECT DISTINCT ON ((e->>'attempt')::int, e->>'at') e \
               FROM jsonb_array_elements(j.errors || EXCLUDED.errors) AS x(e) \
               ORDER BY (e->>'attempt')::int DESC, e->>'at' DESC LIMIT {MAX_ERRORS}) AS kept) END, \
           parent_id = COALESCE(j.parent_id, EXCLUDED.parent_id), \
           group_id = COALESCE(j.group_id, EXCLUDED.group_id), \
           args = COALESCE(j.args, EXCLUDED.args), \
           updated_at = clock_timestamp()",
        eta = latest("eta"),
        started = latest("started_at"),
        worker = latest("worker_id"),
        error = latest("last_error"),
    )
}

/// Writes `rows` (distinct message ids) in one statement.
pub(crate) async fn write(client: &Client, sql: &str, rows: &[Row]) -> Result<u64, RecordsError> {
    macro_rules! column {
        ($f:expr) => {
            rows.iter().map($f).collect::<Vec<_>>()
        };
    }
    let ids = column!(|r| r.message_id.as_str());
    let queues = column!(|r| r.queue_name.as_str());
    let actors = column!(|r| r.actor_name.as_str());
    let states = column!(|r| r.state.as_str());
    let orders = column!(|r| r.state.order());
    let attempts = column!(|r| r.attempt);
    let max_retries = column!(|r| r.max_retries);
    let enqueued = column!(|r| r.enqueued_at);
    let etas = column!(|r| r.eta);
    let started = column!(|r| r.started_at);
    let finished = column!(|r| r.finished_at);
    let durations = column!(|r| r.duration_ms);
    let workers = column!(|r| r.worker_id.as_deref());
    let errors = column!(|r| r.last_error.as_deref());
    let histories = column!(|r| serde_json::to_value(&r.errors).unwrap_or(Value::Array(vec![])));
    let parents = column!(|r| r.parent_id.as_deref());
    let groups = column!(|r| r.group_id.as_deref());
    let args = column!(|r| r.args.as_ref());
    let n = client
        .execute(
            sql,
            &[
                &ids,
                &queues,
                &actors,
                &states,
                &orders,
                &attempts,
                &max_retries,
                &enqueued,
                &etas,
                &started,
                &finished,
                &durations,
                &workers,
                &errors,
                &histories,
                &parents,
                &groups,
                &args,
            ],
        )
        .await?;
    Ok(n)
}

/// Writes everything buffered now, batch by batch; on failure the rows go back to the
/// buffer and the error is returned.
pub(crate) async fn flush_all(inner: &Inner) -> Result<(), RecordsError> {
    let _one_at_a_time = inner.flushing.lock().await;
    loop {
        let rows = inner.buffer.take(inner.config.batch_rows);
        if rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = match inner.client().await {
            Ok(client) => write(&client, &inner.upsert, &rows).await,
            Err(err) => Err(err),
        };
        let metrics = &inner.metrics;
        match result {
            Ok(_) => {
                inner.buffer.written(rows.len());
                metrics
                    .written
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                metrics.flushes.fetch_add(1, Ordering::Relaxed);
                metrics
                    .last_batch_ms
                    .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                if metrics.unreachable.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        rows = rows.len(),
                        "job records: PostgreSQL answers again; catching up"
                    );
                }
            }
            Err(err) => {
                inner.buffer.restore(rows);
                inner.forget_client(&err).await;
                metrics.flush_errors.fetch_add(1, Ordering::Relaxed);
                if !metrics.unreachable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, buffered = inner.buffer.len(), "job records: cannot write to PostgreSQL; records stay buffered and are retried (the queue keeps running)");
                }
                return Err(err);
            }
        }
    }
}

/// The flusher task: every `flush_interval`, or as soon as a batch is full; after a failure
/// it waits (up to 5 s, doubling) before trying again. A final flush when cancelled.
pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let mut backoff = Duration::ZERO;
    loop {
        let wait = inner.config.flush_interval.max(backoff);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = inner.buffer.batch_ready.notified(), if backoff.is_zero() => {}
        }
        backoff = match flush_all(&inner).await {
            Ok(()) => Duration::ZERO,
            Err(_) => (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5)),
        };
    }
    if let Err(err) = tokio::time::timeout(inner.config.shutdown_timeout, flush_all(&inner))
        .await
        .unwrap_or(Err(RecordsError::Timeout))
    {
        tracing::warn!(error = %err, lost = inner.buffer.len(), "job records: the final flush failed; these records are lost");
    }
}

/// `t` as RFC 3339 with milliseconds, UTC.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
