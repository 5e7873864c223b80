//! The bounded in-memory buffer between the hooks and the flusher: one pending row per
//! message, so a message enqueued, run and finished within one flush window costs one row
//! write.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::Notify;

use super::metrics::Metrics;
use super::state::{is_newer, JobState};

/// Errors kept per record (the row's `errors` array), newest last.
pub(crate) const MAX_ERRORS: usize = 10;

/// What the buffer does with a change when it is full.
///
/// ```
/// use actor_runtime::records::Overflow;
///
/// assert_eq!(Overflow::default(), Overflow::Drop);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the change of a message not yet buffered, counted in
    /// [`RecordStats::dropped`](super::RecordStats::dropped), and warn: the queue never
    /// waits for PostgreSQL. Problem states (retrying, failed, dead) may still fill a
    /// second capacity's worth before they are dropped too.
    #[default]
    Drop,
    /// Make the hook wait until the flusher has made room: no record is lost, but the
    /// queue slows to PostgreSQL's pace (and stops while it is unreachable).
    Block,
}

/// One error of a record's history.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ErrorEntry {
    /// The attempt that failed.
    pub attempt: i32,
    /// When, RFC 3339.
    pub at: String,
    /// The error's type (`panic`, `TimeLimitExceeded`, a Rust type name...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its text.
    pub message: String,
}

/// A pending write: the newest known state of one message, with every field learnt so far.
///
/// The names are shared, not copied: the message id is the buffer's key too, the queue is
/// the consumer's own name (made canonical when written), the actor's name is the
/// registration's, and the worker id is the recorder's. A message recorded on the worker's
/// path costs one allocation for its names.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) message_id: Arc<str>,
    pub(crate) queue_name: Arc<str>,
    pub(crate) actor_name: Cow<'static, str>,
    pub(crate) state: JobState,
    pub(crate) attempt: i32,
    pub(crate) max_retries: Option<i32>,
    pub(crate) enqueued_at: Option<SystemTime>,
    pub(crate) eta: Option<SystemTime>,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) duration_ms: Option<f64>,
    pub(crate) worker_id: Option<Arc<str>>,
    pub(crate) last_error: Option<String>,
    pub(crate) errors: Vec<ErrorEntry>,
    pub(crate) parent_id: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) args: Option<Value>,
    /// Began with this process's first sight of the message (its enqueue here, or its first
    /// run here), so no earlier write of this process can have stored it: the flusher may
    /// try a plain `INSERT` for it (see [`flush`](super::flush)). Kept through merges.
    pub(crate) fresh: bool,
}

impl Row {
    /// A row of `state` for a message, every optional field empty.
    pub(crate) fn new(
        message_id: impl Into<Arc<str>>,
        queue_name: impl Into<Arc<str>>,
        actor_name: impl Into<Cow<'static, str>>,
        state: JobState,
        attempt: i32,
    ) -> Row {
        Row {
            message_id: message_id.into(),
            queue_name: queue_name.into(),
            actor_name: actor_name.into(),
            state,
            attempt,
            max_retries: None,
            enqueued_at: None,
            eta: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            worker_id: None,
            last_error: None,
            errors: Vec::new(),
            parent_id: None,
            group_id: None,
            args: None,
            fresh: false,
        }
    }

    /// Folds `other` (a change of the same message) into this row: the state of the newer of
    /// the two (attempt, then state order), each field from the newer one that has it, the
    /// first enqueue time, and both error histories. The same rule as the upsert's. This row
    /// is the older one, so its `fresh` stands.
    pub(crate) fn merge(&mut self, other: Row) {
        let newer = is_newer((self.attempt, self.state), (other.attempt, other.state));
        fn latest<T>(newer: bool, mine: &mut Option<T>, theirs: Option<T>) {
            if theirs.is_some() && (newer || mine.is_none()) {
                *mine = theirs;
            }
        }
        fn first<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if mine.is_none() {
                *mine = theirs;
            }
        }
        if newer {
            self.state = other.state;
            self.attempt = other.attempt;
            if other.state.order() < JobState::Retrying.order() {
                // A new run: the previous one's end no longer describes the record.
                self.finished_at = None;
                self.duration_ms = None;
            }
        }
        latest(newer, &mut self.max_retries, other.max_retries);
        first(&mut self.enqueued_at, other.enqueued_at);
        latest(newer, &mut self.eta, other.eta);
        latest(newer, &mut self.started_at, other.started_at);
        latest(newer, &mut self.finished_at, other.finished_at);
        latest(newer, &mut self.duration_ms, other.duration_ms);
        latest(newer, &mut self.worker_id, other.worker_id);
        latest(newer, &mut self.last_error, other.last_error);
        first(&mut self.parent_id, other.parent_id);
        first(&mut self.group_id, other.group_id);
        first(&mut self.args, other.args);
        for error in other.errors {
            if !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
        if self.errors.len() > 1 {
            self.errors
                .sort_by(|a, b| (a.attempt, &a.at).cmp(&(b.attempt, &b.at)));
        }
        let excess = self.errors.len().saturating_sub(MAX_ERRORS);
        self.errors.drain(..excess);
    }
}

/// The pending rows, by message id, bounded.
pub(crate) struct Buffer {
    rows: Mutex<HashMap<Arc<str>, Row>>,
    /// An empty map with room, swapped in for the rows when a flush takes them all.
    spare: Mutex<HashMap<Arc<str>, Row>>,
    /// Rows taken by a flush not yet written (or given back): they count against the
    /// capacity too, so a failing flush never makes room for more.
    in_flight: AtomicUsize,
    capacity: usize,
    batch_rows: usize,
    overflow: Overflow,
    /// Wakes the flusher early: a batch is ready.
    pub(crate) batch_ready: Notify,
    /// Wakes blocked hooks: the flusher took rows.
    room: Notify,
    metrics: Arc<Metrics>,
}

impl Buffer {
    pub(crate) fn new(
        capacity: usize,
        batch_rows: usize,
        overflow: Overflow,
        metrics: Arc<Metrics>,
    ) -> Buffer {
        Buffer {
            rows: Mutex::new(HashMap::new()),
            spare: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            capacity: capacity.max(1),
            batch_rows: batch_rows.max(1),
            overflow,
            batch_ready: Notify::new(),
            room: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Row>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the rows not yet written (buffered and in flight), under the lock.
    fn publish(&self, buffered: usize) {
        let pending = buffered + self.in_flight.load(Ordering::Relaxed);
        self.metrics
            .buffered
            .store(pending as u64, Ordering::Relaxed);
    }

    /// Rows waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Adds a change (merged into the message's pending row, if any), applying the
    /// [`Overflow`] policy when the buffer is full.
    pub(crate) async fn push(&self, row: Row) {
        let mut row = Some(row);
        // The common case, room in the buffer, registers no waiter.
        if self.try_push(&mut row) {
            return;
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a flush in between still wakes us.
            room.as_mut().enable();
            if self.try_push(&mut row) {
                return;
            }
            room.await;
        }
    }

    /// Takes the change out of `slot` and adds it, unless the buffer is full and the policy
    /// is [`Overflow::Block`] (then it stays in `slot`, and `false`); [`Overflow::Drop`]
    /// drops (and counts) it instead.
    fn try_push(&self, slot: &mut Option<Row>) -> bool {
        let Some(row) = slot.take() else {
            return true;
        };
        let mut rows = self.lock();
        if let Some(pending) = rows.get_mut(&row.message_id) {
            pending.merge(row);
            return true;
        }
        let problem = matches!(
            row.state,
            JobState::Retrying | JobState::Failed | JobState::Dead
        );
        let limit = match (self.overflow, problem) {
            (Overflow::Drop, true) => self.capacity * 2,
            _ => self.capacity,
        };
        if rows.len() + self.in_flight.load(Ordering::Relaxed) >= limit {
            match self.overflow {
                Overflow::Block => *slot = Some(row),
                Overflow::Drop => {
                    drop(rows);
                    self.metrics.dropped(row.state);
                }
            }
            return slot.is_none();
        }
        rows.insert(row.message_id.clone(), row);
        let len = rows.len();
        drop(rows);
        if len == self.batch_rows {
            self.batch_ready.notify_one();
        }
        self.publish(len);
        true
    }

    /// Takes up to `max` rows to write. Taking them all (the usual case) swaps the map for
    /// an empty one under the lock and unpacks it after, so the hooks never wait for a
    /// batch's worth of moves.
    pub(crate) fn take(&self, max: usize) -> Vec<Row> {
        let mut spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
        let mut rows = self.lock();
        if rows.len() <= max {
            std::mem::swap(&mut *rows, &mut spare);
            self.in_flight.fetch_add(spare.len(), Ordering::Relaxed);
            self.publish(0);
            drop(rows);
            let taken = spare.drain().map(|(_, row)| row).collect();
            // Emptied, its room kept (a batch's worth at most, so a burst's, such as the
            // catch-up after an outage, is not held for good): the next swap allocates
            // nothing.
            spare.shrink_to(self.batch_rows.min(self.capacity));
            *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = spare;
            return taken;
        }
        let keys: Vec<Arc<str>> = rows.keys().take(max).cloned().collect();
        let taken: Vec<Row> = keys.into_iter().filter_map(|k| rows.remove(&k)).collect();
        self.in_flight.fetch_add(taken.len(), Ordering::Relaxed);
        self.publish(rows.len());
        drop(rows);
        *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = spare;
        taken
    }

    /// `n` taken rows are written: their room is free.
    pub(crate) fn written(&self, n: usize) {
        let rows = self.lock();
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
        self.publish(rows.len());
        drop(rows);
        self.room.notify_waiters();
    }

    /// Puts back rows a flush could not write, under any change buffered since (which is
    /// newer where the state machine says so).
    pub(crate) fn restore(&self, failed: Vec<Row>) {
        let mut rows = self.lock();
        self.in_flight.fetch_sub(failed.len(), Ordering::Relaxed);
        for mut row in failed {
            if let Some(newer) = rows.remove(&row.message_id) {
                row.merge(newer);
            }
            rows.insert(row.message_id.clone(), row);
        }
        self.publish(rows.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: JobState, attempt: i32) -> Row {
        Row::new("m1", "q", "a", state, attempt)
    }

    #[test]
    fn a_late_change_keeps_the_newer_state_but_fills_fields() {
        let mut running = row(JobState::Running, 1);
        running.started_at = Some(SystemTime::now());
        let mut enqueued = row(JobState::Enqueued, 1);
        enqueued.enqueued_at = Some(SystemTime::UNIX_EPOCH);
        running.merge(enqueued);
        assert_eq!(running.state, JobState::Running);
        assert_eq!(running.enqueued_at, Some(SystemTime::UNIX_EPOCH));
        assert!(running.started_at.is_some());
    }

    #[test]
    fn errors_are_deduplicated_and_bounded() {
        let mut stored = row(JobState::Retrying, 1);
        for attempt in 1..=12 {
            let mut next = row(JobState::Retrying, attempt);
            next.errors.push(ErrorEntry {
                attempt,
                at: format!("t{attempt:02}"),
                kind: "E".into(),
                message: "boom".into(),
            });
            stored.merge(next.clone());
            stored.merge(next);
        }
        assert_eq!(stored.errors.len(), MAX_ERRORS);
        assert_eq!(stored.errors.last().unwrap().attempt, 12);
        assert_eq!(stored.errors[0].attempt, 3);
    }

    #[tokio::test]
    async fn a_full_buffer_drops_and_counts_under_drop() {
        let metrics = Arc::new(Metrics::default());
        let buffer = Buffer::new(2, 100, Overflow::Drop, metrics.clone());
        for i in 0..5 {
            buffer
                .push(Row::new(format!("m{i}"), "q", "a", JobState::Succeeded, 1))
                .await;
        }
        assert_eq!(buffer.len(), 2);
        assert_eq!(metrics.snapshot().dropped, 3);
        // A change of a buffered message still merges.
        buffer
            .push(Row::new("m0", "q", "a", JobState::Succeeded, 2))
            .await;
        assert_eq!(buffer.len(), 2);
    }

    #[tokio::test]
    async fn take_hands_out_each_row_once_whole_or_in_part() {
        let buffer = Buffer::new(100, 3, Overflow::Drop, Arc::new(Metrics::default()));
        for round in 0..3 {
            for i in 0..5 {
                buffer
                    .push(Row::new(
                        format!("r{round}m{i}"),
                        "q",
                        "a",
                        JobState::Enqueued,
                        1,
                    ))
                    .await;
            }
            // Part (more buffered than asked), then the rest (all: the map swapped out).
            let mut ids: Vec<String> = buffer
                .take(2)
                .into_iter()
                .chain(buffer.take(10))
                .map(|row| row.message_id.to_string())
                .collect();
            ids.sort();
            let expected: Vec<String> = (0..5).map(|i| format!("r{round}m{i}")).collect();
            assert_eq!(ids, expected);
            assert_eq!(buffer.len(), 0);
            buffer.written(5);
        }
        assert!(buffer.take(10).is_empty());
    }

    #[tokio::test]
    async fn a_full_buffer_blocks_under_block_until_rows_are_taken() {
        let metrics = Arc::new(Metrics::default());
        let buffer = Arc::new(Buffer::new(1, 100, Overflow::Block, metrics));
        buffer.push(row(JobState::Enqueued, 1)).await;
        let pusher = {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                buffer
                    .push(Row::new("m2", "q", "a", JobState::Enqueued, 1))
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        let taken = buffer.take(10);
        assert_eq!(taken.len(), 1);
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished(), "rows being written still take room");
        buffer.written(taken.len());
        pusher.await.unwrap();
        assert_eq!(buffer.len(), 1);
    }
}
