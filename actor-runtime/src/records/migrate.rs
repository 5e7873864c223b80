//! The schema's migrations: plain `.sql` files shipped in the crate's `migrations/` folder,
//! applied in order, each idempotent.

use super::{Records, RecordsError};

/// The migrations, `(name, SQL)`, in order. The SQL names no schema: put the target schema
/// first on the `search_path` to apply it elsewhere than `public` (as [`Records::migrate`]
/// does), so a Python application's migration tool can apply the same files.
///
/// ```
/// let (name, sql) = actor_runtime::records::MIGRATIONS[0];
/// assert_eq!(name, "0001_job_executions");
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS job_executions"));
/// ```
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_job_executions",
        include_str!("../../migrations/0001_job_executions.sql"),
    ),
    (
        "0002_job_links",
        include_str!("../../migrations/0002_job_links.sql"),
    ),
    (
        "0003_byte_order_keys",
        include_str!("../../migrations/0003_byte_order_keys.sql"),
    ),
];

/// Serialises concurrent migrations (several workers starting at once): any constant of
/// our own, the same in every process.
const LOCK_KEY: i64 = 0x006a_6f62_5f72_6563;

impl Records {
    /// Creates the schema if missing and applies the migrations not yet recorded in its
    /// `job_records_migrations` table, under an advisory lock, in one transaction. Returns
    /// the names applied now (none the second time).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), actor_runtime::records::RecordsError> {
    /// let records = actor_runtime::records::Records::builder("postgres://postgres@127.0.0.1/test")
    ///     .build()
    ///     .await?;
    /// let applied = records.migrate().await?;
    /// println!("applied {applied:?}");
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<Vec<&'static str>, RecordsError> {
        let client = self.inner.client().await?;
        let schema = self.inner.config.quoted_schema();
        transaction(
            &client,
            &format!(
                "BEGIN; SELECT pg_advisory_xact_lock({LOCK_KEY}); \
                 CREATE SCHEMA IF NOT EXISTS {schema}; \
                 CREATE TABLE IF NOT EXISTS {schema}.job_records_migrations ( \
                   name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); \
                 COMMIT"
            ),
        )
        .await?;
        let mut applied = Vec::new();
        for (name, sql) in MIGRATIONS {
            let done = client
                .query_opt(
                    &format!("SELECT 1 FROM {schema}.job_records_migrations WHERE name = $1"),
                    &[name],
                )
                .await?
                .is_some();
            if done {
                continue;
            }
            // The file is idempotent, so a race with another process is harmless; the lock
            // keeps two from creating the same index at once.
            transaction(
                &client,
                &format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({LOCK_KEY}); \
                     SET LOCAL search_path TO {schema}; {sql}; \
                     INSERT INTO {schema}.job_records_migrations (name) VALUES ('{name}') \
                       ON CONFLICT DO NOTHING; COMMIT"
                ),
            )
            .await?;
            applied.push(*name);
        }
        Ok(applied)
    }
}

/// Runs `sql` (`BEGIN; ..; COMMIT`), rolling back on failure so the connection stays usable.
async fn transaction(client: &tokio_postgres::Client, sql: &str) -> Result<(), RecordsError> {
    if let Err(err) = client.batch_execute(sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(err.into());
    }
    Ok(())
}
