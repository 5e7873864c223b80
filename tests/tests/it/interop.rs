//! Interop with the real Python Dramatiq 2.2.1 on one Redis, both directions.
//!
//! The interpreter is `$DRAMATIQ_PYTHON`, else `<workspace>/.venv/bin/python` (`.ci/run`
//! creates it with `dramatiq[redis]==2.2.1`); without either these tests fail, saying so.
//! The Python side lives in `tests/python/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actor_runtime::broker::Consumer;
use actor_runtime::{actor, current_message, Message, Worker};
use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::support::python::{python, python_dir};
use crate::support::redis::{broker, cleanup, config, raw};
use crate::support::{eventually, namespace, redis_url};

/// A Python process in its own process group, killed with its children when dropped.
struct Py {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Py {
    fn spawn(ns: &str, args: &[&str], env: &[(&str, &str)]) -> Py {
        let log = std::env::temp_dir().join(format!(
            "interop-{ns}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(python());
        cmd.args(args)
            .current_dir(python_dir())
            .env("REDIS_URL", redis_url())
            .env("DRAMATIQ_NAMESPACE", ns)
            .env("PYTHONPATH", python_dir())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start python");
        Py { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the main process (it forwards SIGTERM to its workers itself), or
    /// to the whole process group.
    fn signal(&self, signal: &str, group: bool) {
        if let Some(pid) = self.child.id() {
            let target = if group {
                format!("-{pid}")
            } else {
                pid.to_string()
            };
            let _ = std::process::Command::new("kill")
                .args([signal, "--", &target])
                .status();
        }
    }

    /// Waits for exit within `within`; returns stdout.
    async fn finish(mut self, within: Duration) -> String {
        let mut stdout = self.child.stdout.take().expect("piped stdout");
        let read = async {
            let mut out = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out)
                .await
                .expect("read stdout");
            let status = self.child.wait().await.expect("wait python");
            (status, out)
        };
        match tokio::time::timeout(within, read).await {
            Ok((status, out)) => {
                assert!(
                    status.success(),
                    "python failed ({status}):\n{}",
                    self.log()
                );
                out
            }
            Err(_) => panic!("python did not finish within {within:?}:\n{}", self.log()),
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        self.signal("-KILL", true);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs a Python script to completion and parses its JSON output.
pub(crate) async fn run_script(ns: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let py = Py::spawn(ns, args, env);
    let out = py.finish(Duration::from_secs(60)).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON from python ({e}): {out}"))
}

// ---- Rust actors run for Python producers ---------------------------------------------------

/// What the actors below ran, by test key: (actor, value, message).
type Runs = Mutex<HashMap<String, Vec<(String, Value, Message, Instant)>>>;

fn runs() -> &'static Runs {
    static RUNS: std::sync::OnceLock<Runs> = std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn ran(key: &str, actor: &str, value: Value) {
    let message = current_message()
        .map(|m| (*m).clone())
        .expect("current message");
    runs()
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push((actor.to_owned(), value, message, Instant::now()));
}

#[actor(queue_name = "interop_rs")]
async fn interop_rs_add(key: String, x: i64, y: i64) -> i64 {
    ran(&key, "add", json!(x + y));
    x + y
}

#[actor(queue_name = "interop_rs")]
async fn interop_rs_greet(key: String, name: String, punctuation: Option<String>) -> String {
    let text = format!("Hello {name}{}", punctuation.as_deref().unwrap_or("."));
    ran(&key, "greet", json!(text));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producers_messages_run_on_our_worker() {
    let ns = namespace();
    let key = uuid::Uuid::new_v4().to_string();
    let broker = broker(config(&ns));
    let worker = Worker::new(broker.clone())
        .queues(["interop_rs"])
        .start()
        .await
        .unwrap();
    let sent_at = Instant::now();
    let sent = run_script(&ns, &["produce.py"], &[("INTEROP_KEY", &key)]).await;
    eventually(Duration::from_secs(30), "the five Python messages", || {
        let key = key.clone();
        async move { runs().lock().unwrap().get(&key).map_or(0, Vec::len) == 5 }
    })
    .await;
    broker
        .join("interop_rs", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    let report = worker.stop().await.unwrap();
    assert_eq!(report.dead_lettered, 0);

    let runs = runs().lock().unwrap().remove(&key).unwrap();
    let by_id: HashMap<&str, &(String, Value, Message, Instant)> =
        runs.iter().map(|r| (r.2.message_id.as_str(), r)).collect();
    let get = |what: &str| by_id[sent[what].as_str().unwrap()];
    assert_eq!(get("positional").1, json!(3));
    assert_eq!(get("kwargs").1, json!(7));
    assert_eq!(get("greet").1, json!("Hello Ada!"));
    let delayed = get("delayed");
    assert_eq!(delayed.1, json!(11));
    assert!(delayed.3.duration_since(sent_at) >= Duration::from_millis(300));
    assert_eq!(delayed.2.queue_name, "interop_rs");
    let retry = get("retry");
    assert_eq!(retry.1, json!(15));
    assert_eq!(retry.2.retries(), 1, "the retry count Python wrote is kept");
    assert!(retry.2.options["traceback"]
        .as_str()
        .unwrap()
        .contains("ValueError"));
    cleanup(&broker, 0).await;
}

// ---- Python actors run for our producer -----------------------------------------------------

async fn results(ns: &str) -> Vec<Value> {
    let mut conn = raw().await;
    let lines: Vec<String> = conn
        .lrange(format!("{ns}:interop.results"), 0, -1)
        .await
        .unwrap();
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn py_message(args: Vec<Value>, kwargs: Value) -> Message {
    let mut m = Message::new("interop_py", "interop_py_add", args);
    m.kwargs = kwargs.as_object().cloned().unwrap_or_default();
    m
}

/// `python -m dramatiq interop_app` on `queues`, one process, one thread.
fn python_worker(ns: &str, queues: &str) -> Py {
    Py::spawn(
        ns,
        &[
            "-m",
            "dramatiq",
            "interop_app",
            "--processes",
            "1",
            "--threads",
            "1",
            "--queues",
            queues,
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_producers_messages_run_on_a_python_worker() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut ids = Vec::new();
    for (m, delay) in [
        (py_message(vec![json!(1), json!(2)], json!({})), None),
        (
            py_message(vec![], json!({"x": 3, "y": 4, "scale": 10})),
            None,
        ),
        (
            py_message(vec![json!(5), json!(6)], json!({})),
            Some(Duration::from_millis(300)),
        ),
    ] {
        ids.push(broker.enqueue(m, delay).await.unwrap().message_id);
    }
    let worker = python_worker(&ns, "interop_py");
    let start = Instant::now();
    loop {
        let done = results(&ns).await;
        if done.len() == 3 {
            let by_id: HashMap<&str, &Value> = done
                .iter()
                .map(|r| (r["message_id"].as_str().unwrap(), &r["value"]))
                .collect();
            assert_eq!(*by_id[ids[0].as_str()], json!(3));
            assert_eq!(*by_id[ids[1].as_str()], json!(70));
            assert_eq!(*by_id[ids[2].as_str()], json!(11));
            assert!(done.iter().all(|r| r["queue_name"] == "interop_py"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the Python worker ran {done:?}:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Python acked them: the queue is empty by our count too.
    broker
        .join("interop_py", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    worker.signal("-TERM", false);
    worker.finish(Duration::from_secs(30)).await;
    cleanup(&broker, 0).await;
}

// ---- What a Python operator sees --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_dead_letters_and_queue_sizes_read_the_same_in_python() {
    let ns = namespace();
    let key = uuid::Uuid::new_v4().to_string();
    let broker = broker(config(&ns));
    // Dead-lettered by our worker: an unknown actor and bad arguments.
    let unknown = broker
        .enqueue(
            Message::new("interop_rs", "interop_nobody", vec![json!(1)]),
            None,
        )
        .await
        .unwrap();
    let bad_args = broker
        .enqueue(
            Message::new(
                "interop_rs",
                "interop_rs_add",
                vec![json!(key), json!("x"), json!(1)],
            ),
            None,
        )
        .await
        .unwrap();
    let worker = Worker::new(broker.clone())
        .queues(["interop_rs"])
        .start()
        .await
        .unwrap();
    broker
        .join("interop_rs", Some(Duration::from_secs(10)), false)
        .await
        .unwrap();
    worker.stop().await.unwrap();

    // A queue nobody consumes: ready, delayed and in-flight messages.
    for n in 0..3 {
        broker
            .enqueue(py_message(vec![json!(n), json!(n)], json!({})), None)
            .await
            .unwrap();
    }
    broker
        .enqueue(
            py_message(vec![json!(9), json!(9)], json!({})),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let consumer: Arc<dyn Consumer> = Arc::from(broker.consume("interop_py", 1).await.unwrap());
    let in_flight = consumer.fetch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(in_flight.len(), 1);

    let seen = run_script(&ns, &["inspect_queues.py", "interop_rs", "interop_py"], &[]).await;
    let rs = &seen["interop_rs"];
    assert_eq!(rs["dead"], 2);
    let mut dead_ids: Vec<&str> = rs["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message_id"].as_str().unwrap())
        .collect();
    dead_ids.sort();
    let mut expected = vec![unknown.message_id.as_str(), bad_args.message_id.as_str()];
    expected.sort();
    assert_eq!(dead_ids, expected);
    let actors: Vec<&str> = rs["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["actor_name"].as_str().unwrap())
        .collect();
    assert!(actors.contains(&"interop_nobody") && actors.contains(&"interop_rs_add"));
    assert_eq!(rs["qsize"], 0);

    for queue in ["interop_rs", "interop_py"] {
        let ours = broker.stats(queue).await.unwrap();
        let theirs = &seen[queue];
        assert_eq!(theirs["ready"], ours.ready, "{queue} ready");
        assert_eq!(theirs["delayed"], ours.delayed, "{queue} delayed");
        assert_eq!(theirs["dead"], ours.dead, "{queue} dead");
        assert_eq!(
            theirs["qsize"],
            ours.ready + ours.delayed + ours.in_flight,
            "{queue} qsize"
        );
    }
    let py = broker.stats("interop_py").await.unwrap();
    assert_eq!((py.ready, py.delayed, py.in_flight), (2, 1, 1));
    consumer.requeue(&[in_flight[0].tag.clone()]).await.unwrap();
    consumer.close().await.unwrap();
    cleanup(&broker, 0).await;
}

// ---- A crashed Python worker's messages come back through our maintenance ---------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_python_workers_message_is_recovered_by_us() {
    let ns = namespace();
    let broker = broker(
        config(&ns)
            .heartbeat_timeout(Duration::from_secs(3))
            .maintenance_interval(Duration::from_millis(200)),
    );
    let mut m = Message::new("interop_py_slow", "interop_py_slow", vec![json!(60)]);
    m = broker.enqueue(m, None).await.unwrap();
    let rid = m.options["redis_message_id"].as_str().unwrap().to_owned();
    let worker = python_worker(&ns, "interop_py_slow");
    let start = Instant::now();
    while results(&ns).await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the Python worker never started:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL the whole process group: no graceful requeue, the id stays in its ack set.
    drop(worker);
    let mut conn = raw().await;
    eventually(
        Duration::from_secs(20),
        "the message back in its queue",
        || {
            let mut conn = conn.clone();
            let (ns, rid) = (ns.clone(), rid.clone());
            async move {
                let list: Vec<String> = conn
                    .lrange(format!("{ns}:interop_py_slow"), 0, -1)
                    .await
                    .unwrap();
                list == [rid]
            }
        },
    )
    .await;
    let acks: Vec<String> = conn.keys(format!("{ns}:__acks__.*")).await.unwrap();
    assert!(
        acks.is_empty(),
        "the dead worker's ack sets are gone: {acks:?}"
    );
    cleanup(&broker, 0).await;
}
