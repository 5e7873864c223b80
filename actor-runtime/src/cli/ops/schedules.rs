//! `scheduler` (run the periodic jobs' scheduler, one replica of any number) and `schedules`
//! (the declared schedules with their last and next run).

use std::io::Write;

use serde_json::{json, Value};

use super::dead_letters::utc;
use crate::broker::{human_duration, Broker};
use crate::cli::Failure;
use crate::periodic::Scheduler;

/// Runs the scheduler of every declared schedule until SIGTERM or SIGINT.
pub(super) async fn run_scheduler(broker: &Broker) -> Result<(), Failure> {
    let scheduler = Scheduler::from_declared(broker.clone()).map_err(Failure::from)?;
    if scheduler.schedules().is_empty() {
        return Err(Failure::usage(
            "no schedules are declared in this program (see `schedule!`)",
        ));
    }
    for schedule in scheduler.schedules() {
        tracing::info!(schedule = schedule.name(), when = %schedule.describe(), backfill = %human_duration(schedule.backfill_window()), "schedule");
    }
    let running = scheduler.start();
    let signal = crate::worker::wait_for_signal()
        .await
        .map_err(Failure::from)?;
    tracing::info!(signal, "stopping the scheduler");
    running.stop().await.map_err(Failure::from)
}

/// Lists the declared schedules with their last and next run.
pub(super) async fn schedules(
    broker: &Broker,
    json_output: bool,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let scheduler = Scheduler::from_declared(broker.clone()).map_err(Failure::from)?;
    let rows = scheduler.status().await.map_err(Failure::from)?;
    if json_output {
        let all: Vec<Value> = rows
            .iter()
            .map(|s| {
                json!({"name": s.name, "when": s.when, "last_run": s.last_run, "last_message_id": s.last_message_id, "next_run": s.next_run, "backfill_ms": s.backfill.as_millis() as u64})
            })
            .collect();
        let _ = writeln!(out, "{}", json!({ "schedules": all }));
        return Ok(());
    }
    if rows.is_empty() {
        let _ = writeln!(out, "no schedules are declared in this program");
        return Ok(());
    }
    let width = rows.iter().map(|s| s.name.len()).max().unwrap_or(0).max(8);
    let when_width = rows.iter().map(|s| s.when.len()).max().unwrap_or(0).max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:<when_width$}  {:<20}  NEXT RUN",
        "SCHEDULE", "WHEN", "LAST RUN"
    );
    let show = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), utc);
    for s in &rows {
        let _ = writeln!(
            out,
            "{:<width$}  {:<when_width$}  {:<20}  {}",
            s.name,
            s.when,
            show(s.last_run),
            show(s.next_run)
        );
    }
    Ok(())
}
