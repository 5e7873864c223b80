//! Retention: finished records deleted in small batches, so no statement holds locks long.

use std::time::{Duration, SystemTime};

use super::{Records, RecordsError};

/// How long finished records are kept, for [`Records::prune`].
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::records::Retention;
///
/// let retention = Retention::default();
/// assert_eq!(retention.succeeded, Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(retention.failed, Duration::from_secs(30 * 24 * 3600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Succeeded, skipped and cancelled records [default: 7 days].
    pub succeeded: Duration,
    /// Failed and dead records [default: 30 days].
    pub failed: Duration,
    /// Rows per `DELETE` [default: 1000].
    pub batch: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded: Duration::from_secs(7 * 24 * 3600),
            failed: Duration::from_secs(30 * 24 * 3600),
            batch: 1000,
        }
    }
}

impl Records {
    /// Deletes the records that finished longer ago than `retention` says, in batches of
    /// `retention.batch` rows (each its own short transaction, oldest first by the
    /// `created_at` index). Running, waiting and retrying records are never pruned.
    /// Returns how many were deleted.
    ///
    /// ```no_run
    /// # async fn run(records: actor_runtime::records::Records) -> Result<(), actor_runtime::records::RecordsError> {
    /// let deleted = records.prune(Default::default()).await?;
    /// println!("pruned {deleted} job records");
    /// # Ok(()) }
    /// ```
    pub async fn prune(&self, retention: Retention) -> Result<u64, RecordsError> {
        let client = self.inner.client().await?;
        let sql = format!(
            "DELETE FROM {table} WHERE message_id IN ( \
               SELECT message_id FROM {table} \
               WHERE created_at < $2 AND state = ANY($1) AND finished_at < $2 \
               ORDER BY created_at LIMIT $3)",
            table = self.inner.table
        );
        let statement = client.prepare(&sql).await?;
        let now = SystemTime::now();
        let classes: [(&[&str], Duration); 2] = [
            (&["succeeded", "skipped", "cancelled"], retention.succeeded),
            (&["failed", "dead"], retention.failed),
        ];
        let batch = retention.batch.max(1);
        let mut deleted = 0;
        for (states, keep) in classes {
            let cutoff = now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
            loop {
                let n = client
                    .execute(&statement, &[&states, &cutoff, &batch])
                    .await?;
                deleted += n;
                if n < batch as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
