//! The recorder's counters: what was written, dropped, and whether PostgreSQL answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::state::JobState;

/// The recorder's counters, shared by the hooks, the buffer and the flusher.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) dropped_succeeded: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) flush_errors: AtomicU64,
    pub(crate) insert_conflicts: AtomicU64,
    pub(crate) buffered: AtomicU64,
    pub(crate) last_batch_ms: AtomicU64,
    pub(crate) unreachable: AtomicBool,
}

impl Metrics {
    pub(crate) fn dropped(&self, state: JobState) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed);
        if state == JobState::Succeeded {
            self.dropped_succeeded.fetch_add(1, Ordering::Relaxed);
        }
        // The first drop, then every 10 000th: never silent, never a log line per message.
        if total.is_multiple_of(10_000) {
            tracing::warn!(
                dropped = total + 1,
                state = state.as_str(),
                "job records buffer full; dropping records (raise the capacity, or use Overflow::Block)"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> RecordStats {
        RecordStats {
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            dropped_succeeded: self.dropped_succeeded.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
            insert_conflicts: self.insert_conflicts.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
            last_batch_ms: self.last_batch_ms.load(Ordering::Relaxed),
            unreachable: self.unreachable.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of the recorder's counters ([`Records::stats`](super::Records::stats)); the
/// CLI's `/metrics` serves them as `dramatiq_job_records_*`.
///
/// ```
/// let stats = actor_runtime::records::RecordStats::default();
/// assert_eq!(stats.dropped, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordStats {
    /// Rows written (one per message per flush).
    pub written: u64,
    /// Changes dropped because the buffer was full ([`Overflow::Drop`](super::Overflow::Drop)).
    pub dropped: u64,
    /// Of those, success records.
    pub dropped_succeeded: u64,
    /// Batches written.
    pub flushes: u64,
    /// Batches that failed (PostgreSQL unreachable or refusing); their rows are retried.
    pub flush_errors: u64,
    /// Batches first tried as a plain `INSERT` (rows this process had stored nothing of)
    /// that met a record stored elsewhere (a producer's, another worker's) and were written
    /// again as the upsert. Steady growth means producers record too: harmless, the
    /// recorder then tries the insert less and less often.
    pub insert_conflicts: u64,
    /// Rows not yet written: in the buffer, or in a batch being written.
    pub buffered: u64,
    /// How long the last batch took to write, ms.
    pub last_batch_ms: u64,
    /// Whether the last flush failed to reach PostgreSQL.
    pub unreachable: bool,
}
