//! The worker CLI and operator commands on RabbitMQ through the real binary, each test in a
//! vhost of its own (the binary's actors use the fixed queue `cli`): chosen from
//! `RABBITMQ_URL` beside `REDIS_URL`, `enqueue`, `queues`, `dead-letters list|requeue|purge`,
//! the Prometheus metrics, and a SIGKILLed worker whose unacked messages come back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actor_runtime::broker::{QueueStats, RabbitmqConfig};
use actor_runtime::Broker;
use serde_json::{json, Value};

use crate::support::cli::{http_get, kill, metrics_url, Proc, WORKER};
use crate::support::redis_url;

/// A vhost of one test, the broker on it, and the file the binary's actors append to.
struct Vhost {
    vhost: String,
    url: String,
    out: std::path::PathBuf,
    broker: Broker,
}

async fn rabbitmqctl(args: &[&str]) {
    let status = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

impl Vhost {
    async fn new() -> Vhost {
        let vhost = format!("test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &vhost]).await;
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]).await;
        let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
        Vhost {
            out: std::env::temp_dir().join(format!("{vhost}.jsonl")),
            broker: Broker::rabbitmq(RabbitmqConfig::new(&url)).unwrap(),
            vhost,
            url,
        }
    }

    fn env(&self) -> Vec<(&str, String)> {
        vec![
            ("RABBITMQ_URL", self.url.clone()),
            // Beside it, Redis serves results and limits; RabbitMQ stays the broker.
            ("REDIS_URL", redis_url()),
            ("CLI_TEST_OUT", self.out.to_str().unwrap().to_owned()),
        ]
    }

    async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let output = tokio::process::Command::new(WORKER)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("APP_ENV")
            .env_remove("BROKER")
            .envs(self.env())
            .output()
            .await
            .expect("run the CLI");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn cli_json(&self, args: &[&str]) -> Value {
        let (code, stdout, stderr) = self.cli(args).await;
        assert_eq!(code, 0, "{args:?} failed:\n{stderr}");
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn spawn(&self, args: &[&str]) -> Proc {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Proc::spawn(WORKER, args, &env)
    }

    async fn stats(&self) -> QueueStats {
        self.broker.stats("cli").await.unwrap()
    }

    async fn wait_stats(&self, what: &str, check: impl Fn(&QueueStats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.stats().await;
            if check(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn recorded(&self) -> HashMap<String, usize> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut runs = HashMap::new();
        for line in text.lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            *runs
                .entry(value["key"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        runs
    }

    async fn cleanup(self) {
        self.broker.close().await;
        let _ = std::fs::remove_file(&self.out);
        rabbitmqctl(&["delete_vhost", &self.vhost]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_and_the_worker_cli_run_on_rabbitmq() {
    let v = Vhost::new().await;
    for (actor, args) in [
        ("cli_record", r#"["k1"]"#),
        ("cli_fail", r#"["bad1"]"#),
        ("cli_fail", r#"["bad2"]"#),
    ] {
        let (code, stdout, stderr) = v.cli(&["enqueue", actor, "--args", args]).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let queues = v.cli_json(&["queues", "cli", "--json"]).await;
    assert_eq!(
        queues["queues"],
        json!([{"name": "cli", "ready": 3, "delayed": 0, "in_flight": 0, "dead": 0}])
    );

    let mut worker = v.spawn(&["-p", "1", "-Q", "cli", "--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_url(&mut worker).await;
    let started = worker.wait_message("worker started").await;
    assert!(started.to_string().contains("rabbitmq"), "{started}");
    v.wait_stats("the worker to drain `cli`", |s| s.ready == 0 && s.dead == 2)
        .await;
    assert_eq!(v.recorded(), HashMap::from([("k1".to_owned(), 1)]));
    // The Prometheus middleware counts on this broker as on Redis.
    let labels = |actor: &str| format!(r#"{{queue_name="cli",actor_name="{actor}"}}"#);
    let expected = [
        format!("dramatiq_messages_total{} 1", labels("cli_record")),
        format!("dramatiq_messages_total{} 2", labels("cli_fail")),
        format!("dramatiq_message_errors_total{} 2", labels("cli_fail")),
        format!("dramatiq_message_rejects_total{} 2", labels("cli_fail")),
        format!("dramatiq_messages_inprogress{} 0", labels("cli_record")),
        format!(
            "dramatiq_message_duration_milliseconds_count{} 1",
            labels("cli_record")
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(&metrics).await;
        if expected.iter().all(|line| body.lines().any(|l| l == line)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {expected:#?}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0), "{}", worker.dump());

    let dead = v.cli_json(&["dead-letters", "list", "cli", "--json"]).await;
    let dead = dead.as_array().unwrap().clone();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead
        .iter()
        .all(|d| d["message"]["actor_name"] == "cli_fail"));
    let first = dead[0]["id"].as_str().unwrap();
    let requeued = v
        .cli_json(&["dead-letters", "requeue", "cli", "--id", first, "--json"])
        .await;
    assert_eq!(requeued["requeued"], 1);
    let stats = v.stats().await;
    assert_eq!((stats.ready, stats.dead), (1, 1));
    let (code, text, stderr) = v.cli(&["dead-letters", "purge", "cli"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("purged 1"), "{text}");
    assert_eq!(v.stats().await.dead, 0);
    v.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_unacked_messages_come_back_and_run_once() {
    let v = Vhost::new().await;
    let mut worker = v.spawn(&["-p", "1", "-t", "2", "--prefetch", "4", "-Q", "cli"]);
    let started = worker.wait_message("worker started").await;
    let pid = started["pid"].as_u64().expect("a pid field") as u32;
    for n in 0..4 {
        let key = format!("slow{n}");
        let args = format!(r#"["{key}", 2000]"#);
        let (code, _, stderr) = v.cli(&["enqueue", "cli_sleep", "--args", &args]).await;
        assert_eq!(code, 0, "{stderr}");
    }
    // All four are fetched (two running, two prefetched) and none acked.
    v.wait_stats("the worker to take all four", |s| s.ready == 0)
        .await;
    // SIGKILL the worker process itself (not its supervisor): RabbitMQ sees the connection
    // drop and requeues what it held.
    kill("KILL", pid);
    v.wait_stats("the four to come back", |s| s.ready == 4)
        .await;
    assert_eq!(v.stats().await.dead, 0, "nothing dead-lettered");
    if pid != worker.pid() {
        kill("KILL", worker.pid());
    }
    let _ = worker.exit().await;
    assert!(v.recorded().is_empty(), "none had finished");
    // A new worker runs each of them once.
    let mut again = v.spawn(&["-p", "1", "-t", "4", "-Q", "cli"]);
    again.wait_message("worker started").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while v.recorded().len() < 4 {
        assert!(Instant::now() < deadline, "timed out: {:?}", v.recorded());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    v.wait_stats("the new worker to ack them", |s| {
        s.ready == 0 && s.in_flight == 0
    })
    .await;
    assert!(v.recorded().values().all(|&n| n == 1), "{:?}", v.recorded());
    kill("TERM", again.pid());
    assert_eq!(again.exit().await.code(), Some(0), "{}", again.dump());
    v.cleanup().await;
}
