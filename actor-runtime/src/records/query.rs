//! Reading the records: one job by message id, and recent jobs by actor, state, time and
//! error text.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row as PgRow;

use super::buffer::ErrorEntry;
use super::flush::rfc3339;
use super::state::JobState;
use super::{Records, RecordsError};

/// One job's record, as stored in `job_executions` (times RFC 3339, UTC).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    /// Dramatiq's message id, stable across retries.
    pub message_id: String,
    /// The queue (canonical name).
    pub queue_name: String,
    /// The actor.
    pub actor_name: String,
    /// Where it is now.
    pub state: JobState,
    /// Runs so far (Dramatiq's `retries` + 1; 1 before the first run).
    pub attempt: i32,
    /// Retries allowed, where known.
    pub max_retries: Option<i32>,
    /// When it was first enqueued (the message's timestamp).
    pub enqueued_at: Option<String>,
    /// When it is due (delayed, or retrying).
    pub eta: Option<String>,
    /// When its last run started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// How long its last run took, ms.
    pub duration_ms: Option<f64>,
    /// The worker that ran it last.
    pub worker_id: Option<String>,
    /// Its last error.
    pub last_error: Option<String>,
    /// Its last errors, oldest first.
    pub errors: Vec<ErrorEntry>,
    /// The message whose actor enqueued it.
    pub parent_id: Option<String>,
    /// Its group (`group_completion_uuid`).
    pub group_id: Option<String>,
    /// Its arguments, for actors whose arguments are recorded.
    pub args: Option<Value>,
    /// When the row was written first.
    pub created_at: String,
    /// When the row was written last.
    pub updated_at: String,
}

const COLUMNS: &str = "message_id, queue_name, actor_name, state, attempt, max_retries, \
    enqueued_at, eta, started_at, finished_at, duration_ms, worker_id, last_error, errors, \
    parent_id, group_id, args, created_at, updated_at";

/// A record's error history as far as it reads: the table may be written by other tools
/// (or by hand), so an entry missing a field reads with that field empty, and an entry or a
/// value that is not an error at all is left out, rather than failing the whole listing.
fn lenient_errors(value: Value) -> Vec<ErrorEntry> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    }
}

impl JobRecord {
    fn from_row(row: &PgRow) -> Result<JobRecord, RecordsError> {
        let time = |i: usize| -> Result<Option<String>, RecordsError> {
            Ok(row.try_get::<_, Option<SystemTime>>(i)?.map(rfc3339))
        };
        let state: String = row.try_get(3)?;
        let errors: Value = row.try_get(13)?;
        Ok(JobRecord {
            message_id: row.try_get(0)?,
            queue_name: row.try_get(1)?,
            actor_name: row.try_get(2)?,
            state: state
                .parse()
                .map_err(|e: super::state::UnknownState| RecordsError::Unreadable(e.to_string()))?,
            attempt: row.try_get(4)?,
            max_retries: row.try_get(5)?,
            enqueued_at: time(6)?,
            eta: time(7)?,
            started_at: time(8)?,
            finished_at: time(9)?,
            duration_ms: row.try_get(10)?,
            worker_id: row.try_get(11)?,
            last_error: row.try_get(12)?,
            errors: lenient_errors(errors),
            parent_id: row.try_get(14)?,
            group_id: row.try_get(15)?,
            args: row.try_get(16)?,
            created_at: time(17)?.unwrap_or_default(),
            updated_at: time(18)?.unwrap_or_default(),
        })
    }
}

/// Which jobs [`Records::jobs`] lists: newest first, every condition optional.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use actor_runtime::records::{JobFilter, JobState};
///
/// let filter = JobFilter::new()
///     .actor("send_email")
///     .state(JobState::Dead)
///     .since(SystemTime::now() - Duration::from_secs(3600))
///     .error("timeout")
///     .limit(20);
/// assert_eq!(filter.limit, 20);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobFilter {
    /// Only this actor's jobs.
    pub actor: Option<String>,
    /// Only this queue's.
    pub queue: Option<String>,
    /// Only those in this state.
    pub state: Option<JobState>,
    /// Only those recorded at or after this time.
    pub since: Option<SystemTime>,
    /// Only those recorded before this time.
    pub until: Option<SystemTime>,
    /// Only those whose last error contains this text (case-insensitive).
    pub error: Option<String>,
    /// At most this many [default: 50].
    pub limit: i64,
    /// Only those enqueued by this message's actor (`parent_id`).
    pub parent: Option<String>,
    /// Only the members of this group (`group_id`).
    pub group: Option<String>,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            actor: None,
            queue: None,
            state: None,
            since: None,
            until: None,
            error: None,
            limit: 50,
            parent: None,
            group: None,
        }
    }
}

impl JobFilter {
    /// Every job, the newest 50.
    pub fn new() -> JobFilter {
        JobFilter::default()
    }
    /// Only `actor`'s jobs.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }
    /// Only `queue`'s jobs.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    /// Only jobs in `state`.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }
    /// Only jobs recorded at or after `t`.
    pub fn since(mut self, t: SystemTime) -> Self {
        self.since = Some(t);
        self
    }
    /// Only jobs recorded before `t`.
    pub fn until(mut self, t: SystemTime) -> Self {
        self.until = Some(t);
        self
    }
    /// Only jobs whose last error contains `text`.
    pub fn error(mut self, text: impl Into<String>) -> Self {
        self.error = Some(text.into());
        self
    }
    /// Only the jobs message `id`'s actor enqueued.
    pub fn parent(mut self, id: impl Into<String>) -> Self {
        self.parent = Some(id.into());
        self
    }
    /// Only the members of group `id`.
    pub fn group(mut self, id: impl Into<String>) -> Self {
        self.group = Some(id.into());
        self
    }
    /// At most `n` jobs.
    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n.max(0);
        self
    }
}

/// `text` as a `LIKE` pattern matching it literally anywhere.
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Records {
    /// The record of message `message_id`, if there is one.
    pub async fn job(&self, message_id: &str) -> Result<Option<JobRecord>, RecordsError> {
        let client = self.inner.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE message_id = $1",
            self.inner.table
        );
        match client.query_opt(&sql, &[&message_id]).await? {
            Some(row) => Ok(Some(JobRecord::from_row(&row)?)),
            None => Ok(None),
        }
    }

    /// Recent jobs matching `filter`, newest first.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, RecordsError> {
        let client = self.inner.client().await?;
        let mut conditions: Vec<String> = Vec::new();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut param = |value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            format!("${}", params.len())
        };
        if let Some(actor) = &filter.actor {
            conditions.push(format!("actor_name = {}", param(Box::new(actor.clone()))));
        }
        if let Some(queue) = &filter.queue {
            conditions.push(format!("queue_name = {}", param(Box::new(queue.clone()))));
        }
        if let Some(state) = filter.state {
            // A literal (a known name), so the planner can use the problem states' partial
            // index.
            conditions.push(format!("state = '{}'", state.as_str()));
        }
        if let Some(since) = filter.since {
            conditions.push(format!("created_at >= {}", param(Box::new(since))));
        }
        if let Some(until) = filter.until {
            conditions.push(format!("created_at < {}", param(Box::new(until))));
        }
        if let Some(text) = &filter.error {
            conditions.push(format!(
                "last_error ILIKE {}",
                param(Box::new(contains_pattern(text)))
            ));
        }
        if let Some(parent) = &filter.parent {
            conditions.push(format!("parent_id = {}", param(Box::new(parent.clone()))));
        }
        if let Some(group) = &filter.group {
            conditions.push(format!("group_id = {}", param(Box::new(group.clone()))));
        }
        let limit = param(Box::new(filter.limit));
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM {} {filter_sql} ORDER BY created_at DESC LIMIT {limit}",
            self.inner.table
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client.query(&sql, &refs).await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// Marks failed or dead records `enqueued` again (with the same attempt, state order 0,
    /// so the next run is newer): call it after requeueing their dead letters, as
    /// [`Records::requeue_dead_letters`] does. Flushes first, so a buffered `dead` cannot
    /// overwrite it. Returns how many records moved.
    pub async fn requeued(&self, message_ids: &[String]) -> Result<u64, RecordsError> {
        self.flush().await?;
        let client = self.inner.client().await?;
        let sql = format!(
            "UPDATE {} SET state = 'enqueued', state_order = 0, eta = NULL, finished_at = NULL, \
               duration_ms = NULL, updated_at = now() \
             WHERE message_id = ANY($1) AND state IN ('failed', 'dead')",
            self.inner.table
        );
        Ok(client.execute(&sql, &[&message_ids]).await?)
    }

    /// Requeues dead letters of `queue` through `broker` (those whose message id is in
    /// `message_ids`, or all) and marks their records `enqueued`. Returns how many messages
    /// moved.
    pub async fn requeue_dead_letters(
        &self,
        broker: &crate::Broker,
        queue: &str,
        message_ids: Option<&[String]>,
    ) -> Result<usize, RecordsError> {
        let (mut broker_ids, mut ids) = (Vec::new(), Vec::new());
        for dead in broker.dead_letters(queue, 1_000_000).await? {
            let Ok(message) = dead.message else { continue };
            if message_ids.is_none_or(|wanted| wanted.contains(&message.message_id)) {
                broker_ids.push(dead.id);
                ids.push(message.message_id);
            }
        }
        let moved = broker
            .requeue_dead_letters(queue, Some(&broker_ids))
            .await?;
        self.requeued(&ids).await?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_search_matches_wildcards_literally() {
        assert_eq!(super::contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn error_histories_written_by_other_tools_read_as_far_as_they_go() {
        use serde_json::{json, Value};
        let read = super::lenient_errors(json!([
            {"attempt": 1, "at": "2026-12-01T00:00:00Z", "type": "ValueError", "message": "no"},
            {"attempt": 2, "type": "KeyError", "message": "missing at"},
            {"attempt": "three"},
            42
        ]));
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].kind, "KeyError");
        assert_eq!(read[1].at, "");
        assert!(super::lenient_errors(json!("not an array")).is_empty());
        assert!(super::lenient_errors(Value::Null).is_empty());
    }
}
