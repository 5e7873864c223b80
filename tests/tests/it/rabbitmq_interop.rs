//! Interop with the real Python Dramatiq 2.2.1 `RabbitmqBroker` (pika) on one RabbitMQ, both
//! directions: arguments, delays, retries through `.DQ`, dead letters in `.XQ`, declarations
//! in either order, and a mixed fleet draining one queue exactly once. The Python side is
//! `tests/python/rabbit_app.py` and `rabbit_produce.py`; each test has queues of its own.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actor_runtime::broker::{QueueType, RabbitmqConfig};
use actor_runtime::{actor, current_message, Message, Worker};
use serde_json::{json, Value};

use crate::support::eventually;
use crate::support::python::{python, python_dir};
use crate::support::rabbitmq::{broker, cleanup, config, consumers, count, queue, rabbitmq_url};

/// A Python process in its own process group, killed with its children when dropped.
struct Py {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Py {
    fn spawn(q: &str, args: &[&str], env: &[(&str, &str)]) -> Py {
        let log = std::env::temp_dir().join(format!("rabbit-interop-{q}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(python());
        cmd.args(args)
            .current_dir(python_dir())
            .env("RABBITMQ_URL", rabbitmq_url())
            .env("RABBIT_QUEUE", q)
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
        Py {
            child: cmd.spawn().expect("start python"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the main process (it stops its workers), then waits for exit.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("python stops within 30 s")
            .expect("wait python");
        assert!(
            status.success(),
            "python failed ({status}):\n{}",
            self.log()
        );
    }

    /// Waits for exit; returns stdout as JSON.
    async fn output(mut self) -> Value {
        let mut stdout = self.child.stdout.take().expect("piped stdout");
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out)
            .await
            .expect("read stdout");
        let status = self.child.wait().await.expect("wait python");
        assert!(
            status.success(),
            "python failed ({status}):\n{}",
            self.log()
        );
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `python -m dramatiq rabbit_app` on `q`, one process, two threads; its actors append to
/// the returned results file.
fn python_worker(q: &str, env: &[(&str, &str)]) -> (Py, PathBuf) {
    let results = std::env::temp_dir().join(format!("rabbit-results-{q}.jsonl"));
    let path = results.to_str().unwrap().to_owned();
    let mut env = env.to_vec();
    env.push(("RABBIT_RESULTS", &path));
    let py = Py::spawn(
        q,
        &[
            "-m",
            "dramatiq",
            "rabbit_app",
            "--processes",
            "1",
            "--threads",
            "2",
            "--queues",
            q,
        ],
        &env,
    );
    (py, results)
}

fn python_results(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// ---- Python producer, our worker ----------------------------------------------------------

type Runs = Mutex<HashMap<String, Vec<(Value, Message, Instant)>>>;

fn runs() -> &'static Runs {
    static RUNS: std::sync::OnceLock<Runs> = std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn ran(key: &str, value: Value) {
    let message = current_message()
        .map(|m| (*m).clone())
        .expect("current message");
    runs()
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push((value, message, Instant::now()));
}

fn runs_of(key: &str) -> usize {
    runs().lock().unwrap().get(key).map_or(0, Vec::len)
}

#[actor(queue_name = "rabbit_rs")]
async fn rabbit_rs_add(key: String, x: i64, y: i64) -> i64 {
    ran(&key, json!(x + y));
    x + y
}

#[actor(queue_name = "rabbit_rs")]
async fn rabbit_rs_greet(key: String, name: String, punctuation: Option<String>) -> String {
    let text = format!("Hello {name}{}", punctuation.as_deref().unwrap_or("."));
    ran(&key, json!(text));
    text
}

#[actor(queue_name = "rabbit_rs", max_retries = 0)]
async fn rabbit_fleet(key: String, n: i64) {
    ran(&key, json!(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producers_messages_run_on_our_rabbitmq_worker() {
    python_to_us("rabbit_py2rs", config(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producers_messages_run_on_our_worker_over_quorum_queues() {
    python_to_us(
        "rabbit_py2rs_qq",
        config().queue_type(QueueType::Quorum),
        QUORUM,
    )
    .await;
}

/// What a Python app on quorum queues sets (`tests/python/rabbit_broker.py`).
const QUORUM: &[(&str, &str)] = &[("RABBITMQ_QUEUE_TYPE", "quorum")];

/// Python's producer sends positional and keyword arguments, a delayed message and a retry
/// through `.DQ`; our worker, on `config`, runs each once with the right values.
async fn python_to_us(prefix: &str, config: RabbitmqConfig, env: &[(&str, &str)]) {
    let q = queue(prefix);
    let key = uuid::Uuid::new_v4().to_string();
    let broker = broker(config);
    // We declare first here, Python redeclares when it sends.
    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .start()
        .await
        .unwrap();
    let sent_at = Instant::now();
    let mut env = env.to_vec();
    env.push(("INTEROP_KEY", &key));
    let sent = Py::spawn(&q, &["rabbit_produce.py"], &env).output().await;
    eventually(Duration::from_secs(30), "the five Python messages", || {
        let key = key.clone();
        async move { runs_of(&key) == 5 }
    })
    .await;
    let report = worker.stop().await.unwrap();
    assert_eq!(report.dead_lettered, 0);

    let runs = runs().lock().unwrap().remove(&key).unwrap();
    let by_id: HashMap<&str, &(Value, Message, Instant)> =
        runs.iter().map(|r| (r.1.message_id.as_str(), r)).collect();
    let get = |what: &str| by_id[sent[what].as_str().unwrap()];
    assert_eq!(get("positional").0, json!(3));
    assert_eq!(get("kwargs").0, json!(7));
    assert_eq!(get("greet").0, json!("Hello Ada!"));
    let delayed = get("delayed");
    assert_eq!(delayed.0, json!(11));
    assert!(delayed.2.duration_since(sent_at) >= Duration::from_millis(300));
    assert_eq!(delayed.1.queue_name, q);
    let retry = get("retry");
    assert_eq!(retry.0, json!(15));
    assert_eq!(retry.1.retries(), 1, "the retry count Python wrote is kept");
    assert_eq!(count(&format!("{q}.DQ")).await, 0);
    assert_eq!(count(&format!("{q}.XQ")).await, 0);
    cleanup(&broker, &q).await;
}

// ---- Our producer, a Python worker ----------------------------------------------------------

fn py_message(q: &str, actor: &str, args: Vec<Value>, kwargs: Value) -> Message {
    let mut m = Message::new(q, actor, args);
    m.kwargs = kwargs.as_object().cloned().unwrap_or_default();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_producers_messages_run_on_a_python_rabbitmq_worker() {
    us_to_python("rabbit_rs2py", config(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_producers_messages_run_on_a_python_worker_over_quorum_queues() {
    us_to_python(
        "rabbit_rs2py_qq",
        config().queue_type(QueueType::Quorum),
        QUORUM,
    )
    .await;
}

/// Our producer sends positional and keyword arguments, a delayed message, a message Python
/// retries through `.DQ` and one it dead-letters; Python's worker, declaring as `env` says,
/// runs them, and its dead letter reads back through our operator API.
async fn us_to_python(prefix: &str, config: RabbitmqConfig, env: &[(&str, &str)]) {
    let q = queue(prefix);
    let broker = broker(config);
    let mut ids = Vec::new();
    for (m, delay) in [
        (
            py_message(&q, "rabbit_py_add", vec![json!(1), json!(2)], json!({})),
            None,
        ),
        (
            py_message(
                &q,
                "rabbit_py_add",
                vec![],
                json!({"x": 3, "y": 4, "scale": 10}),
            ),
            None,
        ),
        (
            py_message(&q, "rabbit_py_add", vec![json!(5), json!(6)], json!({})),
            Some(Duration::from_millis(300)),
        ),
        (
            py_message(&q, "rabbit_py_flaky", vec![json!("t")], json!({})),
            None,
        ),
        (
            py_message(&q, "rabbit_py_fail", vec![json!("boom")], json!({})),
            None,
        ),
    ] {
        ids.push(broker.enqueue(m, delay).await.unwrap().message_id);
    }
    let (worker, results) = python_worker(&q, env);
    let start = Instant::now();
    // Three adds, the flaky one twice (its retry through .DQ), the failing one once.
    loop {
        let done = python_results(&results);
        if done.len() == 6 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the Python worker ran {done:?}:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = python_results(&results);
    let value = |id: &str| {
        done.iter()
            .filter(|r| r["message_id"] == id)
            .map(|r| r["value"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(value(&ids[0]), [json!(3)]);
    assert_eq!(value(&ids[1]), [json!(70)]);
    assert_eq!(value(&ids[2]), [json!(11)]);
    let flaky: Vec<&Value> = done
        .iter()
        .filter(|r| r["message_id"] == ids[3].as_str())
        .collect();
    assert_eq!(
        flaky
            .iter()
            .map(|r| r["retries"].clone())
            .collect::<Vec<_>>(),
        [json!(0), json!(1)]
    );
    eventually(
        Duration::from_secs(10),
        "Python dead-lettered the failure",
        || async { count(&format!("{q}.XQ")).await == 1 },
    )
    .await;
    worker.stop().await;
    // Python's dead letter, as our operator commands see it.
    let dead = broker.dead_letters(&q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, ids[4]);
    assert_eq!(
        dead[0].message.as_ref().unwrap().actor_name,
        "rabbit_py_fail"
    );
    let _ = std::fs::remove_file(&results);
    cleanup(&broker, &q).await;
}

// ---- Declarations ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_declared_by_either_side_first_are_accepted_by_the_other() {
    let classic = |p: Option<u8>| match p {
        Some(p) => config().max_priority(p),
        None => config(),
    };
    for (ours, env) in [
        (classic(None), vec![]),
        (classic(Some(10)), vec![("RABBITMQ_MAX_PRIORITY", "10")]),
        (config().queue_type(QueueType::Quorum), QUORUM.to_vec()),
    ] {
        // Python first, then us.
        let q = queue("rabbit_decl_py_first");
        Py::spawn(&q, &["rabbit_produce.py", "declare"], &env)
            .output()
            .await;
        let b = broker(ours.clone());
        b.declare_queue(&q)
            .await
            .expect("our declaration matches Python's");
        b.enqueue(Message::new(&q, "x", vec![]), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        cleanup(&b, &q).await;
        // Us first, then Python.
        let q = queue("rabbit_decl_rs_first");
        let b = broker(ours);
        b.declare_queue(&q).await.unwrap();
        Py::spawn(&q, &["rabbit_produce.py", "declare"], &env)
            .output()
            .await;
        cleanup(&b, &q).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_type_mismatch_is_refused_clearly_and_changes_nothing() {
    // Python's plain broker declared the queues classic: our quorum declaration is refused
    // with RabbitMQ's reason, and the queue keeps working for a classic declarer.
    let q = queue("rabbit_decl_mismatch");
    Py::spawn(&q, &["rabbit_produce.py", "declare"], &[])
        .output()
        .await;
    let quorum = broker(config().queue_type(QueueType::Quorum));
    let err = quorum
        .enqueue(Message::new(&q, "x", vec![]), None)
        .await
        .expect_err("a quorum declaration of a classic queue");
    let text = err.to_string();
    assert!(
        text.contains(&q) && text.contains("x-queue-type"),
        "the error names the queue and the argument: {text}"
    );
    let classic = broker(config());
    classic
        .enqueue(Message::new(&q, "x", vec![]), None)
        .await
        .expect("the classic queue still takes messages");
    assert_eq!(count(&q).await, 1);
    cleanup(&classic, &q).await;

    // The reverse: our quorum queues, then Python's plain broker, which RabbitMQ refuses.
    let q = queue("rabbit_decl_mismatch_qq");
    quorum.declare_queue(&q).await.unwrap();
    let mut py = Py::spawn(&q, &["rabbit_produce.py", "declare"], &[]);
    let status = py.child.wait().await.expect("wait python");
    assert!(!status.success(), "Python's classic declaration is refused");
    assert!(py.log().contains("x-queue-type"), "{}", py.log());
    cleanup(&quorum, &q).await;
}

// ---- A mixed fleet --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_and_ours_drain_one_queue_exactly_once() {
    let q = queue("rabbit_fleet");
    let key = uuid::Uuid::new_v4().to_string();
    let broker = broker(config());
    let (py, results) = python_worker(&q, &[]);
    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .threads(2)
        .prefetch(2)
        .start()
        .await
        .unwrap();
    // Both fleets consume before the first message is sent (ours is up long before Python's).
    eventually(
        Duration::from_secs(30),
        "Python's worker to consume",
        || async { consumers(&q).await >= 2 },
    )
    .await;
    let total = 300;
    let batch: Vec<Message> = (0..total)
        .map(|n| {
            let mut m = rabbit_fleet::message(key.clone(), n).build().unwrap();
            m.queue_name = q.clone();
            m
        })
        .collect();
    let sent: HashSet<String> = broker
        .enqueue_batch(batch, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    eventually(
        Duration::from_secs(60),
        "the fleet drained the queue",
        || async { runs_of(&key) + python_results(&results).len() >= total as usize },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await.unwrap();
    py.stop().await;
    let ours: Vec<String> = runs()
        .lock()
        .unwrap()
        .remove(&key)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.1.message_id)
        .collect();
    let theirs: Vec<String> = python_results(&results)
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!theirs.is_empty(), "Python took part");
    assert!(!ours.is_empty(), "we took part");
    let mut all = ours.clone();
    all.extend(theirs.iter().cloned());
    assert_eq!(
        all.len(),
        sent.len(),
        "each message ran once (ours {}, Python's {})",
        ours.len(),
        theirs.len()
    );
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), sent);
    let _ = std::fs::remove_file(&results);
    cleanup(&broker, &q).await;
}
