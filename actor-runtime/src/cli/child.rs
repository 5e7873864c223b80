//! One supervised worker process, as the supervisor sees it: its stdout (with the ready
//! line), how it ended, its memory, and the delay before restarting it.

use std::io::Write;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::mpsc;

use super::run::READY;
use super::supervisor::Event;
use super::Exit;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    /// Deaths in a row without a stable run, for the backoff.
    pub(super) failures: u32,
    pub(super) intent: Option<Intent>,
    /// When SIGTERM was sent, to kill a worker that does not stop.
    pub(super) term_sent: Option<Instant>,
    /// Started by a rolling restart, which moves on once this one is ready.
    pub(super) rolled: bool,
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

/// Forwards a worker's stdout (spotting its ready line), then reports its exit.
pub(super) async fn watch(
    mut child: Child,
    stdout: Option<ChildStdout>,
    index: usize,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    if let Some(stdout) = stdout {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.strip_prefix(READY) {
                Some(rest) => {
                    let metrics = rest
                        .trim()
                        .strip_prefix("metrics=")
                        .and_then(|a| a.parse().ok());
                    let _ = events.send(Event::Ready {
                        index,
                        generation,
                        metrics,
                    });
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
        }
    }
    let status = child.wait().await;
    let _ = events.send(Event::Exited {
        index,
        generation,
        status,
    });
}

/// 100 ms after the first quick death, doubling up to 30 s.
pub(super) fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    (Duration::from_millis(100) * (1u32 << shift)).min(MAX_BACKOFF)
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
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn reads_resident_memory_of_a_live_process() {
        let rss = resident_mb(std::process::id()).unwrap();
        assert!(rss < 10_000, "{rss}");
        assert_eq!(resident_mb(u32::MAX), None);
    }
}
