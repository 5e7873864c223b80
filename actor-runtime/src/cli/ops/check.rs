//! `check`: what a worker started now would use (the broker, its redacted URL, database and
//! namespace, the worker settings, queues and actors) and whether the broker answers.

use std::io::Write;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::broker::{human_duration, BrokerInfo};
use crate::cli::args::CheckArgs;
use crate::cli::settings::{self, WorkerSettings};
use crate::cli::{consumed, env_var, Exit, Failure, NO_ACTORS};
use crate::registry::Registry;
use crate::worker::{default_max_abandoned_threads, DEFAULT_PREFETCH_BYTES};

/// Whether the broker answered, and how fast (ms), or why not.
type Connection = Result<f64, String>;

/// Resolves the settings as the worker does (a bad one is exit 2), prints them and the
/// broker's description, then pings the broker: exit 0 if it answers, 3 if not.
pub(super) fn check(args: CheckArgs, registry: &Registry) -> Result<Exit, Failure> {
    let settings =
        settings::resolve(&args.worker, &env_var).map_err(|err| Failure::usage(err.to_string()))?;
    settings::check_broker_env(&env_var).map_err(|err| Failure::usage(err.to_string()))?;
    if registry.is_empty() {
        return Err(Failure::usage(NO_ACTORS));
    }
    let broker = crate::cli::broker()?;
    let info = broker.describe();
    let runtime = super::runtime()?;
    let connection = runtime.block_on(async {
        let started = Instant::now();
        let answer = broker.ping().await;
        broker.close().await;
        answer
            .map(|()| started.elapsed().as_micros() as f64 / 1000.0)
            .map_err(|e| e.to_string())
    });
    let (queues, actors) = consumed(&settings, registry);
    let mut out = Vec::new();
    if args.output.json {
        let report = json!({
            "broker": broker_json(&info),
            "connection": match &connection {
                Ok(ms) => json!({"ok": true, "ms": ms}),
                Err(error) => json!({"ok": false, "error": error}),
            },
            "worker": worker_json(&settings),
            "queues": queues,
            "actors": actors,
        });
        let _ = writeln!(out, "{report}");
    } else {
        write_text(&mut out, &info, &connection, &settings, &queues, &actors);
    }
    std::io::stdout()
        .lock()
        .write_all(&out)
        .map_err(super::io_failure)?;
    match connection {
        Ok(_) => Ok(Exit::Ok),
        Err(error) => {
            tracing::error!(%error, "the broker does not answer");
            Ok(Exit::Connection)
        }
    }
}

fn broker_json(info: &BrokerInfo) -> Value {
    let settings: Map<String, Value> = info
        .settings
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.as_str().into()))
        .collect();
    json!({
        "kind": info.kind,
        "url": info.url,
        "db": info.db,
        "namespace": info.namespace,
        "settings": settings,
    })
}

fn worker_json(settings: &WorkerSettings) -> Value {
    json!({
        "processes": settings.processes,
        "threads": settings.threads,
        // null: adaptive.
        "prefetch": settings.prefetch,
        "prefetch_mb": prefetch_mb(settings),
        "shutdown_timeout": human_duration(settings.shutdown_timeout),
        "max_abandoned_threads": max_abandoned_threads(settings),
        "max_memory_mb": settings.max_memory_mb,
        "metrics_addr": settings.metrics_addr.map(|a| a.to_string()),
        "pid_file": settings.pid_file.as_ref().map(|p| p.display().to_string()),
    })
}

fn prefetch_mb(settings: &WorkerSettings) -> usize {
    settings.prefetch_mb.unwrap_or(DEFAULT_PREFETCH_BYTES >> 20)
}

fn max_abandoned_threads(settings: &WorkerSettings) -> usize {
    settings
        .max_abandoned_threads
        .unwrap_or_else(|| default_max_abandoned_threads(settings.threads))
}

fn write_text(
    out: &mut Vec<u8>,
    info: &BrokerInfo,
    connection: &Connection,
    settings: &WorkerSettings,
    queues: &[String],
    actors: &[&str],
) {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    let mut broker = vec![("kind", info.kind.to_owned())];
    if info.kind == "stub" {
        broker[0].1.push_str(
            " (in memory: each process has its own, so workers share nothing; set REDIS_URL)",
        );
    }
    broker.extend(info.url.clone().map(|url| ("url", url)));
    broker.extend(info.db.map(|db| ("db", db.to_string())));
    broker.extend(info.namespace.clone().map(|ns| ("namespace", ns)));
    broker.extend(info.settings.iter().cloned());
    let worker = vec![
        ("processes", settings.processes.to_string()),
        ("threads", settings.threads.to_string()),
        (
            "prefetch",
            settings
                .prefetch
                .map_or_else(|| "adaptive".to_owned(), |n| n.to_string()),
        ),
        ("prefetch_mb", prefetch_mb(settings).to_string()),
        (
            "shutdown_timeout",
            human_duration(settings.shutdown_timeout),
        ),
        (
            "max_abandoned_threads",
            max_abandoned_threads(settings).to_string(),
        ),
        (
            "max_memory_mb",
            or_none(settings.max_memory_mb.map(|m| m.to_string())),
        ),
        (
            "metrics_addr",
            or_none(settings.metrics_addr.map(|a| a.to_string())),
        ),
        (
            "pid_file",
            or_none(settings.pid_file.as_ref().map(|p| p.display().to_string())),
        ),
    ];
    let width = broker
        .iter()
        .chain(&worker)
        .map(|(key, _)| key.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "broker");
    for (key, value) in &broker {
        let _ = writeln!(out, "  {key:<width$}  {value}");
    }
    let _ = match connection {
        Ok(ms) => writeln!(out, "connection: ok ({ms:.1} ms)"),
        Err(error) => writeln!(out, "connection: FAILED: {error}"),
    };
    let _ = writeln!(out, "worker");
    for (key, value) in &worker {
        let _ = writeln!(out, "  {key:<width$}  {value}");
    }
    let _ = writeln!(out, "queues: {}", queues.join(", "));
    let _ = writeln!(out, "actors: {}", actors.join(", "));
}
