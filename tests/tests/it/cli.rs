//! The worker CLI end to end, on the stub broker: exit codes, signals, the supervisor.
//! (`cli_redis` runs the same binary against Redis.)

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const WORKER: &str = env!("CARGO_BIN_EXE_cli_worker");
const NO_ACTORS: &str = env!("CARGO_BIN_EXE_cli_no_actors");
/// Generous: CI machines are slow, and every wait ends as soon as its event happens.
const DEADLINE: Duration = Duration::from_secs(30);

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

/// The `worker_pid` field of a supervisor log line.
/// Waits for the supervisor to say where it serves its workers' metrics; returns that URL.
pub(super) async fn metrics_url(supervisor: &mut Proc) -> String {
    let serving = supervisor
        .wait_for("the metrics address", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("metrics of all worker processes at"))
        })
        .await;
    let message = serving["message"].as_str().unwrap_or_default();
    message.rsplit(' ').next().unwrap_or_default().to_owned()
}

pub(super) fn pid_of(line: &Value) -> u32 {
    line["worker_pid"].as_u64().expect("a worker_pid field") as u32
}

/// Waits for each of `n` workers' first "ready" line; returns their pids by index.
pub(super) async fn ready_workers(supervisor: &mut Proc, n: usize) -> Vec<u32> {
    let mut pids = vec![0; n];
    while pids.contains(&0) {
        let line = supervisor.wait_message("worker process ready").await;
        pids[line["worker"].as_u64().unwrap() as usize] = pid_of(&line);
    }
    pids
}

#[tokio::test]
async fn sigterm_stops_a_single_process_worker_cleanly() {
    let mut worker = Proc::spawn(WORKER, &["--processes", "1"], &[]);
    worker.wait_message("worker started").await;
    let stopping = Instant::now();
    kill("TERM", worker.pid());
    let status = worker.exit().await;
    let took = stopping.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.dump());
    assert!(
        worker.seen.iter().any(|l| l["message"] == "worker stopped"),
        "{}",
        worker.dump()
    );
    // The benchmark target is < 100 ms; allow a loaded CI machine some slack.
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
}

#[tokio::test]
async fn sighup_reexecutes_a_single_process_worker_in_place() {
    let mut worker = Proc::spawn(WORKER, &["-p", "1"], &[]);
    worker.wait_message("worker started").await;
    kill("HUP", worker.pid());
    worker.wait_message("restarting (SIGHUP)").await;
    let again = worker.wait_message("worker started").await;
    assert_eq!(again["pid"].as_u64(), Some(u64::from(worker.pid())));
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_bad_setting_exits_2_naming_it() {
    let mut worker = Proc::spawn(
        WORKER,
        &[],
        &[("WORKER_THREADS", "lots"), ("WORKER_PROCESSES", "0")],
    );
    let status = worker.exit().await;
    assert_eq!(status.code(), Some(2));
    let logs = worker.dump();
    assert!(
        logs.contains("WORKER_THREADS must be a whole number"),
        "{logs}"
    );
    assert!(
        logs.contains("WORKER_PROCESSES must be a whole number"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_bad_flag_exits_2() {
    let mut worker = Proc::spawn(WORKER, &["--threads", "zero"], &[]);
    assert_eq!(worker.exit().await.code(), Some(2));
}

#[tokio::test]
async fn a_binary_without_actors_exits_2() {
    let mut worker = Proc::spawn(NO_ACTORS, &["-p", "1"], &[]);
    assert_eq!(worker.exit().await.code(), Some(2));
    assert!(
        worker.dump().contains("no actor is registered"),
        "{}",
        worker.dump()
    );
}

/// Waits until `worker` either consumes or refuses its pid file; true if it consumes.
async fn runs_with_pid_file(worker: &mut Proc) -> bool {
    let line = worker
        .wait_for("start-up or refusal", |l| {
            l["message"] == "worker started"
                || l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("pid file"))
        })
        .await;
    line["message"] == "worker started"
}

#[tokio::test]
async fn a_redis_password_never_reaches_the_logs_whatever_the_url_form() {
    let secret = "Corr3ct";
    for url in [
        // Unescaped `/` and `#`: the URL does not parse, so it is not shown at all.
        "redis://:Corr3ct/Horse#Pw@127.0.0.1/0",
        // A socket that does not exist: connection errors name the URL.
        "redis+unix:///nonexistent/redis.sock?db=0&pass=Corr3ct",
        "redis://:Corr3ct@127.0.0.1:1/0",
    ] {
        let mut worker = Proc::spawn(WORKER, &["-p", "1"], &[("REDIS_URL", url)]);
        let status = worker.exit().await;
        assert!(
            matches!(status.code(), Some(2 | 3)),
            "{url}: {status:?}\n{}",
            worker.dump()
        );
        let logs = worker.dump();
        assert!(!logs.contains(secret), "{url} leaked:\n{logs}");
    }
}

#[tokio::test]
async fn one_of_two_workers_started_at_once_gets_the_pid_file_and_removes_it_at_exit() {
    let path = std::env::temp_dir().join(format!("cli-{}.pid", uuid::Uuid::new_v4().simple()));
    let path_arg = path.to_str().unwrap();
    let mut first = Proc::spawn(WORKER, &["-p", "1", "--pid-file", path_arg], &[]);
    let mut second = Proc::spawn(WORKER, &["-p", "1", "--pid-file", path_arg], &[]);
    let (first_runs, second_runs) = tokio::join!(
        runs_with_pid_file(&mut first),
        runs_with_pid_file(&mut second)
    );
    assert!(
        first_runs != second_runs,
        "exactly one may run:\n{}\n{}",
        first.dump(),
        second.dump()
    );
    let (mut worker, mut refused) = if first_runs {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(refused.exit().await.code(), Some(4), "{}", refused.dump());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        worker.pid().to_string()
    );
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0));
    assert!(!path.exists(), "the pid file is removed at exit");
}

#[tokio::test]
async fn a_pid_file_that_is_a_symlink_is_refused_and_its_target_left_alone() {
    let dir = std::env::temp_dir();
    let target = dir.join(format!("cli-other-{}.pid", uuid::Uuid::new_v4().simple()));
    let link = dir.join(format!("cli-link-{}.pid", uuid::Uuid::new_v4().simple()));
    // Another program's pid file, its process gone: following the link would overwrite it.
    std::fs::write(&target, "2147483000\n").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut refused = Proc::spawn(
        WORKER,
        &["-p", "1", "--pid-file", link.to_str().unwrap()],
        &[],
    );
    assert_eq!(refused.exit().await.code(), Some(4), "{}", refused.dump());
    assert!(
        refused.dump().contains("is a symlink"),
        "{}",
        refused.dump()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "2147483000\n");
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&target).unwrap();
}

#[tokio::test]
async fn the_supervisor_restarts_a_killed_worker_and_stops_all_on_sigterm() {
    let mut supervisor = Proc::spawn(WORKER, &["--processes", "2"], &[]);
    let pids = ready_workers(&mut supervisor, 2).await;

    kill("KILL", pids[0]);
    let exited = supervisor
        .wait_message("worker process exited unexpectedly; restarting it")
        .await;
    assert_eq!(exited["worker"], 0);
    assert!(
        exited["status"].as_str().unwrap().contains("SIGKILL"),
        "{exited}"
    );
    let ready = supervisor.wait_message("worker process ready").await;
    assert_eq!(ready["worker"], 0);
    let new_pid = pid_of(&ready);
    assert_ne!(new_pid, pids[0]);

    kill("TERM", supervisor.pid());
    let status = supervisor.exit().await;
    assert_eq!(status.code(), Some(0), "{}", supervisor.dump());
    for pid in [new_pid, pids[1]] {
        assert!(!alive(pid), "worker {pid} outlived its supervisor");
    }
}

#[tokio::test]
async fn sighup_restarts_workers_one_at_a_time() {
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2"], &[]);
    let old = ready_workers(&mut supervisor, 2).await;
    kill("HUP", supervisor.pid());
    let mut order = Vec::new();
    let mut new = [0u32; 2];
    while new.contains(&0) {
        let line = supervisor
            .wait_for("the rolling restart", |l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("rolling restart") || m == "worker process ready")
            })
            .await;
        let worker = line["worker"].as_u64().unwrap_or(99) as usize;
        if line["message"] == "worker process ready" {
            new[worker] = pid_of(&line);
            order.push(format!("ready {worker}"));
        } else {
            order.push(format!("stopped {worker}"));
        }
    }
    assert_eq!(
        order,
        ["stopped 0", "ready 0", "stopped 1", "ready 1"],
        "{}",
        supervisor.dump()
    );
    assert!(new[0] != old[0] && new[1] != old[1]);
    kill("TERM", supervisor.pid());
    assert_eq!(supervisor.exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_worker_over_max_memory_is_recycled() {
    // Any process is over 1 MB resident, so the worker is recycled once ready.
    let mut supervisor = Proc::spawn(WORKER, &["-p", "1", "--max-memory", "1"], &[]);
    let first = pid_of(&supervisor.wait_message("worker process ready").await);
    let over = supervisor
        .wait_message("worker process is over --max-memory; recycling it")
        .await;
    assert_eq!(pid_of(&over), first);
    let next = pid_of(&supervisor.wait_message("worker process ready").await);
    assert_ne!(next, first);
    kill("TERM", supervisor.pid());
    assert_eq!(supervisor.exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_second_signal_kills_the_workers() {
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2"], &[]);
    let pids = ready_workers(&mut supervisor, 2).await;
    kill("TERM", supervisor.pid());
    kill("INT", supervisor.pid());
    let status = supervisor.exit().await;
    // Either the workers stopped before the second signal (0) or were killed (1).
    assert!(matches!(status.code(), Some(0 | 1)), "{status}");
    for pid in pids {
        assert!(!alive(pid));
    }
}

#[tokio::test]
async fn the_supervisor_serves_its_workers_metrics() {
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2", "--metrics-addr", "127.0.0.1:0"], &[]);
    let url = metrics_url(&mut supervisor).await;
    ready_workers(&mut supervisor, 2).await;
    let body = http_get(&url).await;
    assert!(
        body.contains("# TYPE dramatiq_message_duration_milliseconds histogram"),
        "{body}"
    );
    kill("TERM", supervisor.pid());
    assert_eq!(supervisor.exit().await.code(), Some(0));
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
