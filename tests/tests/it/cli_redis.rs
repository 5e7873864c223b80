//! The worker CLI end to end on Redis: operator commands, a graceful stop across processes
//! that loses nothing, and the supervisor's summed metrics. Each test has its own namespace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actor_runtime::results::{RedisResultBackend, ResultBackend};
use actor_runtime::Message;
use serde_json::json;

use crate::support::cli::{
    http_get, kill, metrics_url, pid_of, ready_workers, Fixture, Proc, DEADLINE, WORKER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_queues_and_dead_letters_work_from_the_command_line() {
    let f = Fixture::new();

    let sent = f
        .cli_json(&["enqueue", "cli_record", "--args", r#"["k1"]"#, "--json"])
        .await;
    assert_eq!(sent["queue_name"], "cli");
    assert_eq!(sent["args"], json!(["k1"]));
    for key in ["bad1", "bad2"] {
        let args = format!(r#"["{key}"]"#);
        f.cli_json(&["enqueue", "cli_fail", "--args", &args, "--json"])
            .await;
    }
    // An actor this binary does not know needs its queue (a Python actor, say).
    let (code, _, stderr) = f.cli(&["enqueue", "py_actor", "--args", "[1]"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pass --queue"), "{stderr}");
    let (code, stdout, stderr) = f
        .cli(&[
            "enqueue",
            "py_actor",
            "--queue",
            "python",
            "--kwargs",
            r#"{"x": 1}"#,
            "--delay",
            "60000",
        ])
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("enqueued py_actor on python"),
        "{stdout}"
    );
    assert_eq!(f.stats("python").await.delayed, 1);

    let queues = f.cli_json(&["queues", "cli", "python", "--json"]).await;
    assert_eq!(
        queues["queues"],
        json!([
            {"name": "cli", "ready": 3, "delayed": 0, "in_flight": 0, "dead": 0},
            {"name": "python", "ready": 0, "delayed": 1, "in_flight": 0, "dead": 0},
        ])
    );

    let mut worker = f.spawn(&["-p", "1", "-Q", "cli"]);
    worker.wait_message("worker started").await;
    f.wait_stats("cli", "the worker to drain `cli`", |s| {
        s.ready == 0 && s.in_flight == 0 && s.dead == 2
    })
    .await;
    assert_eq!(f.recorded(), HashMap::from([("k1".to_owned(), 1)]));
    // The worker heartbeats, so `queues` sees it.
    let queues = f.cli_json(&["queues", "cli", "--json"]).await;
    let workers = queues["workers"]
        .as_array()
        .expect("Redis knows its workers");
    assert!(!workers.is_empty(), "{queues}");
    let (code, text, _) = f.cli(&["queues", "cli"]).await;
    assert_eq!(code, 0);
    assert!(text.starts_with("QUEUE"), "{text}");
    assert!(text.contains("live"), "{text}");
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0), "{}", worker.dump());

    let dead = f.cli_json(&["dead-letters", "list", "cli", "--json"]).await;
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 2);
    for letter in dead {
        assert_eq!(letter["message"]["actor_name"], "cli_fail");
        assert!(
            letter["reason"]
                .as_str()
                .is_some_and(|r| r.contains("always fails")),
            "{letter}"
        );
    }
    let (code, text, _) = f.cli(&["dead-letters", "list", "cli"]).await;
    assert_eq!(code, 0);
    assert!(text.contains("cli_fail(\"bad1\")"), "{text}");

    let (first, second) = (
        dead[0]["id"].as_str().unwrap(),
        dead[1]["id"].as_str().unwrap(),
    );
    let requeued = f
        .cli_json(&["dead-letters", "requeue", "cli", "--id", first, "--json"])
        .await;
    assert_eq!(requeued["requeued"], 1);
    let stats = f.stats("cli").await;
    assert_eq!((stats.ready, stats.dead), (1, 1));

    let (code, text, stderr) = f
        .cli(&["dead-letters", "purge", "cli", "--id", second])
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(text, "purged 1 dead letter of cli\n");
    let purged = f
        .cli_json(&["dead-letters", "purge", "cli", "--json"])
        .await;
    assert_eq!(purged["purged"], 0);
    assert_eq!(f.stats("cli").await.dead, 0);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_worker_processes_without_losing_a_message() {
    let f = Fixture::new();
    const N: usize = 30;
    for i in 0..N {
        let message = Message::new("cli", "cli_sleep", vec![format!("m{i}").into(), 100.into()]);
        f.broker.enqueue(message, None).await.unwrap();
    }
    let mut supervisor = f.spawn(&["-p", "2", "-t", "2"]);
    f.wait_recorded(4).await;
    kill("TERM", supervisor.pid());
    let status = supervisor.exit().await;
    assert_eq!(status.code(), Some(0), "{}", supervisor.dump());

    // Running messages finished and were acked; prefetched ones went back to the queue.
    let stats = f.stats("cli").await;
    let done = f.recorded();
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    assert_eq!(stats.ready as usize + done.len(), N, "{stats:?} {done:?}");

    let mut worker = f.spawn(&["-p", "1", "-t", "8"]);
    f.wait_recorded(N).await;
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0));
    let done = f.recorded();
    assert_eq!(done.len(), N);
    assert!(done.values().all(|runs| *runs == 1), "ran twice: {done:?}");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_is_restarted_and_its_messages_run() {
    let f = Fixture::new();
    const N: usize = 40;
    for i in 0..N {
        let message = Message::new("cli", "cli_sleep", vec![format!("k{i}").into(), 50.into()]);
        f.broker.enqueue(message, None).await.unwrap();
    }
    // A short heartbeat timeout, so the killed worker's messages come back quickly.
    let mut env = f.env();
    env.push(("HEARTBEAT_TIMEOUT_MS", "1500"));
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2", "-t", "2", "--prefetch", "4"], &env);
    let pids = ready_workers(&mut supervisor, 2).await;
    f.wait_recorded(4).await;

    kill("KILL", pids[0]);
    supervisor
        .wait_message("worker process exited unexpectedly; restarting it")
        .await;
    let ready = supervisor.wait_message("worker process ready").await;
    assert_ne!(pid_of(&ready), pids[0], "a new process took its place");

    // Every message runs, the killed worker's unacked ones after its heartbeat expired.
    f.wait_recorded(N).await;
    f.wait_stats("cli", "the queue to drain", |s| {
        s.ready == 0 && s.in_flight == 0
    })
    .await;
    let done = f.recorded();
    let reruns: usize = done.values().map(|runs| runs - 1).sum();
    assert!(
        reruns <= 4,
        "only the killed worker's prefetch ran twice: {done:?}"
    );
    assert_eq!(f.stats("cli").await.dead, 0);

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
async fn the_supervisor_sums_its_workers_metrics() {
    let f = Fixture::new();
    let mut supervisor = f.spawn(&["-p", "2", "--metrics-addr", "127.0.0.1:0"]);
    let url = metrics_url(&mut supervisor).await;
    for i in 0..10 {
        let message = Message::new("cli", "cli_record", vec![format!("r{i}").into()]);
        f.broker.enqueue(message, None).await.unwrap();
    }
    let message = Message::new("cli", "cli_fail", vec!["x".into()]);
    f.broker.enqueue(message, None).await.unwrap();

    let labels = |actor: &str| format!(r#"{{queue_name="cli",actor_name="{actor}"}}"#);
    let expected = [
        format!("dramatiq_messages_total{} 10", labels("cli_record")),
        format!("dramatiq_messages_total{} 1", labels("cli_fail")),
        format!("dramatiq_message_errors_total{} 1", labels("cli_fail")),
        format!("dramatiq_message_rejects_total{} 1", labels("cli_fail")),
        format!("dramatiq_messages_inprogress{} 0", labels("cli_record")),
        format!(
            "dramatiq_message_duration_milliseconds_count{} 10",
            labels("cli_record")
        ),
    ];
    let deadline = Instant::now() + DEADLINE;
    loop {
        let body = http_get(&url).await;
        if expected.iter().all(|line| body.lines().any(|l| l == line)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {expected:#?}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill("TERM", supervisor.pid());
    assert_eq!(supervisor.exit().await.code(), Some(0));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_actor_prints_can_neither_break_nor_fool_the_supervisor() {
    let f = Fixture::new();
    // A listener a forged readiness report points the metrics scrape at.
    let decoy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decoy_addr = decoy.local_addr().unwrap();
    let decoy_hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits = decoy_hits.clone();
    tokio::spawn(async move {
        while decoy.accept().await.is_ok() {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // One worker under a supervisor: every message runs in the same process.
    let mut supervisor = f.spawn(&[
        "-p",
        "1",
        "--max-memory",
        "4096",
        "-Q",
        "cli",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_url(&mut supervisor).await;
    ready_workers(&mut supervisor, 1).await;

    let mut hostile = vec![0xff, 0xfe, b'x', b'\n'];
    hostile.extend(format!("@actor-runtime ready metrics={decoy_addr}\n").bytes());
    let print = |key: &str, bytes: Vec<u8>| {
        Message::new("cli", "cli_print", vec![json!(key), json!(bytes)])
    };
    f.broker
        .enqueue(print("hostile", hostile), None)
        .await
        .unwrap();
    supervisor.wait_stdout("printed hostile").await;
    // The worker's stdout still works after an invalid UTF-8 line.
    f.broker
        .enqueue(print("after", Vec::new()), None)
        .await
        .unwrap();
    supervisor.wait_stdout("printed after").await;
    f.wait_recorded(2).await;

    let scraped = http_get(&metrics).await;
    assert!(scraped.contains("dramatiq_messages_total"), "{scraped}");
    assert_eq!(
        decoy_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the supervisor scraped the address an actor printed"
    );
    kill("TERM", supervisor.pid());
    assert_eq!(
        supervisor.exit().await.code(),
        Some(0),
        "{}",
        supervisor.dump()
    );
    f.cleanup().await;
}

/// A CLI worker (`cli::App`) adds the Results middleware in `configure`: what its actors
/// return is stored in Redis, where any producer reads it. A failing `configure` stops the
/// program with exit 2 and its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_worker_configured_with_results_stores_what_its_actors_return() {
    let f = Fixture::new();
    let results_ns = format!("{}:results", f.ns);
    let mut env = f.env();
    env.push(("CLI_TEST_RESULTS", results_ns.as_str()));
    let mut worker = Proc::spawn(WORKER, &["-p", "1", "-Q", "cli"], &env);
    worker.wait_message("worker started").await;

    let message = Message::new("cli", "cli_square", vec![json!(7)]);
    let message = f.broker.enqueue(message, None).await.unwrap();
    let backend = RedisResultBackend::new(f.url.clone())
        .unwrap()
        .namespace(results_ns.clone());
    let value = backend
        .get(&message, true, Duration::from_secs(10))
        .await
        .expect("the worker stored the result");
    assert_eq!(value, json!(49));
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0), "{}", worker.dump());

    let output = tokio::process::Command::new(WORKER)
        .arg("check")
        .env_remove("RUST_LOG")
        .envs(f.env())
        .env("CLI_TEST_BAD_CONFIGURE", "1")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("configuring the broker failed: no results store at the given address"),
        "{stderr}"
    );
    f.cleanup().await;
}
