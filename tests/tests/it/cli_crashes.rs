//! A worker process that dies, on Redis: its supervisor requeues its messages at once, a
//! second Ctrl-C cancels and requeues rather than kills, and `queues` tells a worker that
//! missed its heartbeats from a live one. Each test has its own namespace.

use std::time::{Duration, Instant};

use actor_runtime::Message;
use serde_json::{json, Value};

use crate::support::cli::{kill, ready_workers, Fixture, Proc, WORKER};

/// Enqueues `n` messages of `cli_sleep` that sleep `ms` each.
async fn sleepers(f: &Fixture, n: usize, ms: u64) {
    for i in 0..n {
        let message = Message::new("cli", "cli_sleep", vec![json!(format!("s{i}")), json!(ms)]);
        f.broker.enqueue(message, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_messages_are_requeued_at_once() {
    let f = Fixture::new();
    sleepers(&f, 2, 3000).await;
    // The default heartbeat timeout (60 s): only the supervisor can bring them back in time.
    let mut supervisor = f.spawn(&["-p", "2", "-t", "1", "--prefetch", "1", "-Q", "cli"]);
    let pids = ready_workers(&mut supervisor, 2).await;
    f.wait_stats("cli", "one message running in each worker", |s| {
        s.in_flight == 2 && s.ready == 0
    })
    .await;

    let killed = Instant::now();
    kill("KILL", pids[0]);
    let line = supervisor
        .wait_message("requeued the messages of a dead worker process")
        .await;
    assert_eq!(line["count"], 1, "{line}");
    assert_eq!(line["worker"], 0, "{line}");
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    f.wait_recorded(2).await;

    kill("TERM", supervisor.pid());
    assert_eq!(
        supervisor.exit().await.code(),
        Some(0),
        "{}",
        supervisor.dump()
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cancels_and_requeues_running_messages_before_any_kill() {
    let f = Fixture::new();
    sleepers(&f, 2, 60_000).await;
    let mut supervisor = f.spawn(&["-p", "2", "-t", "1", "--prefetch", "1", "-Q", "cli"]);
    ready_workers(&mut supervisor, 2).await;
    f.wait_stats("cli", "one message running in each worker", |s| {
        s.in_flight == 2 && s.ready == 0
    })
    .await;

    kill("TERM", supervisor.pid());
    // Each worker took the first signal (it would wait 30 s for its message).
    for _ in 0..2 {
        supervisor.wait_message("stopping gracefully").await;
    }
    let second = Instant::now();
    kill("INT", supervisor.pid());
    for _ in 0..2 {
        supervisor
            .wait_message("second signal: cancelling running messages")
            .await;
    }
    let status = supervisor.exit().await;
    assert_eq!(status.code(), Some(1), "{}", supervisor.dump());
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "{:?}",
        second.elapsed()
    );
    let logs = supervisor.dump();
    assert!(!logs.contains("killing it"), "{logs}");

    // Back in the queue now, not once a heartbeat times out; and no worker is left listed.
    let stats = f.stats("cli").await;
    assert_eq!((stats.ready, stats.in_flight), (2, 0), "{stats:?}");
    let queues = f.cli_json(&["queues", "cli", "--json"]).await;
    let others: Vec<&Value> = queues["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["id"] != f.broker.worker_id().unwrap())
        .collect();
    assert!(others.is_empty(), "{queues}");
    f.cleanup().await;
}

/// `queues --json` with the heartbeat timeout the workers use.
async fn queues(f: &Fixture, heartbeat_timeout_ms: &str) -> Value {
    let output = tokio::process::Command::new(WORKER)
        .args(["queues", "cli", "--json"])
        .env_remove("RUST_LOG")
        .envs(f.env())
        .env("HEARTBEAT_TIMEOUT_MS", heartbeat_timeout_ms)
        .output()
        .await
        .expect("run the CLI");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_marks_a_worker_that_missed_its_heartbeats_as_stale() {
    let f = Fixture::new();
    // Beats every 2 s; stale after 3 s without one; gone after 8 s.
    let timeout = "8000";
    let mut env = f.env();
    env.push(("HEARTBEAT_TIMEOUT_MS", timeout));
    let mut worker = Proc::spawn(WORKER, &["-p", "1", "-Q", "cli"], &env);
    worker.wait_message("worker started").await;
    let live = queues(&f, timeout).await;
    let workers = live["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{live}");
    assert_eq!(workers[0]["stale"], false, "{live}");
    let id = workers[0]["id"].clone();

    kill("KILL", worker.pid());
    worker.exit().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dead = queues(&f, timeout).await;
    let workers = dead["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{dead}");
    assert_eq!(workers[0]["id"], id);
    assert_eq!(workers[0]["stale"], true, "{dead}");
    f.cleanup().await;
}
