//! Messages a buggy or hostile producer can write: mistyped retry options, huge arguments,
//! forged log lines, absurd delays, made-up queue names. Each scenario on Redis, in a
//! namespace of its own; Python Dramatiq 2.2.1 writes the messages where it can.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_runtime::composition::pipeline;
use actor_runtime::message::MAX_DELAY;
use actor_runtime::middleware::Prometheus;
use actor_runtime::{actor, Broker, Error, Message, Worker};
use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::support::cli::{kill, Fixture};
use crate::support::python::python;
use crate::support::redis::{broker, cleanup, config, raw};
use crate::support::{eventually, namespace};

/// Runs of each test key, by actor.
fn runs() -> &'static Mutex<HashMap<String, usize>> {
    static RUNS: std::sync::OnceLock<Mutex<HashMap<String, usize>>> = std::sync::OnceLock::new();
    RUNS.get_or_init(Mutex::default)
}

fn ran(key: &str) {
    *runs().lock().unwrap().entry(key.to_owned()).or_default() += 1;
}

fn runs_of(key: &str) -> usize {
    runs().lock().unwrap().get(key).copied().unwrap_or(0)
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[actor(
    queue_name = "hostile_retry",
    max_retries = 2,
    min_backoff = 1,
    max_backoff = 5
)]
async fn hostile_always_fails(key: String) -> Result<(), String> {
    ran(&key);
    Err("always fails".into())
}

#[actor(queue_name = "hostile_pipe")]
async fn hostile_step(key: String, n: i64) -> i64 {
    ran(&key);
    n
}

#[actor(queue_name = "hostile_pipe")]
async fn hostile_next_step(key: String, previous: i64) {
    ran(&format!("{key}-next-{previous}"));
}

#[actor(queue_name = "hostile_metrics")]
async fn hostile_counted(key: String) {
    ran(&key);
}

/// A message of `hostile_always_fails` whose retry options are the producer's.
fn failing(key: &str, options: Value) -> Message {
    let mut message = Message::new("hostile_retry", "hostile_always_fails", vec![key.into()]);
    message.options = options.as_object().unwrap().clone();
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_max_retries_fall_back_to_the_actors_setting() {
    let broker = broker(config(&namespace()));
    let q = "hostile_retry";
    // (max_retries, runs): a wrong type means the actor's 2 retries; a number reads as
    // Python compares `retries >= max_retries` (-1: no retry, 1.5: two retries).
    let cases = [
        (json!("x"), 3),
        (json!(true), 3),
        (json!({"n": 1}), 3),
        (json!(-1), 1),
        (json!(1.5), 3),
    ];
    let keys: Vec<String> = cases.iter().map(|_| key()).collect();
    for ((max_retries, _), key) in cases.iter().zip(&keys) {
        let options = json!({"max_retries": max_retries, "min_backoff": 0, "max_backoff": 0});
        broker.enqueue(failing(key, options), None).await.unwrap();
    }
    let worker = Worker::new(broker.clone())
        .queues([q])
        .threads(2)
        .start()
        .await
        .unwrap();
    let expected = cases.len() as u64;
    eventually(
        Duration::from_secs(20),
        "every message dead-lettered",
        || {
            let broker = broker.clone();
            async move { broker.stats(q).await.unwrap().dead == expected }
        },
    )
    .await;
    worker.stop().await.unwrap();
    let got: Vec<usize> = keys.iter().map(|k| runs_of(k)).collect();
    let want: Vec<usize> = cases.iter().map(|(_, runs)| *runs).collect();
    assert_eq!(got, want, "runs per case {cases:?}");
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_retries_with_a_zero_backoff_are_paced_by_the_floor() {
    let broker = broker(config(&namespace()));
    let q = "hostile_retry";
    let key = key();
    // `null` is the one way to ask for unlimited retries.
    let options = json!({"max_retries": null, "min_backoff": 0, "max_backoff": 0});
    broker.enqueue(failing(&key, options), None).await.unwrap();
    let worker = Worker::new(broker.clone())
        .queues([q])
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the first run", || async {
        runs_of(&key) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.stop().await.unwrap();
    let runs = runs_of(&key);
    // A 100 ms floor allows at most 21 runs in 2 s; without one, hundreds or thousands.
    assert!((2..=30).contains(&runs), "{runs} runs in 2 s");
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_wrong_typed_argument_leaves_short_reasons_and_log_lines() {
    let fx = Fixture::new();
    let mut worker = fx.spawn(&["-p", "1", "-Q", "cli"]);
    worker.wait_message("worker started").await;
    // `cli_sleep(key: String, ms: u64)` given 5 MB of text for `ms`.
    let huge = "x".repeat(5 << 20);
    let message = Message::new("cli", "cli_sleep", vec!["k".into(), huge.into()]);
    fx.broker.enqueue(message, None).await.unwrap();
    fx.wait_stats("cli", "the dead letter", |s| s.dead == 1)
        .await;
    let letters = fx.broker.dead_letters("cli", 10).await.unwrap();
    let reason = letters[0].reason.clone().unwrap();
    assert!(reason.starts_with("bad arguments"), "{reason:.200}");
    assert!(reason.len() < 1200, "a reason of {} bytes", reason.len());
    assert!(reason.contains("bytes cut"), "{reason}");
    kill("TERM", worker.pid());
    assert!(worker.exit().await.success(), "{:.2000}", worker.dump());
    assert!(
        worker.seen.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("bad arguments"))),
        "no `bad arguments` line"
    );
    for line in &worker.seen {
        let len = line.to_string().len();
        assert!(
            len < 4096,
            "a log line of {len} bytes: {:.300}",
            line.to_string()
        );
    }
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_cannot_forge_text_log_lines() {
    let fx = Fixture::new();
    let mut child = tokio::process::Command::new(crate::support::cli::WORKER)
        .args(["-p", "1", "-Q", "cli", "--log-format", "text"])
        .env_remove("RUST_LOG")
        .env_remove("APP_ENV")
        .env_remove("LOG_FORMAT")
        .envs(fx.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let forged =
        "nobody\n[2030-01-01 00:00:00,000] [PID 1] [CRITICAL] forged: \u{1b}[2Jall data lost";
    fx.broker
        .enqueue(Message::new("cli", forged, vec![]), None)
        .await
        .unwrap();
    fx.wait_stats("cli", "the dead letter", |s| s.dead == 1)
        .await;
    kill("TERM", child.id().unwrap());
    let mut stderr = Vec::new();
    let mut pipe = child.stderr.take().unwrap();
    tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut stderr)
        .await
        .unwrap();
    child.wait().await.unwrap();
    let text = String::from_utf8_lossy(&stderr);
    assert!(!text.contains('\u{1b}'), "a raw ESC in the log:\n{text}");
    let mentions: Vec<&str> = text.lines().filter(|l| l.contains("forged")).collect();
    assert_eq!(mentions.len(), 1, "{text}");
    assert!(
        mentions[0].contains("no actor of this name") && mentions[0].contains(r"\n[2030"),
        "{}",
        mentions[0]
    );
    fx.cleanup().await;
}

/// Every broker refuses a delay over 100 years, or one that does not fit an eta at all.
async fn refuses_absurd_delays(broker: Broker) {
    let century = Duration::from_secs(36_525 * 86_400);
    assert_eq!(MAX_DELAY, century);
    for delay in [
        Duration::MAX,
        Duration::from_millis(u64::MAX),
        century + Duration::from_millis(1),
    ] {
        let message = Message::new("hostile_delay", "hostile_step", vec![]);
        let id = message.message_id.clone();
        match broker.enqueue(message, Some(delay)).await {
            Err(Error::DelayTooLong {
                message_id,
                actor,
                queue,
                delay: refused,
            }) => {
                assert_eq!(
                    (message_id, actor, queue),
                    (id, "hostile_step".into(), "hostile_delay".into())
                );
                assert_eq!(refused, delay);
            }
            other => panic!("{delay:?}: {other:?}"),
        }
        let batch = vec![Message::new("hostile_delay", "hostile_step", vec![])];
        let err = broker.enqueue_batch(batch, Some(delay)).await.unwrap_err();
        assert!(
            matches!(err, Error::DelayTooLong { .. }),
            "{delay:?}: {err}"
        );
    }
    // 2^64 + 1 ms, which a wrapping conversion would read as 1 ms.
    let wraps = Duration::from_millis(u64::MAX) + Duration::from_millis(2);
    let steps =
        pipeline([hostile_step::message("k".into(), 1).delay(wraps)]).broker(broker.clone());
    let run = steps.run().await;
    assert!(matches!(run, Err(Error::DelayTooLong { .. })), "{run:?}");
    let stats = broker.stats("hostile_delay").await;
    assert!(
        stats.as_ref().map_or(true, |s| s.ready + s.delayed == 0),
        "{stats:?}"
    );
    let far = Message::new("hostile_delay", "hostile_step", vec![]);
    let stored = broker.enqueue(far, Some(century)).await.unwrap();
    assert!(stored.eta().is_some());
}

#[tokio::test]
async fn absurd_delays_are_refused_at_enqueue() {
    refuses_absurd_delays(Broker::stub()).await;
    let redis = broker(config(&namespace()));
    refuses_absurd_delays(redis.clone()).await;
    cleanup(&redis, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_delays_from_python_are_dead_lettered_with_a_reason() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let q = "hostile_pipe";
    let key = key();
    // A pipeline whose next step waits 10^30 ms, and a message due in 10^30 ms.
    let script = r#"
import os
import dramatiq
from dramatiq import pipeline
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["DRAMATIQ_NAMESPACE"])
dramatiq.set_broker(broker)
KEY = os.environ["HOSTILE_KEY"]

@dramatiq.actor(queue_name="hostile_pipe")
def hostile_step(key, n):
    raise NotImplementedError

@dramatiq.actor(queue_name="hostile_pipe")
def hostile_next_step(key, previous):
    raise NotImplementedError

pipeline([
    hostile_step.message(KEY, 1),
    hostile_next_step.message_with_options(args=(KEY,), delay=10**30),
]).run()
hostile_step.send_with_options(args=(KEY, 2), delay=10**30)
"#;
    let output = tokio::process::Command::new(python())
        .args(["-c", script])
        .env("REDIS_URL", crate::support::redis_url())
        .env("DRAMATIQ_NAMESPACE", &ns)
        .env("HOSTILE_KEY", &key)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let worker = Worker::new(broker.clone())
        .queues([q])
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "two dead letters", || {
        let broker = broker.clone();
        async move { broker.stats(q).await.unwrap().dead == 2 }
    })
    .await;
    worker.stop().await.unwrap();
    assert_eq!(runs_of(&key), 1, "the first step runs once");
    assert_eq!(
        runs_of(&format!("{key}-next-1")),
        0,
        "the next step never runs"
    );
    let mut reasons: Vec<String> = broker
        .dead_letters(q, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.reason.unwrap())
        .collect();
    reasons.sort();
    assert!(
        reasons[0].contains("could not enqueue the next pipeline step")
            && reasons[0].contains("delay"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("eta"), "{reasons:?}");
    let stats = broker.stats(q).await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_timeouts_do_not_panic() {
    let stub = Broker::stub();
    stub.declare_queue("hostile_timeouts").await.unwrap();
    stub.join("hostile_timeouts", Some(Duration::MAX), true)
        .await
        .unwrap();
    let redis = broker(config(&namespace()));
    redis.declare_queue("hostile_timeouts").await.unwrap();
    redis
        .join("hostile_timeouts", Some(Duration::MAX), true)
        .await
        .unwrap();
    for broker in [stub as Broker, redis.clone()] {
        let worker = Worker::new(broker)
            .queues(["hostile_timeouts"])
            .shutdown_timeout(Duration::MAX)
            .start()
            .await
            .unwrap();
        worker.stop().await.unwrap();
    }
    let results = actor_runtime::results::StubResultBackend::new();
    let message = Message::new("hostile_timeouts", "hostile_step", vec![]);
    let missing =
        actor_runtime::results::ResultBackend::get(&results, &message, false, Duration::MAX).await;
    assert!(missing.is_err());
    cleanup(&redis, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_the_fetched_queue_not_the_payloads() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let metrics = Arc::new(Prometheus::new());
    broker.middleware().add(metrics.clone());
    let q = "hostile_metrics";
    let key = key();
    let n = 3000;
    // A producer writing straight to Redis, each payload naming a queue of its own.
    let mut conn = raw().await;
    let mut pipe = redis::pipe();
    for i in 0..n {
        let id = format!("hostile-{i}");
        let mut message = Message::new(
            &format!("made_up_{}", uuid::Uuid::new_v4().simple()),
            "hostile_counted",
            vec![key.clone().into()],
        );
        message
            .options
            .insert("redis_message_id".into(), id.clone().into());
        pipe.hset(format!("{ns}:{q}.msgs"), &id, message.encode())
            .ignore()
            .rpush(format!("{ns}:{q}"), &id)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let worker = Worker::new(broker.clone())
        .queues([q])
        .threads(4)
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "every message", || async {
        runs_of(&key) == n
    })
    .await;
    broker
        .join(q, Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    worker.stop().await.unwrap();
    let text = metrics.render();
    let lines = text.lines().count();
    assert!(lines < 200, "/metrics has {lines} lines");
    let total =
        format!(r#"dramatiq_messages_total{{queue_name="{q}",actor_name="hostile_counted"}} {n}"#);
    assert!(
        text.lines().any(|l| l == total),
        "no `{total}` in\n{text:.3000}"
    );
    let _: () = conn.del(format!("{ns}:{q}")).await.unwrap();
    cleanup(&broker, 0).await;
}
