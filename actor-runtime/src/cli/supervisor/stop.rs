//! Stopping the workers: the first stop signal stops them gracefully, the second forces them,
//! the third kills them; a worker that does not stop in time is killed.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Supervisor;
use crate::cli::child::{Intent, State};

/// After the shutdown timeout, how long a worker may take to exit before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// After a second stop signal, how long a worker may take to cancel and requeue its running
/// messages before it is killed.
const FORCE_GRACE: Duration = Duration::from_secs(3);

impl Supervisor {
    /// The first signal stops gracefully; the second is forwarded (a worker then cancels its
    /// running messages, which go back to their queues) and kills those still running after
    /// [`FORCE_GRACE`]; a third kills at once.
    pub(super) fn on_stop_signal(&mut self, signal: &str) {
        self.stop_signals += 1;
        if !self.stopping {
            tracing::info!(%signal, "stopping worker processes gracefully");
            self.begin_stop();
            return;
        }
        self.forced = true;
        if self.stop_signals > 2 {
            tracing::warn!(%signal, "third signal: killing worker processes");
            for slot in &self.slots {
                slot.send(Signal::SIGKILL);
            }
            return;
        }
        tracing::warn!(%signal, grace = ?FORCE_GRACE, "second signal: worker processes cancel their running messages, and are killed if still running after the grace");
        let now = Instant::now();
        for slot in &mut self.slots {
            if slot.running() {
                slot.send(Signal::SIGTERM);
                slot.forced_at = Some(now);
            }
        }
    }

    pub(super) fn begin_stop(&mut self) {
        self.stopping = true;
        self.rolling.clear();
        for slot in &mut self.slots {
            match slot.state {
                State::Running { .. } => slot.terminate(Intent::Shutdown),
                State::Waiting => slot.state = State::Idle,
                State::Idle => {}
            }
        }
    }

    /// Kills the workers that outlived the grace after a second signal, or the shutdown
    /// timeout plus [`KILL_GRACE`] after SIGTERM.
    pub(super) fn kill_overdue(&mut self) {
        let kill_after = self.settings.shutdown_timeout.saturating_add(KILL_GRACE);
        for slot in &mut self.slots {
            if slot.forced_at.is_some_and(|at| at.elapsed() >= FORCE_GRACE) {
                tracing::warn!(
                    worker = slot.index,
                    pid = slot.pid(),
                    "worker process did not stop within the grace after the second signal; killing it"
                );
                slot.send(Signal::SIGKILL);
                slot.forced_at = None;
            }
            if slot.term_sent.is_some_and(|at| at.elapsed() > kill_after) {
                tracing::warn!(
                    worker = slot.index,
                    pid = slot.pid(),
                    "worker process did not stop in time; killing it"
                );
                slot.send(Signal::SIGKILL);
                slot.term_sent = None;
                if self.stopping {
                    self.forced = true;
                }
            }
        }
    }
}
