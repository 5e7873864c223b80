//! `queues`: counts per queue and the workers, live or stale.

use std::io::Write;

use serde_json::{json, Value};

use super::declared;
use crate::broker::{Broker, WorkerInfo};
use crate::cli::Failure;
use crate::message::now_ms;

pub(super) async fn queues(
    broker: &Broker,
    names: &[String],
    json_output: bool,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        declared(broker, name).await?;
        rows.push((name, broker.stats(name).await.map_err(Failure::from)?));
    }
    let workers = broker.workers().await.map_err(Failure::from)?;
    let now = now_ms();
    if json_output {
        let queues: Vec<Value> = rows
            .iter()
            .map(|(name, s)| {
                json!({"name": name, "ready": s.ready, "delayed": s.delayed, "in_flight": s.in_flight, "dead": s.dead})
            })
            .collect();
        let workers = workers.as_ref().map(|all| {
            all.iter()
                .map(|w| worker_json(w, now))
                .collect::<Vec<Value>>()
        });
        let _ = writeln!(out, "{}", json!({"queues": queues, "workers": workers}));
        return Ok(());
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}",
        "QUEUE", "READY", "DELAYED", "IN-FLIGHT", "DEAD"
    );
    for (name, s) in &rows {
        let _ = writeln!(
            out,
            "{name:<width$}  {:>9}  {:>9}  {:>9}  {:>9}",
            s.ready, s.delayed, s.in_flight, s.dead
        );
    }
    match workers {
        None => {
            let _ = writeln!(out, "\nworkers: unknown (this broker keeps no heartbeats)");
        }
        Some(workers) => {
            let stale = workers.iter().filter(|w| w.stale).count();
            let _ = writeln!(
                out,
                "\nworkers: {} live{}",
                workers.len() - stale,
                if stale > 0 {
                    format!(", {stale} stale (missed heartbeats: dead or stuck; their messages come back once the heartbeat timeout passes)")
                } else {
                    String::new()
                }
            );
            for w in &workers {
                let _ = writeln!(
                    out,
                    "  {}  heartbeat {} ago{}{}{}",
                    w.id,
                    ago(now, w.last_heartbeat),
                    if w.stale { "  STALE" } else { "" },
                    w.in_flight
                        .map_or(String::new(), |n| format!("  in flight {n}")),
                    if w.queues.is_empty() {
                        String::new()
                    } else {
                        format!("  queues {}", w.queues.join(","))
                    }
                );
            }
        }
    }
    Ok(())
}

fn worker_json(w: &WorkerInfo, now: u64) -> Value {
    json!({
        "id": w.id,
        "last_heartbeat": w.last_heartbeat,
        "age_ms": now.saturating_sub(w.last_heartbeat),
        "queues": w.queues,
        "in_flight": w.in_flight,
        "stale": w.stale,
    })
}

fn ago(now: u64, then: u64) -> String {
    let ms = now.saturating_sub(then);
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}
