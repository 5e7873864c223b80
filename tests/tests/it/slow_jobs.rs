//! Slow messages on the users' configuration, two worker processes of one thread each, on
//! Redis through the worker CLI: fair dispatch (no process hoards what the other could run)
//! and heartbeats that a blocking actor cannot starve.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actor_runtime::Message;
use redis::AsyncCommands;
use serde_json::json;

use crate::support::cli::{ready_workers, Fixture};

/// `n` messages of `cli_sleep` (`ms` each), keys `{prefix}{i}`, in one batch.
fn sleeps(prefix: &str, n: usize, ms: u64) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(
                "cli",
                "cli_sleep",
                vec![json!(format!("{prefix}{i}")), json!(ms)],
            )
        })
        .collect()
}

/// How many recorded runs each worker pid made.
fn runs_by_pid(f: &Fixture) -> HashMap<u32, usize> {
    let mut split = HashMap::new();
    for record in f.records() {
        *split
            .entry(record["pid"].as_u64().unwrap() as u32)
            .or_default() += 1;
    }
    split
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_slow_messages_on_two_single_thread_workers_run_five_each() {
    let f = Fixture::new();
    let mut supervisor = f.spawn(&["-p", "2", "-t", "1", "-Q", "cli"]);
    let pids = ready_workers(&mut supervisor, 2).await;

    f.broker
        .enqueue_batch(sleeps("s", 10, 600), None)
        .await
        .unwrap();
    f.wait_recorded(10).await;

    let split = runs_by_pid(&f);
    assert_eq!(
        (split.get(&pids[0]), split.get(&pids[1])),
        (Some(&5), Some(&5)),
        "each process runs one message at a time and fetches the next only when free: {split:?}"
    );
    drop(supervisor);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_messages_arriving_while_both_workers_are_busy_wait_in_the_queue() {
    let f = Fixture::new();
    let mut supervisor = f.spawn(&["-p", "2", "-t", "1", "-Q", "cli"]);
    let pids = ready_workers(&mut supervisor, 2).await;

    f.broker
        .enqueue_batch(sleeps("first", 2, 700), None)
        .await
        .unwrap();
    f.wait_stats("cli", "both workers busy", |s| {
        s.in_flight == 2 && s.ready == 0
    })
    .await;
    // A stream arriving while both are busy: none may be taken by a busy worker.
    for message in sleeps("stream", 4, 700) {
        f.broker.enqueue(message, None).await.unwrap();
    }
    let mut most_held = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.recorded().len() < 6 {
        most_held = most_held.max(f.stats("cli").await.in_flight);
        assert!(
            Instant::now() < deadline,
            "timed out; ran {:?}",
            f.recorded()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        most_held <= 2,
        "two single-thread workers held {most_held} messages at once"
    );
    let split = runs_by_pid(&f);
    assert_eq!(
        (split.get(&pids[0]), split.get(&pids[1])),
        (Some(&3), Some(&3)),
        "{split:?}"
    );
    drop(supervisor);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_blocking_past_the_heartbeat_timeout_runs_once_and_its_worker_stays_alive() {
    let f = Fixture::new();
    let mut env = f.env();
    // Without heartbeats of its own, the blocked worker would count as dead after 1 s and
    // the other worker would run its message again.
    env.push(("HEARTBEAT_TIMEOUT_MS", "1000"));
    let mut supervisor = crate::support::cli::Proc::spawn(
        crate::support::cli::WORKER,
        &["-p", "2", "-t", "1", "-Q", "cli"],
        &env,
    );
    ready_workers(&mut supervisor, 2).await;

    let message = Message::new("cli", "cli_block", vec![json!("blocker"), json!(3000)]);
    f.broker.enqueue(message, None).await.unwrap();
    f.wait_recorded(1).await;
    // Drained and acked: a duplicate recovered meanwhile would still be waiting or running.
    f.broker
        .join("cli", Some(Duration::from_secs(30)), true)
        .await
        .unwrap();
    assert_eq!(f.recorded()["blocker"], 1, "{:?}", f.records());
    let mut conn = redis::Client::open(f.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let beating: usize = conn
        .zcard(format!("{}:__heartbeats__", f.ns))
        .await
        .unwrap();
    assert_eq!(beating, 2, "both workers still count as alive");
    crate::support::cli::kill("TERM", supervisor.pid());
    supervisor.exit().await;
    assert!(
        !supervisor
            .seen
            .iter()
            .any(|l| l["message"] == "requeued the messages of a dead worker"),
        "{}",
        supervisor.dump()
    );
    f.cleanup().await;
}
