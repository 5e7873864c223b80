//! `migrate` and `jobs show|list|prune`: the job records in PostgreSQL (feature `postgres`).
//! They need DATABASE_URL, not the broker.

use std::io::Write;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{io_failure, runtime};
use crate::cli::args::OutputArgs;
use crate::cli::{env_var, Exit, Failure};
use crate::records::{JobFilter, JobRecord, JobState, Records, RecordsError, Retention};

/// Where the records are.
#[derive(Debug, Default, Args)]
pub(crate) struct DatabaseArgs {
    /// The database: `postgres://user[:password]@host[:port]/database` [env: DATABASE_URL].
    #[arg(long, value_name = "URL")]
    pub(crate) database_url: Option<String>,
    /// The schema of `job_executions` [env: RECORDS_SCHEMA] [default: public].
    #[arg(long, value_name = "SCHEMA")]
    pub(crate) schema: Option<String>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// One job's record and error history, by message id.
    Show {
        /// The message id.
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Recent jobs, newest first.
    List {
        /// Only this actor's.
        #[arg(long)]
        actor: Option<String>,
        /// Only this queue's.
        #[arg(long)]
        queue: Option<String>,
        /// Only those in this state (enqueued, delayed, running, retrying, succeeded,
        /// failed, dead, skipped, cancelled).
        #[arg(long)]
        state: Option<JobState>,
        /// Only those recorded within this long (`1h`, `30m`, `2d`).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
        since: Option<Duration>,
        /// Only those whose last error contains this text (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        error: Option<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Delete finished records older than their retention, in batches.
    Prune {
        /// Keep succeeded, skipped and cancelled records this long.
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::duration::parse_duration)]
        keep_succeeded: Duration,
        /// Keep failed and dead records this long.
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = crate::duration::parse_duration)]
        keep_failed: Duration,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn failure(err: RecordsError) -> Failure {
    let exit = match err {
        RecordsError::InvalidSchema(_) => Exit::Usage,
        _ => Exit::Connection,
    };
    Failure {
        exit,
        message: format!("job records: {err}"),
    }
}

/// Records at the database the arguments or the environment name.
pub(crate) async fn open(db: &DatabaseArgs) -> Result<Records, Failure> {
    let url = db
        .database_url
        .clone()
        .or_else(|| env_var("DATABASE_URL"))
        .ok_or_else(|| {
            Failure::usage(
                "the job records need a database: set DATABASE_URL or pass --database-url",
            )
        })?;
    let schema = db
        .schema
        .clone()
        .or_else(|| env_var("RECORDS_SCHEMA"))
        .unwrap_or_else(|| "public".into());
    Records::builder(url)
        .schema(schema)
        .build()
        .await
        .map_err(failure)
}

fn print(out: &[u8]) -> Result<Exit, Failure> {
    std::io::stdout()
        .lock()
        .write_all(out)
        .map_err(io_failure)?;
    Ok(Exit::Ok)
}

/// With `DATABASE_URL` set, the message ids of the dead letters of `queue` that `requeue`
/// will move (`broker_ids`, or all); `None` without job records.
pub(crate) async fn requeued_ids(
    broker: &crate::Broker,
    queue: &str,
    broker_ids: Option<&[String]>,
) -> Result<Option<Vec<String>>, Failure> {
    if env_var("DATABASE_URL").is_none_or(|url| url.is_empty()) {
        return Ok(None);
    }
    let dead = broker
        .dead_letters(queue, i64::MAX as usize)
        .await
        .map_err(Failure::from)?;
    Ok(Some(
        dead.into_iter()
            .filter(|d| broker_ids.is_none_or(|ids| ids.contains(&d.id)))
            .filter_map(|d| d.message.ok().map(|m| m.message_id))
            .collect(),
    ))
}

/// Marks the records of requeued messages `enqueued`; a failure is a warning (the messages
/// moved already).
pub(crate) async fn mark_requeued(message_ids: &[String]) {
    let result = match open(&DatabaseArgs::default()).await {
        Ok(records) => {
            let marked = records.requeued(message_ids).await;
            records.close().await;
            marked.map_err(|e| e.to_string())
        }
        Err(failure) => Err(failure.message),
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, "job records: the requeued messages' records stay failed/dead");
    }
}

pub(crate) fn migrate(db: DatabaseArgs) -> Result<Exit, Failure> {
    runtime()?.block_on(async {
        let records = open(&db).await?;
        let applied = records.migrate().await.map_err(failure);
        records.close().await;
        let applied = applied?;
        let out = if db.output.json {
            format!(
                "{}\n",
                json!({"schema": records.schema(), "applied": applied})
            )
        } else if applied.is_empty() {
            format!("schema {}: up to date\n", records.schema())
        } else {
            format!(
                "schema {}: applied {}\n",
                records.schema(),
                applied.join(", ")
            )
        };
        print(out.as_bytes())
    })
}

pub(crate) fn jobs(command: JobsCommand) -> Result<Exit, Failure> {
    runtime()?.block_on(async {
        let db = match &command {
            JobsCommand::Show { db, .. }
            | JobsCommand::List { db, .. }
            | JobsCommand::Prune { db, .. } => db,
        };
        let records = open(db).await?;
        let json = db.output.json;
        let result = run(&records, &command, json).await;
        records.close().await;
        print(result?.as_bytes())
    })
}

async fn run(records: &Records, command: &JobsCommand, json: bool) -> Result<String, Failure> {
    match command {
        JobsCommand::Show { id, .. } => match records.job(id).await.map_err(failure)? {
            Some(job) if json => Ok(format!(
                "{}\n",
                serde_json::to_string(&job).unwrap_or_default()
            )),
            Some(job) => Ok(show(&job)),
            None => Err(Failure {
                exit: Exit::Killed,
                message: format!("no job record for message `{id}`"),
            }),
        },
        JobsCommand::List {
            actor,
            queue,
            state,
            since,
            error,
            limit,
            ..
        } => {
            let mut filter = JobFilter::new().limit(*limit);
            filter.actor = actor.clone();
            filter.queue = queue.clone();
            filter.state = *state;
            filter.error = error.clone();
            filter.since = since.and_then(|ago| SystemTime::now().checked_sub(ago));
            let jobs = records.jobs(&filter).await.map_err(failure)?;
            if json {
                return Ok(format!(
                    "{}\n",
                    serde_json::to_string(&jobs).unwrap_or_default()
                ));
            }
            let mut out = format!(
                "{:<36}  {:<9}  {:>7}  {:<24}  {:<24}  {}\n",
                "MESSAGE ID", "STATE", "ATTEMPT", "ACTOR", "RECORDED", "LAST ERROR"
            );
            for job in &jobs {
                let error: String = job
                    .last_error
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect();
                out.push_str(&format!(
                    "{:<36}  {:<9}  {:>7}  {:<24}  {:<24}  {}\n",
                    job.message_id, job.state, job.attempt, job.actor_name, job.created_at, error
                ));
            }
            Ok(out)
        }
        JobsCommand::Prune {
            keep_succeeded,
            keep_failed,
            ..
        } => {
            let retention = Retention {
                succeeded: *keep_succeeded,
                failed: *keep_failed,
                ..Retention::default()
            };
            let deleted = records.prune(retention).await.map_err(failure)?;
            Ok(if json {
                format!("{}\n", json!({"deleted": deleted}))
            } else {
                format!("deleted {deleted} job records\n")
            })
        }
    }
}

/// One job for people.
fn show(job: &JobRecord) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push_str(&format!("{key:<12} {value}\n"));
        }
    };
    line("message_id", Some(job.message_id.clone()));
    line("state", Some(job.state.to_string()));
    line("actor", Some(job.actor_name.clone()));
    line("queue", Some(job.queue_name.clone()));
    line(
        "attempt",
        Some(match job.max_retries {
            Some(max) => format!("{} (max retries {max})", job.attempt),
            None => job.attempt.to_string(),
        }),
    );
    line("enqueued_at", job.enqueued_at.clone());
    line("eta", job.eta.clone());
    line("started_at", job.started_at.clone());
    line("finished_at", job.finished_at.clone());
    line("duration", job.duration_ms.map(|ms| format!("{ms:.1} ms")));
    line("worker", job.worker_id.clone());
    line("parent", job.parent_id.clone());
    line("group", job.group_id.clone());
    line("args", job.args.as_ref().map(|a| a.to_string()));
    line("last_error", job.last_error.clone());
    for error in &job.errors {
        out.push_str(&format!(
            "  attempt {} at {}: {}: {}\n",
            error.attempt, error.at, error.kind, error.message
        ));
    }
    out
}
