//! Job records in PostgreSQL: every message a worker touches gets one row in
//! `job_executions`, with its state, attempts, times and errors, queryable long after the
//! broker has forgotten it (feature `postgres`).
//!
//! Redis (or any [`Backend`](crate::broker::Backend)) stays the queue; PostgreSQL is the
//! record. A middleware, the [`Recorder`], turns hooks into state changes; they go into a
//! bounded in-memory buffer (one pending row per message, so a message enqueued, run and
//! finished within one flush window costs one row write) and a background flusher writes
//! them in batches, one `UNNEST` upsert per batch (rows this process had stored nothing of go
//! first as a plain `INSERT`, cheaper for PostgreSQL, and again as the upsert if one was
//! stored elsewhere: see [`RecordStats::insert_conflicts`]). The queue never waits for PostgreSQL
//! (unless you choose [`Overflow::Block`]): when it is unreachable, rows stay buffered and
//! are retried, with a warning and [`RecordStats::unreachable`].
//!
//! # The states
//!
//! See [`JobState`] and the [`state`] module for the diagram. The writer enforces the order:
//! a change applies only if it is newer (attempt, then state order) than the stored one, in
//! the buffer and in SQL alike, so out-of-order and repeated writes are harmless.
//!
//! | hook | state |
//! |---|---|
//! | `after_enqueue` (no delay / delay) | `enqueued` / `delayed` (a retry's own enqueue is not recorded: `retrying` says it) |
//! | `before_process_message` | `running`, attempt = Dramatiq's `retries` + 1 |
//! | `before_ack`, actor failed, retry scheduled | `retrying`, with `eta` and the error |
//! | `before_ack`, actor succeeded / never ran | `succeeded` / `skipped` |
//! | `before_nack`, retries exhausted | `dead` |
//! | `before_nack`, never ran (`max_age` passed, a middleware skipped it) | `skipped` |
//! | `before_nack`, otherwise (`throws`, `retry_when`, bad arguments, a middleware) | `failed` |
//! | [`Records::requeued`] (after an operator requeued dead letters) | `enqueued` |
//!
//! Messages produced elsewhere (Python Dramatiq) are recorded from their first run: the
//! middleware writes the record, whoever produced the message.
//!
//! ```no_run
//! use actor_runtime::records::Records;
//! use actor_runtime::{Broker, Worker};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = Broker::stub();
//! let records = Records::builder("postgres://postgres@127.0.0.1/test")
//!     .schema("jobs")
//!     .migrate(true)
//!     .build()
//!     .await?;
//! broker.add_middleware(records.recorder());
//! let worker = Worker::new(broker.clone()).start().await?;
//! // ... later: what happened to that email?
//! if let Some(job) = records.job("5b0c5a9e-...").await? {
//!     println!("{} after {} attempts", job.state, job.attempt);
//! }
//! worker.stop().await?;
//! records.close().await;
//! # Ok(()) }
//! ```

mod buffer;
mod builder;
mod flush;
mod metrics;
mod migrate;
mod prune;
mod query;
mod recorder;
pub mod state;

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

pub use buffer::{ErrorEntry, Overflow};
pub use builder::RecordsBuilder;
pub use metrics::RecordStats;
pub use migrate::MIGRATIONS;
pub use prune::Retention;
pub use query::{JobFilter, JobRecord};
pub use recorder::Recorder;
pub use state::JobState;

use buffer::Buffer;
use builder::Config;
use metrics::Metrics;
pub(crate) use recorder::RunStart;

/// What can go wrong talking to the records' database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// PostgreSQL refused or could not be reached.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// It did not answer in time.
    #[error("PostgreSQL did not answer in time")]
    Timeout,
    /// A schema name that is not a plain identifier.
    #[error("invalid schema name `{0}`: use letters, digits and `_`, not starting with a digit")]
    InvalidSchema(String),
    /// The broker refused (requeueing dead letters).
    #[error(transparent)]
    Broker(#[from] crate::Error),
    /// A stored row that does not read back (a state this version does not know).
    #[error("unreadable record: {0}")]
    Unreadable(String),
}

/// The job records: the handle that builds the [`Recorder`] middleware, flushes, queries and
/// prunes. Clones share one buffer, one flusher and one connection.
#[derive(Clone)]
pub struct Records {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("table", &self.inner.table)
            .finish()
    }
}

pub(crate) struct Inner {
    config: Config,
    /// `"schema".job_executions`, quoted.
    table: String,
    upsert: String,
    /// The plain insert tried first for fresh rows.
    insert: String,
    optimism: flush::Optimism,
    /// The flusher's statements, prepared on the current connection.
    prepared: Mutex<Option<Arc<flush::Prepared>>>,
    buffer: Buffer,
    metrics: Arc<Metrics>,
    client: Mutex<Option<Arc<Client>>>,
    flushing: Mutex<()>,
    stop: CancellationToken,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    /// The connection, made (again) if needed.
    async fn client(&self) -> Result<Arc<Client>, RecordsError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let connect = tokio_postgres::connect(&self.config.url, NoTls);
        let (client, connection) = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| RecordsError::Timeout)??;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "job records: connection closed");
            }
        });
        let commit = if self.config.durable_commits {
            "on"
        } else {
            "off"
        };
        client
            .batch_execute(&format!(
                "SET search_path TO {}; SET application_name TO 'actor-runtime records'; \
                 SET synchronous_commit TO {commit}",
                self.config.quoted_schema()
            ))
            .await?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Drops the connection after an error that may have broken it.
    async fn forget_client(&self, err: &RecordsError) {
        let broken = match err {
            RecordsError::Postgres(e) => e.is_closed() || e.as_db_error().is_none(),
            RecordsError::Timeout => true,
            _ => false,
        };
        if broken {
            *self.client.lock().await = None;
        }
    }
}

impl Records {
    /// Starts configuring records in the database at `url`
    /// (`postgres://user:password@host:port/database`).
    pub fn builder(url: impl Into<String>) -> RecordsBuilder {
        RecordsBuilder::new(url.into())
    }

    /// The middleware that records every message a worker (or this process's producers)
    /// touch: add it with [`Broker::add_middleware`](crate::Broker::add_middleware).
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.inner.clone())
    }

    /// Writes every buffered change now (a flush interval need not pass).
    pub async fn flush(&self) -> Result<(), RecordsError> {
        flush::flush_all(&self.inner).await
    }

    /// The recorder's counters.
    pub fn stats(&self) -> RecordStats {
        self.inner.metrics.snapshot()
    }

    /// The schema the table lives in.
    pub fn schema(&self) -> &str {
        &self.inner.config.schema
    }

    /// Stops the flusher after a final flush (bounded by the builder's shutdown timeout).
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let flusher = self.inner.flusher.lock().await.take();
        if let Some(flusher) = flusher {
            let _ = flusher.await;
        }
    }
}
