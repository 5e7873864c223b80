//! Replacing running workers one at a time, so capacity never drops by more than one:
//! rolling restarts on SIGHUP, and recycling a worker over `--max-memory`.

use super::Supervisor;
use crate::cli::child::{resident_mb, Intent, State};

impl Supervisor {
    pub(super) fn on_hangup(&mut self) {
        if self.stopping {
            return;
        }
        tracing::info!("SIGHUP: restarting worker processes one by one");
        self.rolling = (0..self.slots.len()).collect();
        for slot in &mut self.slots {
            slot.rolled = false;
        }
        self.advance_rolling();
    }

    /// Stops the next worker of a rolling restart; its replacement's readiness moves on.
    pub(super) fn advance_rolling(&mut self) {
        while let Some(&index) = self.rolling.front() {
            let slot = &mut self.slots[index];
            match (&slot.state, slot.intent) {
                (State::Running { .. }, None) => {
                    slot.terminate(Intent::Rolling);
                    return;
                }
                // Already being replaced: its replacement's readiness moves on.
                (State::Running { .. }, Some(_)) => {
                    slot.rolled = true;
                    return;
                }
                // Not running: the restart already scheduled will run the new code.
                (State::Waiting | State::Idle, _) => {
                    self.rolling.pop_front();
                }
            }
        }
        tracing::info!("rolling restart done");
    }

    /// Recycles a ready worker over `--max-memory`, if no other is being replaced.
    pub(super) fn recycle_over_memory(&mut self) {
        let Some(limit) = self.settings.max_memory_mb else {
            return;
        };
        // One replacement at a time, so capacity never drops by more than one worker.
        if self.stopping || self.slots.iter().any(|s| s.intent.is_some()) {
            return;
        }
        for slot in &mut self.slots {
            let State::Running { pid } = slot.state else {
                continue;
            };
            if !slot.ready {
                continue;
            }
            if let Some(rss) = resident_mb(pid) {
                if rss > limit {
                    tracing::warn!(
                        worker = slot.index,
                        worker_pid = pid,
                        rss_mb = rss,
                        max_memory_mb = limit,
                        "worker process is over --max-memory; recycling it"
                    );
                    slot.terminate(Intent::Recycle);
                    return;
                }
            }
        }
    }
}
