//! Cancellation on Redis: a cancelled message never runs, a running one is stopped within a
//! second, a finished or unknown one is reported as such; interop with Python's
//! `dramatiq-abort` both ways; the job records' `cancelled` state; the `cancel` command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actor_runtime::broker::RedisConfig;
use actor_runtime::cancel::{CancelOutcome, Cancellation};
use actor_runtime::middleware::cancel_requested;
use actor_runtime::records::JobState;
use actor_runtime::{actor, Broker, Message, Worker};
use redis::AsyncCommands;

use crate::support::postgres::{builder, cleanup as cleanup_records, database_url, schema_name};
use crate::support::python::{python, python_dir};
use crate::support::redis::{broker, cleanup, config, raw};
use crate::support::{eventually, namespace, redis_url};

const Q: &str = "cancel_q";
const WAIT: Duration = Duration::from_secs(15);

/// What happened, by test key: "ran", "started", "stopped" (the future dropped)..., with when.
type Events = Mutex<HashMap<String, Vec<(&'static str, Instant)>>>;

fn events() -> &'static Events {
    static EVENTS: std::sync::OnceLock<Events> = std::sync::OnceLock::new();
    EVENTS.get_or_init(Default::default)
}

fn note(key: &str, what: &'static str) {
    events()
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push((what, Instant::now()));
}

fn when(key: &str, what: &str) -> Option<Instant> {
    events()
        .lock()
        .unwrap()
        .get(key)?
        .iter()
        .find(|(w, _)| *w == what)
        .map(|(_, at)| *at)
}

#[actor(queue_name = "cancel_q")]
async fn cancel_quick(key: String) {
    note(&key, "ran");
}

/// Notes when its future is dropped: the abort reaching it.
struct Stopped(String);
impl Drop for Stopped {
    fn drop(&mut self) {
        note(&self.0, "stopped");
    }
}

#[actor(queue_name = "cancel_q", time_limit = "2m")]
async fn cancel_long(key: String) {
    let _stopped = Stopped(key.clone());
    note(&key, "started");
    tokio::time::sleep(Duration::from_secs(60)).await;
    note(&key, "finished");
}

#[actor(queue_name = "cancel_q", time_limit = "2m")]
fn cancel_plain(key: String) {
    note(&key, "started");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if cancel_requested().is_some_and(|flag| flag.is_requested()) {
            note(&key, "saw flag");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    note(&key, "finished");
}

/// A Redis broker in a fresh namespace with the Cancellation middleware, its events under
/// the namespace too (so cleanup removes them).
fn setup(ttl: Duration) -> (Broker, String, Arc<Cancellation>) {
    let ns = namespace();
    let config = config(&ns);
    let broker = broker(config.clone());
    let cancellation = Arc::new(
        Cancellation::redis(&config)
            .unwrap()
            .namespace(format!("{ns}:aborts:"))
            .ttl(ttl),
    );
    broker.middleware().add(cancellation.clone());
    (broker, ns, cancellation)
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_message_never_runs() {
    let (broker, ns, cancellation) = setup(Duration::from_secs(30));
    let (waiting, delayed, control) = (key(), key(), key());
    let sent = cancel_quick::message(waiting.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let sent_delayed = cancel_quick::message(delayed.clone())
        .broker(broker.clone())
        .delay(Duration::from_millis(1500))
        .send()
        .await
        .unwrap();
    let outcome = cancellation
        .cancel(&broker, &sent.message().message_id)
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::Waiting { queue: Q.into() });
    let outcome = actor_runtime::cancel::cancel(&broker, &sent_delayed.message().message_id)
        .await
        .unwrap();
    match outcome {
        CancelOutcome::Delayed { queue, eta } => {
            assert_eq!(queue, Q);
            assert_eq!(eta, sent_delayed.message().eta());
        }
        other => panic!("expected Delayed, got {other:?}"),
    }
    // The delayed message's events outlive its eta.
    let mut conn = raw().await;
    let pttl: i64 = conn
        .pttl(format!(
            "{ns}:aborts:cancel:{}",
            sent_delayed.message().message_id
        ))
        .await
        .unwrap();
    assert!(pttl > 30_000, "{pttl}");
    // dramatiq-abort's values.
    let values: Vec<String> = conn
        .lrange(
            format!("{ns}:aborts:abort:{}", sent.message().message_id),
            0,
            -1,
        )
        .await
        .unwrap();
    assert_eq!(values, [r#"{"abort_timeout": 0}"#]);

    let worker = Worker::new(broker.clone())
        .queues([Q])
        .start()
        .await
        .unwrap();
    cancel_quick::message(control.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker.join(Q, Some(WAIT), true).await.unwrap();
    worker.stop().await.unwrap();
    assert!(
        when(&control, "ran").is_some(),
        "the control message did not run"
    );
    assert!(when(&waiting, "ran").is_none(), "a cancelled message ran");
    assert!(
        when(&delayed, "ran").is_none(),
        "a cancelled delayed message ran"
    );
    let stats = broker.stats(Q).await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.dead), (0, 0, 0));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reaches_a_running_actor_within_one_second() {
    let (broker, _ns, cancellation) = setup(Duration::from_secs(60));
    let worker = Worker::new(broker.clone())
        .queues([Q])
        .threads(2)
        .start()
        .await
        .unwrap();
    let (async_key, plain_key) = (key(), key());
    let long = cancel_long::message(async_key.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let plain = cancel_plain::message(plain_key.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    eventually(WAIT, "both actors running", || {
        let (a, p) = (async_key.clone(), plain_key.clone());
        async move { when(&a, "started").is_some() && when(&p, "started").is_some() }
    })
    .await;
    for sent in [long.message(), plain.message()] {
        let outcome = cancellation
            .cancel(&broker, &sent.message_id)
            .await
            .unwrap();
        assert_eq!(outcome, CancelOutcome::Held { queue: Q.into() });
    }
    let cancelled_at = Instant::now();
    eventually(Duration::from_secs(2), "the abort reaching both", || {
        let (a, p) = (async_key.clone(), plain_key.clone());
        async move { when(&a, "stopped").is_some() && when(&p, "saw flag").is_some() }
    })
    .await;
    for (key, what) in [(&async_key, "stopped"), (&plain_key, "saw flag")] {
        let took = when(key, what)
            .unwrap()
            .saturating_duration_since(cancelled_at);
        assert!(took < Duration::from_secs(1), "{what} after {took:?}");
    }
    // Acked: neither retried nor dead-lettered.
    broker.join(Q, Some(WAIT), true).await.unwrap();
    worker.stop().await.unwrap();
    assert!(when(&async_key, "finished").is_none());
    assert!(when(&plain_key, "finished").is_none());
    let stats = broker.stats(Q).await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.dead), (0, 0, 0));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_or_unknown_message_says_so() {
    let (broker, _ns, cancellation) = setup(Duration::from_secs(30));
    let done = key();
    let worker = Worker::new(broker.clone())
        .queues([Q])
        .start()
        .await
        .unwrap();
    let finished = cancel_quick::message(done.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    // An actor no one registered: dead-lettered at once.
    let dead = broker
        .enqueue(Message::new(Q, "cancel_nobody_has_this", vec![]), None)
        .await
        .unwrap();
    broker.join(Q, Some(WAIT), false).await.unwrap();
    worker.stop().await.unwrap();
    assert!(when(&done, "ran").is_some());
    let outcome = cancellation
        .cancel(&broker, &finished.message().message_id)
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::NotFound);
    assert!(!outcome.stops_it());
    // A uniqueness key named like a payload hash (`{ns}:__unique__.<key>.msgs`) is not
    // searched as one.
    let mut held = Message::new(Q, "cancel_nobody_has_this", vec![]);
    held.options
        .insert("unique_key".into(), format!("{}.msgs", key()).into());
    broker
        .enqueue(held, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    let unknown = cancellation
        .cancel(&broker, &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap();
    assert_eq!(unknown, CancelOutcome::NotFound);
    let outcome = cancellation
        .cancel(&broker, &dead.message_id)
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::DeadLettered { queue: Q.into() });
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_aborted_messages_are_recorded_as_cancelled() {
    let (broker, _ns, cancellation) = setup(Duration::from_secs(30));
    let records = builder(&database_url(), &schema_name())
        .build()
        .await
        .unwrap();
    broker.add_middleware(records.recorder());
    let (skipped, running) = (key(), key());
    let waiting = cancel_quick::message(skipped.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    cancellation
        .cancel(&broker, &waiting.message().message_id)
        .await
        .unwrap();
    let worker = Worker::new(broker.clone())
        .queues([Q])
        .start()
        .await
        .unwrap();
    let long = cancel_long::message(running.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    eventually(WAIT, "the long actor running", || {
        let r = running.clone();
        async move { when(&r, "started").is_some() }
    })
    .await;
    cancellation
        .cancel(&broker, &long.message().message_id)
        .await
        .unwrap();
    broker.join(Q, Some(WAIT), true).await.unwrap();
    worker.stop().await.unwrap();
    let skipped_record =
        crate::records::wait_state(&records, &waiting.message().message_id, JobState::Cancelled)
            .await;
    assert!(skipped_record.finished_at.is_some(), "{skipped_record:?}");
    let aborted =
        crate::records::wait_state(&records, &long.message().message_id, JobState::Cancelled).await;
    assert!(aborted.started_at.is_some(), "{aborted:?}");
    assert!(when(&skipped, "ran").is_none());
    cleanup_records(&records).await;
    cleanup(&broker, 0).await;
}

/// A Python Dramatiq worker running `abort_app` (dramatiq-abort's Abortable), stopped on drop.
struct PythonWorker(std::process::Child);

impl PythonWorker {
    fn start(ns: &str, abort_ns: &str) -> PythonWorker {
        let dir = python_dir();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{ns}.log"))).unwrap();
        let child = std::process::Command::new(python())
            .args(["-m", "dramatiq", "abort_app", "--path"])
            .arg(&dir)
            .args([
                "--processes",
                "1",
                "--threads",
                "2",
                "--queues",
                "cancel_py",
            ])
            .env("REDIS_URL", redis_url())
            .env("DRAMATIQ_NAMESPACE", ns)
            .env("ABORT_NAMESPACE", abort_ns)
            .env("PYTHONPATH", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the Python worker");
        PythonWorker(child)
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the Python actors noted for `key`.
async fn python_seen(
    conn: &mut redis::aio::MultiplexedConnection,
    ns: &str,
    key: &str,
) -> Vec<String> {
    conn.lrange(format!("{ns}:seen:{key}"), 0, -1)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_cancel_reaches_python_workers() {
    let (broker, ns, cancellation) = setup(Duration::from_secs(60));
    let abort_ns = format!("{ns}:aborts:");
    let mut conn = raw().await;
    let (skipped, control, running) = (key(), key(), key());
    let send = |actor: &str, key: &str| {
        let broker = broker.clone();
        let message = Message::new("cancel_py", actor, vec![key.into()]);
        async move { broker.enqueue(message, None).await.unwrap() }
    };
    // Cancelled before a Python worker takes it: skipped.
    let waiting = send("cancel_py_quick", &skipped).await;
    let outcome = cancellation
        .cancel(&broker, &waiting.message_id)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        CancelOutcome::Waiting {
            queue: "cancel_py".into()
        }
    );
    send("cancel_py_quick", &control).await;
    let _python = PythonWorker::start(&ns, &abort_ns);
    eventually(
        Duration::from_secs(30),
        "the Python worker running the control",
        || {
            let (mut conn, ns, control) = (conn.clone(), ns.clone(), control.clone());
            async move { python_seen(&mut conn, &ns, &control).await == ["ran"] }
        },
    )
    .await;
    // Running on the Python worker: aborted.
    let long = send("cancel_py_long", &running).await;
    eventually(WAIT, "the Python actor running", || {
        let (mut conn, ns, running) = (conn.clone(), ns.clone(), running.clone());
        async move { python_seen(&mut conn, &ns, &running).await == ["started"] }
    })
    .await;
    let outcome = cancellation
        .cancel(&broker, &long.message_id)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        CancelOutcome::Held {
            queue: "cancel_py".into()
        }
    );
    // Its watcher waits on the events with a 1 s timeout, then interrupts the thread.
    eventually(Duration::from_secs(5), "the Python actor aborted", || {
        let (mut conn, ns, running) = (conn.clone(), ns.clone(), running.clone());
        async move { python_seen(&mut conn, &ns, &running).await == ["started", "aborted"] }
    })
    .await;
    broker.join("cancel_py", Some(WAIT), false).await.unwrap();
    assert!(
        python_seen(&mut conn, &ns, &skipped).await.is_empty(),
        "a cancelled message ran on Python"
    );
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_abort_cancels_what_our_worker_holds_or_runs() {
    let (broker, ns, _cancellation) = setup(Duration::from_secs(60));
    let abort_ns = format!("{ns}:aborts:");
    let python_abort = |message_id: String| {
        let abort_ns = abort_ns.clone();
        let ns = ns.clone();
        async move {
            let status = tokio::process::Command::new(python())
                .arg(python_dir().join("abort_app.py"))
                .arg(&message_id)
                .env("REDIS_URL", redis_url())
                .env("DRAMATIQ_NAMESPACE", &ns)
                .env("ABORT_NAMESPACE", &abort_ns)
                .env("PYTHONPATH", python_dir())
                .status()
                .await
                .expect("run Python");
            assert!(status.success(), "dramatiq_abort.abort failed");
        }
    };
    let (skipped, running, control) = (key(), key(), key());
    let waiting = cancel_quick::message(skipped.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    python_abort(waiting.message().message_id.clone()).await;
    let worker = Worker::new(broker.clone())
        .queues([Q])
        .threads(2)
        .start()
        .await
        .unwrap();
    let long = cancel_long::message(running.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    eventually(WAIT, "our actor running", || {
        let r = running.clone();
        async move { when(&r, "started").is_some() }
    })
    .await;
    python_abort(long.message().message_id.clone()).await;
    let aborted_at = Instant::now();
    eventually(
        Duration::from_secs(2),
        "Python's abort reaching our actor",
        || {
            let r = running.clone();
            async move { when(&r, "stopped").is_some() }
        },
    )
    .await;
    let took = when(&running, "stopped")
        .unwrap()
        .saturating_duration_since(aborted_at);
    assert!(took < Duration::from_secs(1), "stopped after {took:?}");
    cancel_quick::message(control.clone())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker.join(Q, Some(WAIT), true).await.unwrap();
    worker.stop().await.unwrap();
    assert!(when(&control, "ran").is_some());
    assert!(
        when(&skipped, "ran").is_none(),
        "a message Python aborted ran"
    );
    assert!(when(&running, "finished").is_none());
    cleanup(&broker, 0).await;
}

/// The Cancellation of a broker built from `RedisConfig` alone.
#[test]
fn cancellation_is_found_on_the_broker() {
    let broker = Broker::redis(RedisConfig::new(redis_url()).namespace(namespace())).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(actor_runtime::cancel::cancel(&broker, "some-id"))
        .unwrap_err();
    assert!(err.to_string().contains("Cancellation"), "{err}");
}

/// Runs the CLI's `args` with the fixture's environment and its cancel events under its
/// namespace: (exit code, stdout, stderr).
async fn cli(fixture: &crate::support::cli::Fixture, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(crate::support::cli::WORKER)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("APP_ENV")
        .envs(fixture.env())
        .env("CANCELLATION_NAMESPACE", format!("{}:aborts:", fixture.ns))
        .output()
        .await
        .expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cancel_command_says_what_it_cancelled_and_exits_6_when_nothing_was_there() {
    let fixture = crate::support::cli::Fixture::new();
    let (code, help, _) = cli(&fixture, &["--help"]).await;
    assert_eq!(code, 0);
    assert!(
        help.contains("cancel") && help.contains("CANCELLATION"),
        "{help}"
    );
    let (code, help, _) = cli(&fixture, &["cancel", "--help"]).await;
    assert_eq!(code, 0);
    assert!(
        help.contains("MESSAGE_ID") && help.contains("6 if any"),
        "{help}"
    );

    let waiting = fixture
        .broker
        .enqueue(
            Message::new("cancel_cli", "cancel_cli_nobody", vec![]),
            None,
        )
        .await
        .unwrap();
    let (code, stdout, stderr) = cli(&fixture, &["cancel", &waiting.message_id]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "{}: waiting in cancel_cli: it will be skipped",
            waiting.message_id
        )
    );
    // The events are dramatiq-abort's, where the namespace says.
    let mut conn = raw().await;
    let cancel_key = format!("{}:aborts:cancel:{}", fixture.ns, waiting.message_id);
    assert!(conn.exists::<_, bool>(&cancel_key).await.unwrap());

    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, stdout, stderr) = cli(
        &fixture,
        &["cancel", "--json", &waiting.message_id, &unknown],
    )
    .await;
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("1 of 2 messages had nothing to cancel"),
        "{stderr}"
    );
    let items: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        items,
        serde_json::json!([
            {"message_id": waiting.message_id, "outcome": "waiting", "queue": "cancel_cli"},
            {"message_id": unknown, "outcome": "not_found", "queue": null},
        ])
    );
    fixture.cleanup().await;
}
