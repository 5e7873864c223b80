//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver, started
//! by each test on a free port): the overview, a queue, requeueing a dead letter that a
//! worker then runs, a job found by id and its history. Each page's screenshot is saved
//! under `target/dashboard-screenshots/` (the path is printed).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use actor_runtime::dashboard::Dashboard;
use actor_runtime::records::JobState;
use actor_runtime::{actor, current_message, Message, Worker};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

use super::{dead_letter, serve};
use crate::records::wait_state;
use crate::support::namespace;
use crate::support::postgres::{builder, cleanup as cleanup_records, database_url, schema_name};
use crate::support::redis::{broker, cleanup, config};

const WAIT: Duration = Duration::from_secs(30);

/// A chromedriver of this test's own, and a headless Chromium session on it.
struct Browser {
    client: Client,
    _driver: Child,
}

impl Browser {
    async fn start() -> Browser {
        let driver_bin =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            std::path::Path::new(&driver_bin).exists(),
            "the browser tests need chromedriver at {driver_bin}: apt-get install -y chromium chromium-driver"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        crate::support::eventually(WAIT, "chromedriver to listen", || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        let mut caps = serde_json::Map::new();
        let mut chrome = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400", "--hide-scrollbars"]
        });
        if let Ok(binary) = std::env::var("CHROMIUM") {
            chrome["binary"] = json!(binary);
        } else if std::path::Path::new("/usr/bin/chromium").exists() {
            chrome["binary"] = json!("/usr/bin/chromium");
        }
        caps.insert("goog:chromeOptions".into(), chrome);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{addr}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Saves a screenshot of the page as `name.png` and prints where.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
        let dir = target.join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        println!("screenshot: {}", path.display());
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
            .text()
            .await
            .expect("text")
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Keys whose `dash_browser_job` ran.
fn ran() -> &'static Mutex<HashSet<String>> {
    static RAN: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    RAN.get_or_init(Default::default)
}

#[actor(queue_name = "dash_browser")]
async fn dash_browser_job(key: String) {
    ran().lock().unwrap().insert(key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_follow_a_queue_and_requeue_a_dead_letter_that_a_worker_then_runs() {
    let ns = namespace();
    let broker = broker(config(&ns));
    // The worker process (its own broker, quick heartbeats that carry its activity).
    let workers_broker =
        crate::support::redis::broker(config(&ns).heartbeat_interval(Duration::from_millis(200)));
    let key = format!("browser-{}", uuid::Uuid::new_v4().simple());
    // Some life on the overview: a few ready and delayed messages elsewhere.
    for n in 0..3 {
        broker
            .enqueue(
                Message::new("dash_browser_other", "report", vec![json!(n)]),
                None,
            )
            .await
            .unwrap();
    }
    broker
        .enqueue(
            Message::new("dash_browser_other", "report", vec![json!("later")]),
            Some(Duration::from_secs(900)),
        )
        .await
        .unwrap();
    dead_letter(
        &broker,
        "dash_browser",
        "dash_browser_job",
        vec![json!(key)],
        "retries exhausted: connection refused",
    )
    .await;
    let worker = Worker::new(workers_broker.clone())
        .queues(["dash_browser"])
        .start()
        .await
        .unwrap();
    // Some activity for the chart: 20 runs, reported with the worker's heartbeats.
    for n in 0..20 {
        broker
            .enqueue(
                Message::new(
                    "dash_browser",
                    "dash_browser_job",
                    vec![json!(format!("{key}-{n}"))],
                ),
                None,
            )
            .await
            .unwrap();
    }
    broker
        .join("dash_browser", Some(WAIT), false)
        .await
        .unwrap();
    let addr = serve(Dashboard::new(broker.clone())).await;
    let browser = Browser::start().await;
    let c = &browser.client;

    c.goto(&format!("http://{addr}/")).await.unwrap();
    assert!(browser.text("h1").await.contains("Overview"));
    // The chart's script ran (same-origin script under the CSP) and drew the last hour,
    // updating itself until the worker's report came.
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("canvas#activity[data-processed=\"20\"]"))
        .await
        .expect("the chart script drew the worker's 20 runs without a reload");
    let worker_id = workers_broker.worker_id().unwrap().to_owned();
    assert!(
        browser.text("main").await.contains(&worker_id),
        "the worker is listed"
    );
    browser.screenshot("overview").await;

    // Follow the queue, then its dead letters.
    c.find(Locator::LinkText("dash_browser"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.text("nav.tabs").await;
    assert!(browser.text("h1").await.contains("Queue dash_browser"));
    c.find(Locator::LinkText("dead"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .text("nav.tabs a[aria-current][href$=\"state=dead\"]")
        .await;
    let row = browser.text("tbody tr").await;
    assert!(row.contains("connection refused"), "{row}");
    browser.screenshot("queue-dead").await;

    // Requeue: a confirmation first, then done.
    c.find(Locator::Css("tbody tr button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.text("form:has(input[name=confirmed])").await;
    assert!(browser.text("h1").await.contains("Requeue dead letter?"));
    browser.screenshot("confirm-requeue").await;
    c.find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = browser.text(".notice").await;
    assert!(
        notice.contains("Requeued 1 dead letter of dash_browser."),
        "{notice}"
    );

    // The worker runs it.
    broker
        .join("dash_browser", Some(WAIT), false)
        .await
        .unwrap();
    assert!(ran().lock().unwrap().contains(&key), "the requeued job ran");
    c.goto(&format!("http://{addr}/queues/dash_browser_other"))
        .await
        .unwrap();
    browser.screenshot("queue-ready").await;

    browser.close().await;
    worker.stop().await.unwrap();
    workers_broker.close().await;
    cleanup(&broker, 0).await;
}

#[actor(
    queue_name = "dash_browser_jobs",
    max_retries = 3,
    min_backoff = 10,
    max_backoff = 20
)]
async fn dash_browser_flaky(order: i64) -> Result<i64, String> {
    match current_message().map(|m| m.retries()) {
        Some(0) => Err(format!("payment gateway timed out for order {order}")),
        _ => Ok(order),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_search_a_job_by_id_and_open_its_history() {
    let broker = broker(config(&namespace()));
    let records = builder(&database_url(), &schema_name())
        .record_args_of(["dash_browser_flaky"])
        .build()
        .await
        .unwrap();
    broker.add_middleware(records.recorder());
    let worker = Worker::new(broker.clone())
        .queues(["dash_browser_jobs"])
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for order in [1042, 1043, 1044] {
        ids.push(
            dash_browser_flaky::message(order)
                .broker(broker.clone())
                .send()
                .await
                .unwrap()
                .message_id
                .clone(),
        );
    }
    for id in &ids {
        wait_state(&records, id, JobState::Succeeded).await;
    }
    worker.stop().await.unwrap();
    let addr = serve(Dashboard::new(broker.clone()).records(records.clone())).await;
    let browser = Browser::start().await;
    let c = &browser.client;

    c.goto(&format!("http://{addr}/jobs")).await.unwrap();
    let listed = browser.text("tbody").await;
    assert!(ids.iter().all(|id| listed.contains(id)), "{listed}");
    browser.screenshot("jobs").await;

    let form = c.form(Locator::Css("form[role=search]")).await.unwrap();
    form.set_by_name("id", &ids[0]).await.unwrap();
    form.submit().await.unwrap();
    browser.text("dl.fields").await;
    assert!(browser.text("h1").await.contains(&ids[0]));
    let attempts = browser.text("main").await;
    assert!(
        attempts.contains("payment gateway timed out for order 1042"),
        "{attempts}"
    );
    assert!(attempts.contains("succeeded"), "{attempts}");
    browser.screenshot("job").await;

    browser.close().await;
    cleanup(&broker, 0).await;
    cleanup_records(&records).await;
}
