//! One supervised worker process, as the supervisor sees it: its stdout, its readiness
//! report, how it ended, its memory, and the delay before restarting it.

use std::io::Write;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::mpsc;

use super::run::READY;
use super::Exit;
use crate::backoff::{Backoff, Jitter};

/// Why the supervisor asked a worker to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Intent {
    /// Everything is stopping.
    Shutdown,
    /// SIGHUP: replace it.
    Rolling,
    /// Over `--max-memory`: replace it.
    Recycle,
}

#[derive(Debug)]
pub(super) enum State {
    /// A process is running (maybe not ready yet).
    Running { pid: u32 },
    /// Dead; a restart is scheduled.
    Waiting,
    /// Dead for good (shutting down).
    Idle,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) index: usize,
    pub(super) state: State,
    /// Identifies the current process, so events about an earlier one are ignored.
    pub(super) generation: u64,
    pub(super) started: Instant,
    pub(super) ready: bool,
    /// The delay before restarting it, growing with deaths in a row without a stable run.
    pub(super) restarts: Backoff,
    pub(super) intent: Option<Intent>,
    /// When SIGTERM was sent, to kill a worker that does not stop.
    pub(super) term_sent: Option<Instant>,
    /// Started by a rolling restart, which moves on once this one is ready.
    pub(super) rolled: bool,
    /// Its id on the broker, from its readiness report: its messages are recovered by it
    /// once it dies.
    pub(super) worker_id: Option<String>,
    /// When a second stop signal was forwarded, to kill it if it does not stop soon.
    pub(super) forced_at: Option<Instant>,
}

impl Slot {
    pub(super) fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    pub(super) fn pid(&self) -> u32 {
        match self.state {
            State::Running { pid } => pid,
            _ => 0,
        }
    }

    pub(super) fn terminate(&mut self, intent: Intent) {
        self.intent = Some(intent);
        self.term_sent = Some(Instant::now());
        self.send(Signal::SIGTERM);
    }

    pub(super) fn send(&self, signal: Signal) {
        if let State::Running { pid } = self.state {
            if let Ok(pid) = i32::try_from(pid) {
                // ESRCH: it already exited and its exit event is on the way.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        }
    }
}

/// What a worker process's watcher, or its restart timer, tells the supervisor.
pub(super) enum Event {
    Ready {
        index: usize,
        generation: u64,
        metrics: Option<std::net::SocketAddr>,
        worker_id: Option<String>,
    },
    Exited {
        index: usize,
        generation: u64,
        status: std::io::Result<ExitStatus>,
    },
    Respawn {
        index: usize,
        generation: u64,
    },
}

/// Longest stdout line forwarded as one; longer ones are forwarded in pieces.
const MAX_LINE: usize = 64 * 1024;
/// Longest readiness report read.
const MAX_REPORT: u64 = 256;

/// Forwards a worker's stdout, reads its readiness report, then reports its exit.
pub(super) async fn watch(
    mut child: Child,
    stdout: Option<ChildStdout>,
    ready: Option<std::io::PipeReader>,
    index: usize,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    if let Some(ready) = ready {
        tokio::spawn(read_report(ready, index, generation, events.clone()));
    }
    if let Some(stdout) = stdout {
        forward(stdout).await;
    }
    let status = child.wait().await;
    let _ = events.send(Event::Exited {
        index,
        generation,
        status,
    });
}

/// Copies a worker's stdout to ours line by line (so lines of several workers do not mix),
/// whatever the bytes: invalid UTF-8 is replaced, overlong lines are cut in pieces, and
/// reading goes on until the worker closes it (a worker whose stdout closed early would
/// fail every later write).
async fn forward(stdout: ChildStdout) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let mut out = std::io::stdout().lock();
                // Our own stdout closed: keep draining theirs all the same.
                let _ = writeln!(out, "{}", text.trim_end_matches(['\n', '\r']));
                let _ = out.flush();
            }
        }
    }
}

/// Reads the one readiness report of a worker process from its readiness pipe (its stdin,
/// which nothing else in the worker writes to; see `run::announce_ready`). A report naming
/// a metrics address that is not on loopback is refused.
async fn read_report(
    ready: std::io::PipeReader,
    index: usize,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    let fd = std::os::fd::OwnedFd::from(ready);
    let receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(receiver) => receiver,
        Err(err) => {
            tracing::error!(worker = index, error = %err, "cannot read the worker's readiness pipe");
            return;
        }
    };
    let mut report = Vec::new();
    let mut limited = BufReader::new(receiver).take(MAX_REPORT);
    if limited.read_until(b'\n', &mut report).await.is_err() {
        return;
    }
    let report = String::from_utf8_lossy(&report);
    let Some(rest) = report.trim().strip_prefix(READY) else {
        // The worker exited before it was ready: its exit tells the rest.
        return;
    };
    let mut metrics = None;
    let mut worker_id = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("metrics", "-")) => {}
            Some(("metrics", addr)) => match addr.parse::<std::net::SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => metrics = Some(addr),
                _ => {
                    tracing::warn!(worker = index, address = %addr.chars().take(64).collect::<String>(), "ignoring a metrics address that is not on loopback");
                }
            },
            Some(("worker_id", id)) if is_worker_id(id) => worker_id = Some(id.to_owned()),
            _ => {}
        }
    }
    let _ = events.send(Event::Ready {
        index,
        generation,
        metrics,
        worker_id,
    });
}

/// Whether `id` looks like a broker's worker id (a UUID), so nothing else reaches a key
/// pattern.
fn is_worker_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// 100 ms after the first quick death, doubling up to 30 s. No jitter: one supervisor
/// restarts its own workers, nobody else's.
pub(super) fn restart_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(30),
        Jitter::None,
    )
}

pub(super) fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => match status.code().and_then(Exit::from_code) {
            Some(exit) if exit != Exit::Ok => format!("{status} ({})", meaning(exit)),
            _ => status.to_string(),
        },
        Err(err) => format!("unknown ({err})"),
    }
}

pub(super) fn meaning(exit: Exit) -> &'static str {
    match exit {
        Exit::Ok => "ok",
        Exit::Killed => "killed or crashed",
        Exit::Usage => "bad argument or setting",
        Exit::Connection => "broker connection failed",
        Exit::PidFile => "pid file in use",
        Exit::BrokerFull => "broker out of memory",
        Exit::NothingToCancel => "nothing to cancel",
    }
}

/// Resident memory of `pid` in MB (`VmRSS` of /proc/PID/status, in kB there).
pub(super) fn resident_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_up_to_30s() {
        let mut backoff = restart_backoff();
        let delays: Vec<Duration> = (0..40).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[4], Duration::from_millis(1600));
        assert_eq!(delays[39], Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn only_worker_ids_that_look_like_ids_are_taken() {
        assert!(is_worker_id("0b5d7a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!is_worker_id(""));
        assert!(!is_worker_id("*"));
        assert!(!is_worker_id("a b"));
        assert!(!is_worker_id(&"a".repeat(65)));
    }

    #[test]
    fn reads_resident_memory_of_a_live_process() {
        let rss = resident_mb(std::process::id()).unwrap();
        assert!(rss < 10_000, "{rss}");
        assert_eq!(resident_mb(u32::MAX), None);
    }
}
