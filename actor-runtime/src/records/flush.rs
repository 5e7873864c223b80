//! The flusher: writes the buffer to PostgreSQL in batches, one `UNNEST` upsert per batch,
//! with the monotonic guard in SQL (fresh rows first as a plain insert, see [`Optimism`]);
//! reconnects and retries when PostgreSQL is away.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

use super::buffer::{Row, MAX_ERRORS};
use super::{Inner, RecordsError};
use crate::message::canonical_queue;

/// A change is newer than the stored row: a higher attempt, or the same attempt and a
/// higher state order (see [`state`](super::state)).
const NEWER: &str = "(EXCLUDED.attempt, EXCLUDED.state_order) > (j.attempt, j.state_order)";

/// The columns each batch sends, one array parameter each, in order.
const COLUMNS: &str = "message_id, queue_name, actor_name, state, state_order, attempt, \
    max_retries, enqueued_at, eta, started_at, finished_at, duration_ms, worker_id, \
    last_error, errors, parent_id, group_id, args";

/// The batch as rows: its arrays unnested (an empty error history travels as NULL).
const SOURCE: &str = "SELECT u.message_id, u.queue_name, u.actor_name, u.state, u.state_order, \
    u.attempt, u.max_retries, u.enqueued_at, u.eta, u.started_at, u.finished_at, \
    u.duration_ms, u.worker_id, u.last_error, COALESCE(u.errors, '[]'::jsonb), u.parent_id, \
    u.group_id, u.args, clock_timestamp() \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::int4[], \
      $7::int4[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], \
      $11::timestamptz[], $12::float8[], $13::text[], $14::text[], $15::jsonb[], \
      $16::text[], $17::text[], $18::jsonb[]) AS u";

/// The batched plain insert, for rows no earlier write of this process stored: cheaper for
/// PostgreSQL than the upsert (no speculative insertion), and all-or-nothing: a row already
/// stored (by a producer, another worker) fails the statement with `unique_violation`, and
/// the batch goes again as the upsert.
pub(crate) fn insert_sql(table: &str) -> String {
    format!("INSERT INTO {table} ({COLUMNS}, updated_at) {SOURCE}({COLUMNS})")
}

/// The batched upsert: one statement for the whole batch, each column an array.
pub(crate) fn upsert_sql(table: &str) -> String {
    let latest = |c: &str| {
        format!(
            "{c} = CASE WHEN {NEWER} THEN COALESCE(EXCLUDED.{c}, j.{c}) ELSE COALESCE(j.{c}, EXCLUDED.{c}) END"
        )
    };
    format!(
        "INSERT INTO {table} AS j ({COLUMNS}, updated_at) {SOURCE}({COLUMNS}) \
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

/// When to try the plain insert: always, until one meets a stored record; then the next
/// batches of fresh rows go straight to the upsert, 1, 2, 4... up to 1024 of them after
/// consecutive conflicts (a producer that records too makes every insert conflict: one
/// wasted statement per 1024 batches), the penalty halving with each insert that succeeds.
/// Only the flusher (one flush at a time) touches it.
#[derive(Debug, Default)]
pub(crate) struct Optimism {
    skip: AtomicU32,
    penalty: AtomicU32,
}

impl Optimism {
    /// Whether this batch tries the plain insert.
    fn try_insert(&self) -> bool {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn inserted(&self) {
        let penalty = self.penalty.load(Ordering::Relaxed);
        self.penalty.store(penalty / 2, Ordering::Relaxed);
    }

    fn conflicted(&self) {
        let penalty = (self.penalty.load(Ordering::Relaxed) * 2).clamp(1, 1024);
        self.penalty.store(penalty, Ordering::Relaxed);
        self.skip.store(penalty, Ordering::Relaxed);
    }
}

/// The two statements, prepared once per connection: a batch then costs one round trip and
/// no parsing or planning.
pub(crate) struct Prepared {
    client: Arc<Client>,
    insert: Statement,
    upsert: Statement,
}

/// The statements for `client`, prepared now if the cached ones belong to an earlier
/// connection.
async fn prepared(inner: &Inner, client: Arc<Client>) -> Result<Arc<Prepared>, RecordsError> {
    let mut slot = inner.prepared.lock().await;
    if let Some(prepared) = slot.as_ref().filter(|p| Arc::ptr_eq(&p.client, &client)) {
        return Ok(prepared.clone());
    }
    let insert = client.prepare(&inner.insert).await?;
    let upsert = client.prepare(&inner.upsert).await?;
    let prepared = Arc::new(Prepared {
        client,
        insert,
        upsert,
    });
    *slot = Some(prepared.clone());
    Ok(prepared)
}

/// Writes `rows` (distinct message ids) in one statement.
pub(crate) async fn write(
    client: &Client,
    statement: &Statement,
    rows: &[Row],
) -> Result<u64, RecordsError> {
    macro_rules! column {
        ($f:expr) => {
            rows.iter().map($f).collect::<Vec<_>>()
        };
    }
    // A column empty in every row travels as one NULL array, which UNNEST pads with NULLs:
    // most batches have no eta, error, parent, group or arguments at all.
    macro_rules! sparse {
        ($r:ident => $e:expr) => {
            rows.iter()
                .any(|$r| $e.is_some())
                .then(|| rows.iter().map(|$r| $e).collect::<Vec<_>>())
        };
    }
    let ids = column!(|r| &*r.message_id);
    let queues = column!(|r| canonical_queue(&r.queue_name));
    let actors = column!(|r| &*r.actor_name);
    let states = column!(|r| r.state.as_str());
    let orders = column!(|r| r.state.order());
    let attempts = column!(|r| r.attempt);
    let max_retries = sparse!(r => r.max_retries);
    let enqueued = sparse!(r => r.enqueued_at);
    let etas = sparse!(r => r.eta);
    let started = sparse!(r => r.started_at);
    let finished = sparse!(r => r.finished_at);
    let durations = sparse!(r => r.duration_ms);
    let workers = sparse!(r => r.worker_id.as_deref());
    let errors = sparse!(r => r.last_error.as_deref());
    let histories = sparse!(r => (!r.errors.is_empty()).then_some(Json(&r.errors)));
    let parents = sparse!(r => r.parent_id.as_deref());
    let groups = sparse!(r => r.group_id.as_deref());
    let args = sparse!(r => r.args.as_ref());
    let n = client
        .execute(
            statement,
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

/// Writes `rows`: fresh ones (nothing of them stored by this process) first as the plain
/// insert when [`Optimism`] allows, again as the upsert if one was stored after all.
async fn write_rows(inner: &Inner, rows: &[Row], fresh: bool) -> Result<u64, RecordsError> {
    let prepared = prepared(inner, inner.client().await?).await?;
    let client = &prepared.client;
    if fresh && inner.optimism.try_insert() {
        match write(client, &prepared.insert, rows).await {
            Ok(n) => {
                inner.optimism.inserted();
                return Ok(n);
            }
            Err(RecordsError::Postgres(err)) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                inner.optimism.conflicted();
                inner
                    .metrics
                    .insert_conflicts
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => return Err(err),
        }
    }
    write(client, &prepared.upsert, rows).await
}

/// Writes everything buffered now, batch by batch; on failure the rows not written go back
/// to the buffer and the error is returned.
pub(crate) async fn flush_all(inner: &Inner) -> Result<(), RecordsError> {
    let _one_at_a_time = inner.flushing.lock().await;
    loop {
        let rows = inner.buffer.take(inner.config.batch_rows);
        if rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let (fresh, stored): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.fresh);
        let mut groups = [(fresh, true), (stored, false)].into_iter();
        while let Some((rows, fresh)) = groups.next() {
            if rows.is_empty() {
                continue;
            }
            let result = write_rows(inner, &rows, fresh).await;
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
                    for (rest, _) in groups {
                        inner.buffer.restore(rest);
                    }
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

#[cfg(test)]
mod tests {
    use super::Optimism;

    #[test]
    fn conflicts_back_the_insert_off_exponentially_and_successes_win_it_back() {
        let optimism = Optimism::default();
        assert!(optimism.try_insert());
        // Every insert conflicts (a producer records too): 1, 2, 4... batches skip it.
        let mut skipped = Vec::new();
        for _ in 0..12 {
            optimism.conflicted();
            let mut n = 0;
            while !optimism.try_insert() {
                n += 1;
            }
            skipped.push(n);
        }
        assert_eq!(skipped, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1024]);
        // Inserts that succeed halve the penalty: the next conflict costs less.
        for _ in 0..9 {
            optimism.inserted();
        }
        optimism.conflicted();
        let mut n = 0;
        while !optimism.try_insert() {
            n += 1;
        }
        assert_eq!(n, 4);
    }
}
