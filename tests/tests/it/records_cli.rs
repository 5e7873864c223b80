//! The worker CLI with `DATABASE_URL`: it records every message, `migrate` creates the
//! table (twice is fine), and `jobs show|list` read the records.

use std::time::Duration;

use actor_runtime::Message;
use serde_json::{json, Value};

use crate::support::cli::{kill, Fixture, Proc, WORKER};
use crate::support::eventually;
use crate::support::postgres::{database_url, drop_schema, schema_name};

/// Runs the CLI with the fixture's broker and `db`'s records: (exit code, stdout, stderr).
async fn cli(fx: &Fixture, db: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(WORKER)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("APP_ENV")
        .envs(fx.env())
        .envs(db.iter().copied())
        .output()
        .await
        .expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn cli_json(fx: &Fixture, db: &[(&str, &str)], args: &[&str]) -> Value {
    let (code, stdout, stderr) = cli(fx, db, args).await;
    assert_eq!(code, 0, "{args:?} failed:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_worker_with_database_url_records_what_it_runs() {
    let fx = Fixture::new();
    let (url, schema) = (database_url(), schema_name());
    let db = [
        ("DATABASE_URL", url.as_str()),
        ("RECORDS_SCHEMA", schema.as_str()),
        ("RECORDS_ARGS", "cli_record"),
    ];
    let migrated = cli_json(&fx, &db, &["migrate", "--json"]).await;
    assert_eq!(
        migrated,
        json!({"schema": schema, "applied": ["0001_job_executions", "0002_job_links", "0003_byte_order_keys"]})
    );
    let again = cli_json(&fx, &db, &["migrate", "--json"]).await;
    assert_eq!(again["applied"], json!([]));

    let mut env = fx.env();
    env.extend(db);
    let mut worker = Proc::spawn(WORKER, &["-p", "1"], &env);
    worker.wait_message("worker started").await;
    let key = uuid::Uuid::new_v4().to_string();
    let sent = fx
        .broker
        .enqueue(Message::new("cli", "cli_record", vec![json!(key)]), None)
        .await
        .unwrap();
    let id = sent.message_id.clone();
    eventually(Duration::from_secs(30), "the success record", || {
        let (fx, db, id) = (&fx, &db, id.clone());
        async move {
            let (code, stdout, _) = cli(fx, db, &["jobs", "show", &id, "--json"]).await;
            code == 0
                && serde_json::from_str::<Value>(&stdout).is_ok_and(|j| j["state"] == "succeeded")
        }
    })
    .await;
    let job = cli_json(&fx, &db, &["jobs", "show", &id, "--json"]).await;
    assert_eq!(job["actor_name"], "cli_record");
    assert_eq!(job["args"], json!({"args": [key], "kwargs": {}}));
    let listed = cli_json(
        &fx,
        &db,
        &[
            "jobs",
            "list",
            "--actor",
            "cli_record",
            "--state",
            "succeeded",
            "--since",
            "1h",
            "--json",
        ],
    )
    .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let (code, text, _) = cli(&fx, &db, &["jobs", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(text.contains("succeeded") && text.contains(&id), "{text}");
    let (code, _, stderr) = cli(&fx, &db, &["jobs", "show", "no-such-id"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("no job record"), "{stderr}");

    // A dead letter, requeued by the operator: its record goes back to `enqueued`.
    let failing = fx
        .broker
        .enqueue(Message::new("cli", "cli_fail", vec![json!(key)]), None)
        .await
        .unwrap();
    let id = failing.message_id.clone();
    eventually(Duration::from_secs(30), "the dead record", || {
        let (fx, db, id) = (&fx, &db, id.clone());
        async move {
            let (code, stdout, _) = cli(fx, db, &["jobs", "show", &id, "--json"]).await;
            code == 0 && serde_json::from_str::<Value>(&stdout).is_ok_and(|j| j["state"] == "dead")
        }
    })
    .await;
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0), "{}", worker.dump());
    fx.wait_stats("cli", "the dead letter", |s| s.dead == 1)
        .await;
    let requeued = cli_json(
        &fx,
        &db,
        &["dead-letters", "requeue", "cli", "--id", &id, "--json"],
    )
    .await;
    assert_eq!(requeued["requeued"], 1);
    let job = cli_json(&fx, &db, &["jobs", "show", &id, "--json"]).await;
    assert_eq!(job["state"], "enqueued");
    drop_schema(&schema).await;
    fx.cleanup().await;
}
