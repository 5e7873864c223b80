//! CLI processes in tests: a running binary whose JSON log lines a test reads, signals, the
//! supervisor's lines, and `Fixture`, one test's Redis namespace for CLI workers.

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use actor_runtime::broker::QueueStats;
use actor_runtime::broker::RedisConfig;
use actor_runtime::Broker;
use redis::AsyncCommands;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::{namespace, redis_url};

pub const WORKER: &str = env!("CARGO_BIN_EXE_cli_worker");
/// Generous: CI machines are slow, and every wait ends as soon as its event happens.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// A running CLI process whose JSON log lines (stderr) the test reads as they come.
pub struct Proc {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    stdout: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<Value>,
}

impl Proc {
    /// Starts `bin` with `args`, JSON logs and no broker configured unless `env` sets one.
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(bin);
        command
            .args(args)
            .arg("--log-format=json")
            .env_remove("REDIS_URL")
            .env_remove("RABBITMQ_URL")
            .env_remove("BROKER")
            .env_remove("RUST_LOG")
            .env_remove("WORKER_PROCESSES")
            .env_remove("WORKER_THREADS")
            .env_remove("APP_ENV")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn the CLI binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while reader
                .read_until(b'\n', &mut line)
                .await
                .is_ok_and(|n| n > 0)
            {
                let _ = out_tx.send(String::from_utf8_lossy(&line).into_owned());
                line.clear();
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            stdout: out_rx,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// The next log line (after those already consumed) matching `predicate`.
    pub async fn wait_for(&mut self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if predicate(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "the process ended before {what}; its logs:\n{}",
                    self.dump()
                ),
                Err(_) => panic!("timed out waiting for {what}; logs:\n{}", self.dump()),
            }
        }
    }

    /// The next stdout line (lossily decoded) containing `text`.
    pub async fn wait_stdout(&mut self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.recv()).await {
                Ok(Some(line)) if line.contains(text) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!("stdout closed before `{text}`; logs:\n{}", self.dump()),
                Err(_) => panic!(
                    "timed out waiting for `{text}` on stdout; logs:\n{}",
                    self.dump()
                ),
            }
        }
    }

    /// The next line whose message is `message`.
    pub async fn wait_message(&mut self, message: &str) -> Value {
        self.wait_for(message, |l| l["message"] == message).await
    }

    pub fn dump(&self) -> String {
        self.seen
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the process did not exit; logs:\n{}", self.dump()))
            .expect("wait");
        // The rest of its logs (the pipe closes when it and its children are gone).
        while let Ok(Some(line)) = tokio::time::timeout(DEADLINE, self.lines.recv()).await {
            self.seen.push(line);
        }
        status
    }
}

/// Sends `signal` (`TERM`, `KILL`, `HUP`...) to `pid`.
pub fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// Waits for a supervisor (or a lone worker) to say where it serves metrics; returns that URL.
pub(crate) async fn metrics_url(supervisor: &mut Proc) -> String {
    let serving = supervisor
        .wait_for("the metrics address", |l| {
            l["message"].as_str().is_some_and(|m| {
                // A supervisor's summed endpoint, or a lone worker's own.
                m.starts_with("metrics of all worker processes at") || m.starts_with("metrics at ")
            })
        })
        .await;
    let message = serving["message"].as_str().unwrap_or_default();
    message.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// The `worker_pid` field of a supervisor log line.
pub(crate) fn pid_of(line: &Value) -> u32 {
    line["worker_pid"].as_u64().expect("a worker_pid field") as u32
}

/// Waits for each of `n` workers' first "ready" line; returns their pids by index.
pub(crate) async fn ready_workers(supervisor: &mut Proc, n: usize) -> Vec<u32> {
    let mut pids = vec![0; n];
    while pids.contains(&0) {
        let line = supervisor.wait_message("worker process ready").await;
        pids[line["worker"].as_u64().unwrap() as usize] = pid_of(&line);
    }
    pids
}

/// GET `url` (`http://host:port/path`) with a bare HTTP/1.0 request; returns the body.
pub async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_owned()
}

/// One test's namespace on the test Redis, and a file its workers' actors append to.
pub(crate) struct Fixture {
    pub(crate) url: String,
    pub(crate) ns: String,
    out: std::path::PathBuf,
    pub(crate) broker: Broker,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let (url, ns) = (redis_url(), namespace());
        let broker = Broker::redis(RedisConfig::new(&url).namespace(&ns)).unwrap();
        Fixture {
            out: std::env::temp_dir().join(format!("{ns}.jsonl")),
            url,
            ns,
            broker,
        }
    }

    pub(crate) fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("REDIS_URL", self.url.as_str()),
            ("DRAMATIQ_NAMESPACE", self.ns.as_str()),
            ("CLI_TEST_OUT", self.out.to_str().unwrap()),
        ]
    }

    /// Runs a CLI command to its end: (exit code, stdout, stderr).
    pub(crate) async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let output = tokio::process::Command::new(WORKER)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("APP_ENV")
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

    /// A CLI command that must succeed and print JSON.
    pub(crate) async fn cli_json(&self, args: &[&str]) -> Value {
        let (code, stdout, stderr) = self.cli(args).await;
        assert_eq!(code, 0, "{args:?} failed:\n{stderr}");
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    pub(crate) fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(WORKER, args, &self.env())
    }

    pub(crate) async fn stats(&self, queue: &str) -> QueueStats {
        self.broker.stats(queue).await.unwrap()
    }

    /// Polls `check` on the queue's counts until it holds.
    pub(crate) async fn wait_stats(
        &self,
        queue: &str,
        what: &str,
        check: impl Fn(&QueueStats) -> bool,
    ) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let stats = self.stats(queue).await;
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

    /// Every line the actors recorded, in order.
    pub(crate) fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// What the actors recorded: key -> number of runs.
    pub(crate) fn recorded(&self) -> HashMap<String, usize> {
        let mut runs = HashMap::new();
        for value in self.records() {
            *runs
                .entry(value["key"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        runs
    }

    pub(crate) async fn wait_recorded(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.recorded().len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} runs; have {:?}",
                self.recorded()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn cleanup(self) {
        self.broker.close().await;
        let _ = std::fs::remove_file(&self.out);
        let mut conn = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<'_, String> =
                conn.scan_match(format!("{}:*", self.ns)).await.unwrap();
            let mut keys = Vec::new();
            while let Some(key) = iter.next_item().await {
                keys.push(key.unwrap());
            }
            keys
        };
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.unwrap();
        }
    }
}
