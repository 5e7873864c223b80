//! The `fault_worker` binary (tests/src/bin/fault_worker.rs) as a process to start, signal and
//! wait for, and a producer on its queue.

use std::process::Stdio;
use std::time::Duration;

use actor_runtime::broker::RedisConfig;
use actor_runtime::Broker;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const QUEUE: &str = "faults";

/// A running `fault_worker` process.
pub(crate) struct WorkerProcess {
    pub(crate) child: Child,
    pub(crate) worker_id: String,
}

impl WorkerProcess {
    pub(crate) async fn start(url: &str, ns: &str, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fault_worker"));
        command
            .env("REDIS_URL", url)
            .env("DRAMATIQ_NAMESPACE", ns)
            .env("HEARTBEAT_TIMEOUT_MS", "1500")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in extra {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn fault_worker");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("worker ready in time")
            .expect("read stdout")
            .expect("a ready line");
        let worker_id = ready.strip_prefix("ready ").expect("ready line").to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        WorkerProcess { child, worker_id }
    }

    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub(crate) async fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("worker exits in time")
            .expect("wait")
    }
}

/// A broker on the server at `url`, in namespace `ns`, to enqueue work for the workers.
pub(crate) fn producer(url: &str, ns: &str) -> Broker {
    let config = RedisConfig::new(url).namespace(ns);
    Broker::redis(config).unwrap()
}
