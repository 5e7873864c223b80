//! [`RecordsBuilder`]: the recorder's settings.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::buffer::{Buffer, Overflow};
use super::metrics::Metrics;
use super::{flush, Inner, Records, RecordsError};

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) flush_interval: Duration,
    pub(crate) batch_rows: usize,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) connect_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) record_args: HashSet<String>,
    pub(crate) migrate: bool,
    pub(crate) durable_commits: bool,
}

impl Config {
    pub(crate) fn quoted_schema(&self) -> String {
        format!("\"{}\"", self.schema)
    }
}

/// Whether `name` is a plain identifier (so it can be quoted without escaping).
pub(crate) fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

/// Configures [`Records`]; from [`Records::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use actor_runtime::records::{Overflow, Records};
///
/// # async fn run() -> Result<(), actor_runtime::records::RecordsError> {
/// let records = Records::builder("postgres://postgres@127.0.0.1/test")
///     .schema("jobs")
///     .flush_interval(Duration::from_millis(50))
///     .batch_rows(5000)
///     .capacity(100_000)
///     .overflow(Overflow::Drop)
///     .record_args_of(["send_invoice"])
///     .migrate(true)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RecordsBuilder {
    config: Config,
}

impl RecordsBuilder {
    pub(crate) fn new(url: String) -> RecordsBuilder {
        RecordsBuilder {
            config: Config {
                url,
                schema: "public".into(),
                flush_interval: Duration::from_millis(50),
                batch_rows: 5000,
                capacity: 100_000,
                overflow: Overflow::Drop,
                connect_timeout: Duration::from_secs(5),
                shutdown_timeout: Duration::from_secs(10),
                record_args: HashSet::new(),
                migrate: false,
                durable_commits: false,
            },
        }
    }

    /// The schema of the `job_executions` table [default: `public`].
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.config.schema = schema.into();
        self
    }

    /// How often buffered changes are written [default: 50 ms].
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.config.flush_interval = every;
        self
    }

    /// Rows per statement; a full batch is written at once, without waiting for the
    /// interval [default: 5000].
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.config.batch_rows = rows.max(1);
        self
    }

    /// Messages the buffer holds before the [`Overflow`] policy applies [default: 100 000].
    pub fn capacity(mut self, rows: usize) -> Self {
        self.config.capacity = rows.max(1);
        self
    }

    /// What to do when the buffer is full [default: [`Overflow::Drop`]].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.config.overflow = overflow;
        self
    }

    /// How long to wait for a connection [default: 5 s].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long [`Records::close`] (and worker shutdown) waits for the final flush
    /// [default: 10 s].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Record the arguments (`{"args": [..], "kwargs": {..}}`) of these actors. Arguments
    /// are personal data more often than not: every other actor's are redacted (the
    /// `args` column stays NULL).
    pub fn record_args_of<S: Into<String>>(mut self, actors: impl IntoIterator<Item = S>) -> Self {
        self.config
            .record_args
            .extend(actors.into_iter().map(Into::into));
        self
    }

    /// Apply the migrations ([`MIGRATIONS`](super::MIGRATIONS)) when building: the schema
    /// and table are created if missing (idempotent) [default: no].
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.config.migrate = migrate;
        self
    }

    /// Wait for each batch's commit to reach the disk (`synchronous_commit = on` for the
    /// recorder's session) [default: no: a crash of PostgreSQL itself may lose the last
    /// fraction of a second of records, which saves the flusher a disk flush per batch;
    /// the application's own transactions are unaffected].
    pub fn durable_commits(mut self, durable: bool) -> Self {
        self.config.durable_commits = durable;
        self
    }

    /// Starts the flusher (on the current tokio runtime) and, if asked, applies the
    /// migrations. Without migrations no connection is made yet: a recorder built while
    /// PostgreSQL is down buffers until it comes up.
    pub async fn build(self) -> Result<Records, RecordsError> {
        let config = self.config;
        if !valid_schema(&config.schema) {
            return Err(RecordsError::InvalidSchema(config.schema));
        }
        let metrics = Arc::new(Metrics::default());
        let table = format!("{}.job_executions", config.quoted_schema());
        let inner = Arc::new(Inner {
            upsert: flush::upsert_sql(&table),
            insert: flush::insert_sql(&table),
            optimism: flush::Optimism::default(),
            prepared: Mutex::new(None),
            table,
            buffer: Buffer::new(
                config.capacity,
                config.batch_rows,
                config.overflow,
                metrics.clone(),
            ),
            metrics,
            client: Mutex::new(None),
            flushing: Mutex::new(()),
            stop: CancellationToken::new(),
            flusher: Mutex::new(None),
            config,
        });
        let records = Records { inner };
        if records.inner.config.migrate {
            records.migrate().await?;
        }
        let task = tokio::spawn(flush::run(
            records.inner.clone(),
            records.inner.stop.clone(),
        ));
        *records.inner.flusher.lock().await = Some(task);
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(super::valid_schema("jobs_2"));
        assert!(super::valid_schema("_x"));
        assert!(!super::valid_schema("2x"));
        assert!(!super::valid_schema("a\"; DROP TABLE x; --"));
        assert!(!super::valid_schema(""));
    }
}
