//! Slow and blocking actors. A plain `fn` actor past its time limit abandons its thread; the
//! pool replaces it, counts it, and past a cap the worker asks to be stopped, which the CLI
//! does so that its supervisor starts a fresh process. An async actor that blocks its runtime
//! thread is reported by the watchdog. In-process on the stub broker, then through the CLI
//! binary on Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use actor_runtime::{actor, Broker, Message, Worker};
use tokio::sync::Semaphore;

use crate::support::cli::{alive, pid_of, ready_workers, Fixture};

const DEADLINE: Duration = Duration::from_secs(30);

/// What one test's stuck actors share: starts, the threads they ran on, and the gate they
/// wait at until the test opens it.
struct Stuck {
    started: Semaphore,
    threads: Mutex<HashSet<std::thread::ThreadId>>,
    open: Mutex<bool>,
    opened: Condvar,
}

fn stuck_state(key: &str) -> Arc<Stuck> {
    static ALL: std::sync::OnceLock<Mutex<HashMap<String, Arc<Stuck>>>> =
        std::sync::OnceLock::new();
    let all = ALL.get_or_init(Mutex::default);
    all.lock()
        .unwrap()
        .entry(key.to_owned())
        .or_insert_with(|| {
            Arc::new(Stuck {
                started: Semaphore::new(0),
                threads: Mutex::default(),
                open: Mutex::new(false),
                opened: Condvar::new(),
            })
        })
        .clone()
}

impl Stuck {
    async fn wait_started(&self, n: u32) {
        let started = tokio::time::timeout(DEADLINE, self.started.acquire_many(n))
            .await
            .expect("the stuck actors started");
        started.unwrap().forget();
    }

    fn threads(&self) -> usize {
        self.threads.lock().unwrap().len()
    }

    /// Lets every stuck call return.
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Blocks its thread until the test opens its gate (a minute at most), far past its time
/// limit.
#[actor(queue_name = "blocking_stuck", time_limit = 200, max_retries = 0)]
fn stuck(key: String) {
    let state = stuck_state(&key);
    state
        .threads
        .lock()
        .unwrap()
        .insert(std::thread::current().id());
    state.started.add_permits(1);
    let open = state.open.lock().unwrap();
    let _open = state
        .opened
        .wait_timeout_while(open, Duration::from_secs(60), |open| !*open)
        .unwrap();
}

#[actor(queue_name = "blocking_quick")]
fn quick(n: u32) -> u32 {
    n
}

async fn send_stuck(broker: &Broker, key: &str) {
    stuck::message(key.to_owned())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether the worker asked to be stopped, without waiting.
async fn asked_to_stop(worker: &actor_runtime::worker::RunningWorker) -> bool {
    tokio::select! {
        biased;
        () = worker.stop_requested() => true,
        () = std::future::ready(()) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fn_actors_keep_running_while_abandoned_calls_hold_their_threads() {
    let broker: Broker = Broker::stub();
    let k = key();
    let state = stuck_state(&k);
    let worker = Worker::new(broker.clone())
        .threads(2)
        .max_abandoned_threads(10)
        .queues(["blocking_stuck", "blocking_quick"])
        .start()
        .await
        .unwrap();
    for _ in 0..4 {
        send_stuck(&broker, &k).await;
    }
    // Twice as many stuck calls as threads: the first two were abandoned and replaced.
    state.wait_started(4).await;
    broker
        .join("blocking_stuck", Some(DEADLINE), false)
        .await
        .unwrap();
    assert_eq!(worker.abandoned_threads(), 4);
    assert_eq!(
        state.threads(),
        4,
        "each stuck call has a thread of its own"
    );

    quick::message(1)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker
        .join("blocking_quick", Some(DEADLINE), true)
        .await
        .unwrap();
    assert!(!asked_to_stop(&worker).await, "4 of 10 abandoned threads");

    state.open();
    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.failed), (1, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_threads_past_the_cap_make_the_worker_ask_to_stop() {
    let broker: Broker = Broker::stub();
    let k = key();
    let state = stuck_state(&k);
    let (threads, max) = (2, 2);
    let worker = Worker::new(broker.clone())
        .threads(threads)
        .max_abandoned_threads(max)
        .queues(["blocking_stuck"])
        .start()
        .await
        .unwrap();
    const N: usize = 20;
    for _ in 0..N {
        send_stuck(&broker, &k).await;
    }
    tokio::time::timeout(DEADLINE, worker.stop_requested())
        .await
        .expect("the worker asks to be stopped");
    assert!(worker.abandoned_threads() > max);
    let report = worker.stop().await.unwrap();

    // Started: the calls abandoned up to the one past the cap, the others running then (all
    // time out together here), and a pool's worth started in their place before the stop
    // took effect (abandoned in turn at their time limit). Each holds a thread of its own
    // until the gate opens: that bounds the threads too.
    let started = state.threads();
    assert!(
        started <= max + 2 * threads,
        "{started} calls started: {report:?}"
    );
    assert_eq!(report.failed as usize, started, "{report:?}");
    let left = broker.stats("blocking_stuck").await.unwrap().ready as usize;
    assert_eq!(
        left + started,
        N,
        "the rest went back to the queue: {report:?}"
    );
    state.open();
}

/// Threads of `pid` (`Threads:` of /proc/PID/status), if it is alive.
fn thread_count(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_too_many_stuck_threads_is_replaced_by_its_supervisor() {
    let f = Fixture::new();
    // Far more than the cap: without it, a worker would keep a thread for each.
    const N: usize = 30;
    for i in 0..N {
        let args = vec![format!("s{i}").into(), 20_000.into()];
        let message = Message::new("cli", "cli_stuck", args);
        f.broker.enqueue(message, None).await.unwrap();
    }
    let mut supervisor = f.spawn(&["-p", "2", "-t", "1", "--max-abandoned-threads", "1"]);
    let pids = ready_workers(&mut supervisor, 2).await;
    // The most threads each worker process ever had, sampled until it exits.
    let peaks: Vec<_> = pids
        .iter()
        .map(|&pid| {
            tokio::spawn(async move {
                let mut peak = 0;
                while let Some(threads) = thread_count(pid).filter(|_| alive(pid)) {
                    peak = peak.max(threads);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                peak
            })
        })
        .collect();

    let error = supervisor
        .wait_for("a worker's stop for stuck threads", |l| {
            l["level"] == "ERROR"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("threads are stuck in plain `fn` actors"))
        })
        .await;
    let stopping = error["pid"].as_u64().unwrap() as u32;
    assert!(pids.contains(&stopping), "{error}");
    assert_eq!(error["abandoned"], 2, "{error}");
    assert_eq!(error["max_abandoned"], 1, "{error}");
    assert_eq!(error["actors"], "cli_stuck ×2", "{error}");
    let exited = supervisor
        .wait_for("the supervisor to see it exit", |l| {
            l["message"] == "worker process exited unexpectedly; restarting it"
                && l["worker_pid"] == stopping
        })
        .await;
    assert!(
        exited["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("exit status: 1")),
        "{exited}"
    );
    let worker = exited["worker"].clone();
    let ready = supervisor
        .wait_for("its replacement", |l| {
            l["message"] == "worker process ready" && l["worker"] == worker
        })
        .await;
    assert!(!pids.contains(&pid_of(&ready)), "{ready}");
    // It stopped gracefully: the stuck calls failed, none was left in flight.
    assert!(
        supervisor
            .seen
            .iter()
            .any(|l| l["pid"] == stopping && l["message"] == "worker stopped"),
        "{}",
        supervisor.dump()
    );

    crate::support::cli::kill("TERM", supervisor.pid());
    assert_eq!(
        supervisor.exit().await.code(),
        Some(0),
        "{}",
        supervisor.dump()
    );
    // The runtime's thread, the watchdog, the pool's thread, two abandoned ones (the second
    // is past the cap) and one more abandoned during the stop; a little room for tokio's.
    for peak in peaks {
        let peak = peak.await.unwrap();
        assert!(peak <= 8, "a worker process had {peak} threads");
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_actor_blocking_its_runtime_thread_is_reported() {
    let f = Fixture::new();
    let mut worker = f.spawn(&["-p", "1", "-t", "1"]);
    worker.wait_message("worker started").await;
    let message = Message::new("cli", "cli_block", vec!["b".into(), 2_000.into()]);
    let id = message.message_id.clone();
    f.broker.enqueue(message, None).await.unwrap();

    let about = |start: &'static str| {
        let id = id.clone();
        move |l: &serde_json::Value| {
            l["level"] == "WARN"
                && l["message_id"] == id.as_str()
                && l["message"].as_str().is_some_and(|m| m.starts_with(start))
        }
    };
    let warning = worker
        .wait_for(
            "the watchdog's warning",
            about("an async actor has blocked its runtime thread for over 1."),
        )
        .await;
    assert_eq!(warning["actor"], "cli_block", "{warning}");
    assert_eq!(warning["queue"], "cli", "{warning}");
    let message = warning["message"].as_str().unwrap();
    assert!(
        message
            .ends_with("use a plain `fn` actor or tokio::task::spawn_blocking for blocking calls"),
        "{message}"
    );
    let returned = worker
        .wait_for(
            "how long it blocked",
            about("an async actor blocked its runtime thread for about"),
        )
        .await;
    let blocked = returned["blocked_ms"].as_u64().unwrap();
    assert!((1_700..=2_600).contains(&blocked), "{returned}");

    crate::support::cli::kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0), "{}", worker.dump());
    assert_eq!(f.recorded().get("b"), Some(&1));
    f.cleanup().await;
}
