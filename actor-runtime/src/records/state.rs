//! The job state machine: the states of a record, their order within an attempt, and the
//! transitions the writer allows.
//!
//! ```text
//!            ┌──────────── attempt n ─────────────┐
//!  enqueued ─┐                       ┌─▶ succeeded
//!            ├─▶ running ─┬──────────┼─▶ failed ──┐
//!  delayed  ─┘     ▲      │          ├─▶ dead ────┤ operator requeue
//!     │            │      └─▶ retrying             ▼
//!     ├─▶ skipped  └── attempt n+1 ◀──┘          enqueued (order 0)
//!     └─▶ cancelled
//! ```
//!
//! A change applies when it is *newer* than the stored one: a higher attempt, or the same
//! attempt and a higher [`order`](JobState::order). So a late or repeated write (at-least-once
//! delivery, a retry racing a slow flush) never moves a record back. The operator's requeue of
//! a failed or dead message is the one move back: it is written directly, with order 0, so
//! the next run (the attempt the requeued payload carries, never lower than the stored one)
//! is newer again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The state of a job record, stored as text in `job_executions.state`.
///
/// ```
/// use actor_runtime::records::JobState;
///
/// assert_eq!(JobState::Dead.as_str(), "dead");
/// assert_eq!("retrying".parse::<JobState>(), Ok(JobState::Retrying));
/// assert!(JobState::Running.can_become(JobState::Succeeded));
/// assert!(!JobState::Succeeded.can_become(JobState::Running));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// In its queue, ready to run.
    Enqueued,
    /// In the delay queue until its `eta`.
    Delayed,
    /// Fetched by a worker and running.
    Running,
    /// Failed; another attempt is scheduled at `eta`.
    Retrying,
    /// The actor returned successfully.
    Succeeded,
    /// Failed for good without exhausting its retries: an error the actor `throws`, a
    /// `retry_when` that refused, bad arguments, or a middleware that failed it.
    Failed,
    /// Failed for good: its retries are exhausted (dead-lettered).
    Dead,
    /// Skipped unrun (its `max_age` passed, or a middleware skipped it).
    Skipped,
    /// Cancelled: skipped because a cancel came before it ran, or aborted while it ran
    /// (the `cancel::Cancellation` middleware, feature `redis`).
    Cancelled,
}

impl JobState {
    /// Every state, in order.
    pub const ALL: [JobState; 9] = [
        JobState::Enqueued,
        JobState::Delayed,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Skipped,
        JobState::Cancelled,
    ];

    /// The name stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Enqueued => "enqueued",
            JobState::Delayed => "delayed",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Skipped => "skipped",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Its rank within one attempt: waiting 1, running 2, retrying 3, finished 4.
    pub fn order(self) -> i16 {
        match self {
            JobState::Enqueued | JobState::Delayed => 1,
            JobState::Running => 2,
            JobState::Retrying => 3,
            JobState::Succeeded
            | JobState::Failed
            | JobState::Dead
            | JobState::Skipped
            | JobState::Cancelled => 4,
        }
    }

    /// Whether the record is finished (until an operator requeues a failed or dead one).
    pub fn is_final(self) -> bool {
        self.order() == 4
    }

    /// Whether this state may follow `self` within one attempt or into the next (the
    /// operator's requeue, [`JobState::requeueable`], aside).
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Enqueued | Delayed, Running | Skipped | Cancelled)
                | (
                    Running,
                    Retrying | Succeeded | Failed | Dead | Skipped | Cancelled
                )
                | (Retrying, Running | Skipped | Cancelled)
        )
    }

    /// Whether an operator may requeue a record in this state (back to `enqueued`).
    pub fn requeueable(self) -> bool {
        matches!(self, JobState::Failed | JobState::Dead)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state `{0}` (expected one of enqueued, delayed, running, retrying, succeeded, failed, dead, skipped, cancelled)")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Whether a change to (`attempt`, `state`) is newer than a stored (`attempt`, `state`):
/// the writer's monotonic rule, the same the upsert's `WHERE` applies in SQL.
pub(crate) fn is_newer(stored: (i32, JobState), next: (i32, JobState)) -> bool {
    (next.0, next.1.order()) > (stored.0, stored.1.order())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_transition_within_an_attempt_is_newer() {
        for from in JobState::ALL {
            for to in JobState::ALL {
                if from.can_become(to) && (from, to) != (JobState::Retrying, JobState::Running) {
                    assert!(is_newer((1, from), (1, to)), "{from} -> {to}");
                }
            }
        }
        // A retry's next run is the next attempt.
        assert!(is_newer((1, JobState::Retrying), (2, JobState::Running)));
    }

    #[test]
    fn final_states_never_go_back_within_an_attempt() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in JobState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
                assert!(!is_newer((3, from), (3, to)));
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
