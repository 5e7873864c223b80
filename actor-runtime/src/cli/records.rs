//! `DATABASE_URL` turns on the job records in a worker process (feature `postgres`).

use crate::broker::Broker;
use crate::records::{Overflow, Records};

use super::{env_var, Failure};

/// Builds the records from the environment and adds their recorder to `broker`, when
/// `DATABASE_URL` is set:
///
/// - `RECORDS_SCHEMA`: the table's schema [default: public];
/// - `RECORDS_MIGRATE`: `1`/`true` applies the migrations at start-up [default: no];
/// - `RECORDS_ARGS`: actors whose arguments are recorded, comma-separated [default: none];
/// - `RECORDS_OVERFLOW`: `drop` or `block`, when the buffer is full [default: drop].
///
/// PostgreSQL being down does not stop the worker: records wait in the buffer.
pub(crate) async fn install(broker: &Broker) -> Result<Option<Records>, Failure> {
    let Some(url) = env_var("DATABASE_URL").filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    let overflow = match env_var("RECORDS_OVERFLOW").as_deref() {
        None | Some("") | Some("drop") => Overflow::Drop,
        Some("block") => Overflow::Block,
        Some(other) => {
            return Err(Failure::usage(format!(
                "RECORDS_OVERFLOW: expected `drop` or `block`, got `{other}`"
            )))
        }
    };
    let migrate = matches!(
        env_var("RECORDS_MIGRATE").as_deref(),
        Some("1" | "true" | "yes")
    );
    let args: Vec<String> = env_var("RECORDS_ARGS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let mut builder = Records::builder(url)
        .overflow(overflow)
        .record_args_of(args);
    if let Some(schema) = env_var("RECORDS_SCHEMA").filter(|s| !s.is_empty()) {
        builder = builder.schema(schema);
    }
    let records = match builder.clone().migrate(migrate).build().await {
        Ok(records) => records,
        Err(err @ crate::records::RecordsError::InvalidSchema(_)) => {
            return Err(Failure::usage(err.to_string()))
        }
        Err(err) => {
            // Migrations need the database: without it, start anyway and buffer.
            tracing::warn!(error = %err, "job records: cannot migrate now; recording anyway, records are retried");
            builder
                .build()
                .await
                .map_err(|e| Failure::usage(e.to_string()))?
        }
    };
    tracing::info!(
        schema = records.schema(),
        "job records: recording to PostgreSQL"
    );
    broker.add_middleware(records.recorder());
    expose(&records);
    Ok(Some(records))
}

/// This process's records, for `/metrics`.
static RECORDS: std::sync::OnceLock<Records> = std::sync::OnceLock::new();

/// Remembers `records` for [`with_metrics`].
pub(crate) fn expose(records: &Records) {
    let _ = RECORDS.set(records.clone());
}

/// `exposition` (OpenMetrics text) with the recorder's counters added before its `# EOF`.
pub(crate) fn with_metrics(exposition: String) -> String {
    let Some(records) = RECORDS.get() else {
        return exposition;
    };
    let stats = records.stats();
    let mut out = exposition.trim_end().trim_end_matches("# EOF").to_owned();
    let mut family = |name: &str, kind: &str, help: &str, value: u64| {
        let series = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{series} {value}\n"
        ));
    };
    family(
        "dramatiq_job_records_written",
        "counter",
        "Job record rows written to PostgreSQL.",
        stats.written,
    );
    family(
        "dramatiq_job_records_dropped",
        "counter",
        "Job record changes dropped because the buffer was full.",
        stats.dropped,
    );
    family(
        "dramatiq_job_records_flush_errors",
        "counter",
        "Job record batches that could not be written (retried).",
        stats.flush_errors,
    );
    family(
        "dramatiq_job_records_insert_conflicts",
        "counter",
        "Job record batches tried as a plain INSERT that met a stored record and went again as the upsert.",
        stats.insert_conflicts,
    );
    family(
        "dramatiq_job_records_buffered",
        "gauge",
        "Job record rows waiting to be written.",
        stats.buffered,
    );
    family(
        "dramatiq_job_records_unreachable",
        "gauge",
        "1 while the last flush could not reach PostgreSQL.",
        u64::from(stats.unreachable),
    );
    out.push_str("# EOF\n");
    out
}
