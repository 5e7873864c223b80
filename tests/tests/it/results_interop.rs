//! Interop with Python Dramatiq 2.2.1 on one Redis: results stored by either side are read
//! by the other (same md5 keys, same encoding), and limiters on one key share the limit.

use std::sync::Arc;
use std::time::Duration;

use actor_runtime::rate_limits::{ConcurrentRateLimiter, RedisRateLimiterBackend};
use actor_runtime::results::{result_handle, RedisResultBackend, ResultError, ResultKeys, Results};
use actor_runtime::{actor, Broker, Message, Worker};
use serde_json::json;

use crate::support::results::{delete_keys, python, run_python};
use crate::support::{namespace, redis_url};

#[actor(queue_name = "interop_results_q", store_results = true)]
async fn rust_total(prices: Vec<u32>) -> u64 {
    prices.iter().map(|p| u64::from(*p)).sum()
}

#[derive(Debug)]
struct OutOfStock;

impl std::fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("item 42 is out of stock")
    }
}

#[actor(
    queue_name = "interop_results_q",
    store_results = true,
    max_retries = 0
)]
async fn rust_reserve(item: u32) -> Result<u32, OutOfStock> {
    let _ = item;
    Err(OutOfStock)
}

fn encoded(message: &Message) -> String {
    String::from_utf8(message.encode()).unwrap()
}

async fn cleanup(ns: &str, messages: &[&Message]) {
    let keys = ResultKeys {
        namespace: ns.to_owned(),
        plain: false,
    };
    for message in messages {
        delete_keys(&keys.key(message)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_results_a_rust_actor_stored() {
    let Some(python) = python() else { return };
    let ns = namespace();
    let backend = RedisResultBackend::new(redis_url())
        .unwrap()
        .namespace(ns.clone());
    let broker = Broker::stub();
    broker.middleware().add(Arc::new(Results::new(backend)));
    let worker = Worker::new(broker.clone())
        .queues(["interop_results_q"])
        .start()
        .await
        .unwrap();
    let total = rust_total::message(vec![250, 1000])
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let failed = rust_reserve::message(42)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        total
            .get_result(true, Duration::from_secs(10))
            .await
            .unwrap(),
        1250
    );
    assert!(failed
        .get_result(true, Duration::from_secs(10))
        .await
        .is_err());
    worker.stop().await.unwrap();

    let read = run_python(
        &python,
        "results_interop.py",
        &["get", &ns, &encoded(total.message())],
    )
    .await;
    assert_eq!(read["result"], 1250, "{read}");
    let expected_key = ResultKeys {
        namespace: ns.clone(),
        plain: false,
    }
    .key(total.message());
    assert_eq!(read["key"], expected_key.as_str());
    let read = run_python(
        &python,
        "results_interop.py",
        &["get", &ns, &encoded(failed.message())],
    )
    .await;
    assert_eq!(
        read["failure"],
        json!({"type": "OutOfStock", "msg": "item 42 is out of stock"}),
        "{read}"
    );
    cleanup(&ns, &[total.message(), failed.message()]).await;
}

#[tokio::test]
async fn rust_reads_results_python_stored() {
    let Some(python) = python() else { return };
    let ns = namespace();
    let backend = RedisResultBackend::new(redis_url())
        .unwrap()
        .namespace(ns.clone());
    let broker = Broker::stub();
    broker.middleware().add(Arc::new(Results::new(backend)));

    // A message Python sent (or will): known to Rust by its id only.
    let id = uuid::Uuid::new_v4().to_string();
    let handle = result_handle::<rust_total>(&id, broker.clone());
    assert!(matches!(
        handle.get_result(false, Duration::ZERO).await,
        Err(ResultError::Missing { .. })
    ));
    let waiter = {
        let handle = result_handle::<rust_total>(&id, broker.clone());
        tokio::spawn(async move { handle.get_result(true, Duration::from_secs(20)).await })
    };
    run_python(
        &python,
        "results_interop.py",
        &["store", &ns, &encoded(handle.message()), "1250"],
    )
    .await;
    assert_eq!(waiter.await.unwrap().unwrap(), 1250);
    assert_eq!(
        handle.get_result(false, Duration::ZERO).await.unwrap(),
        1250
    );

    let other = result_handle::<rust_reserve>(&uuid::Uuid::new_v4().to_string(), broker.clone());
    run_python(
        &python,
        "results_interop.py",
        &["store_failure", &ns, &encoded(other.message())],
    )
    .await;
    match other.get_result(false, Duration::ZERO).await {
        Err(ResultError::Failed {
            type_name, message, ..
        }) => assert_eq!(
            (type_name.as_str(), message.as_str()),
            ("ValueError", "boom from python")
        ),
        other => panic!("expected Python's ValueError, got {other:?}"),
    }
    cleanup(&ns, &[handle.message(), other.message()]).await;
}

#[tokio::test]
async fn rust_and_python_limiters_on_one_key_share_the_limit() {
    let Some(python) = python() else { return };
    let key = namespace();
    let backend = Arc::new(RedisRateLimiterBackend::new(redis_url()).unwrap());
    let mutex = ConcurrentRateLimiter::new(backend, key.as_str(), 1);
    let guard = mutex.acquire().await.unwrap();
    let held = run_python(&python, "results_interop.py", &["limiter", &key]).await;
    assert_eq!(held["acquired"], false, "Python got a mutex Rust holds");
    guard.release().await;
    let free = run_python(&python, "results_interop.py", &["limiter", &key]).await;
    assert_eq!(free["acquired"], true, "Python could not get a free mutex");
    // Python released it: Rust gets it again.
    assert!(mutex.try_acquire().await.is_some());
    delete_keys(&key).await;
}

#[actor(queue_name = "results_rs_q", store_results = true)]
async fn rr_py_add(x: i64, y: i64) -> i64 {
    x + y
}

#[actor(queue_name = "results_rs_q")]
async fn rr_py_done(key: String) {
    crate::support::results::record(&key, json!("group done"));
}

/// `python -m dramatiq results_app` on `results_py_q`, stopped (SIGTERM) on drop.
struct PythonWorker(std::process::Child);

impl PythonWorker {
    fn start(python: &std::path::Path, ns: &str, results_ns: &str) -> Self {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python");
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{ns}.log"))).unwrap();
        let child = std::process::Command::new(python)
            .args(["-m", "dramatiq", "results_app", "--path"])
            .arg(&dir)
            .args([
                "--processes",
                "1",
                "--threads",
                "2",
                "--queues",
                "results_py_q",
            ])
            .env("REDIS_URL", redis_url())
            .env("DRAMATIQ_NAMESPACE", ns)
            .env("RESULTS_NAMESPACE", results_ns)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelines_and_groups_cross_between_rust_and_python_workers() {
    use actor_runtime::broker::RedisConfig;
    use actor_runtime::composition::{Group, GroupCallbacks, Pipeline};
    use actor_runtime::Broker;

    let Some(python) = python() else { return };
    let ns = namespace();
    let results_ns = format!("{ns}-results");
    let broker = Broker::redis(RedisConfig::new(redis_url()).namespace(ns.as_str())).unwrap();
    let backend = RedisResultBackend::new(redis_url())
        .unwrap()
        .namespace(results_ns.clone());
    broker.middleware().add(Arc::new(Results::new(backend)));
    let barriers = RedisRateLimiterBackend::new(redis_url()).unwrap();
    broker.middleware().add(Arc::new(
        GroupCallbacks::new(Arc::new(barriers)).with_barrier_ttl(Duration::from_secs(60)),
    ));
    let python_worker = PythonWorker::start(&python, &ns, &results_ns);
    let worker = Worker::new(broker.clone())
        .threads(4)
        .queues(["results_rs_q"])
        .start()
        .await
        .unwrap();

    // Rust 1 + 2 = 3 -> Python 10 * 3 = 30 -> Rust 5 + 30 = 35.
    let chain = Pipeline::new()
        .then(rr_py_add::message(1, 2))
        .then(Message::new(
            "results_py_q",
            "py_results_mul",
            vec![json!(10)],
        ))
        .then(Message::new("results_rs_q", "rr_py_add", vec![json!(5)]))
        .broker(broker.clone());
    chain.run().await.unwrap();
    let wait = Duration::from_secs(30);
    assert_eq!(chain.get_result(true, wait).await.unwrap(), json!(35));
    assert_eq!(
        chain.get_results(false, Duration::ZERO).await.unwrap(),
        vec![json!(3), json!(30), json!(35)]
    );

    // One member runs in Python, one in Rust; whichever finishes last sends the callback.
    let k = crate::support::results::key();
    let members = Group::new()
        .member(Message::new(
            "results_py_q",
            "py_results_mul",
            vec![json!(6), json!(7)],
        ))
        .member(rr_py_add::message(20, 22))
        .add_completion_callback(rr_py_done::message(k.clone()))
        .broker(broker.clone());
    members.run().await.unwrap();
    assert_eq!(
        members.get_results(true, wait).await.unwrap(),
        vec![json!(42), json!(42)]
    );
    broker.join("results_rs_q", Some(wait), true).await.unwrap();
    assert_eq!(
        crate::support::results::recorded(&k),
        vec![json!("group done")]
    );

    worker.stop().await.unwrap();
    drop(python_worker);
    let keys = ResultKeys {
        namespace: results_ns,
        plain: false,
    };
    for step in chain.steps() {
        delete_keys(&keys.key(step)).await;
    }
    for member in members.members() {
        if let actor_runtime::composition::GroupMember::Message(message) = member {
            delete_keys(&keys.key(message)).await;
        }
    }
    crate::support::redis::cleanup(&broker, 0).await;
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{ns}.log")));
}
