//! The supervisor: runs N worker processes (its own binary, re-executed with
//! `ACTOR_RUNTIME_WORKER_INDEX` set), restarts those that die, forwards stop signals, rolls
//! restarts on SIGHUP and recycles workers over `--max-memory`.
//!
//! A worker says it is ready once, on a pipe of its own that it gets as stdin (see
//! `run::announce_ready`), so nothing an actor prints can pass for a report; the supervisor
//! forwards the workers' stdout. Worker logs go to stderr or `--log-file` directly.
//!
//! Stopping (signals, kill timers) is in `stop`; replacing running workers one at a time
//! (SIGHUP, `--max-memory`) in `replace`.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::child::{describe, meaning, restart_backoff, watch, Event, Intent, Slot, State};
use super::metrics::{self, Source};
use super::run::current_exe;
use super::settings::WorkerSettings;
use super::{Exit, WORKER_ENV};
use crate::broker::get_broker;
use crate::log_fields;
use crate::registry::Registry;

mod replace;
mod stop;

/// A worker that lived this long before dying is restarted without delay.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long the supervisor waits, at its exit, for dead workers' messages to be requeued.
const RECOVERY_WAIT: Duration = Duration::from_secs(10);

/// Runs the supervisor until its workers are stopped; returns the exit code.
pub(crate) fn run(settings: &WorkerSettings) -> Exit {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return Exit::Killed;
        }
    };
    let exit = runtime.block_on(async {
        match Supervisor::new(settings) {
            Ok(supervisor) => supervisor.run().await,
            Err(message) => {
                tracing::error!("{message}");
                Exit::Killed
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(50));
    exit
}

struct Supervisor {
    settings: WorkerSettings,
    exe: PathBuf,
    args: Vec<OsString>,
    slots: Vec<Slot>,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    next_generation: u64,
    /// Whether any worker ever became ready (a start-up failure before is fatal).
    ever_ready: bool,
    stopping: bool,
    /// Stop signals received.
    stop_signals: u32,
    forced: bool,
    /// Worker indexes a SIGHUP still has to restart, the current one first.
    rolling: VecDeque<usize>,
    metrics: Arc<Mutex<HashMap<usize, SocketAddr>>>,
    /// A worker's start-up failure that ends everything, with its exit code.
    fatal: Option<Exit>,
    /// Dead workers' messages being requeued.
    recoveries: TaskTracker,
}

impl Supervisor {
    fn new(settings: &WorkerSettings) -> Result<Supervisor, String> {
        let exe =
            current_exe().map_err(|e| format!("cannot find this program to start workers: {e}"))?;
        let (events, inbox) = mpsc::unbounded_channel();
        let now = Instant::now();
        Ok(Supervisor {
            settings: settings.clone(),
            exe,
            args: std::env::args_os().skip(1).collect(),
            slots: (0..settings.processes)
                .map(|index| Slot {
                    index,
                    state: State::Idle,
                    generation: 0,
                    started: now,
                    ready: false,
                    restarts: restart_backoff(),
                    intent: None,
                    term_sent: None,
                    rolled: false,
                    worker_id: None,
                    forced_at: None,
                })
                .collect(),
            events,
            inbox,
            next_generation: 1,
            ever_ready: false,
            stopping: false,
            stop_signals: 0,
            forced: false,
            rolling: VecDeque::new(),
            metrics: Arc::default(),
            fatal: None,
            recoveries: TaskTracker::new(),
        })
    }

    async fn run(mut self) -> Exit {
        let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        let (mut term, mut int, mut hup) = match (
            listen(SignalKind::terminate()),
            listen(SignalKind::interrupt()),
            listen(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                tracing::error!("{e}");
                return Exit::Killed;
            }
        };
        if let Some(addr) = self.settings.metrics_addr {
            match metrics::serve(addr, Source::Workers(self.metrics.clone())).await {
                Ok(bound) => {
                    tracing::info!("metrics of all worker processes at http://{bound}/metrics")
                }
                Err(err) => {
                    tracing::error!("cannot serve metrics on {addr}: {err}");
                    return Exit::Usage;
                }
            }
        }
        // What the workers will use, said once here as each worker says it once.
        let broker = get_broker().map(|b| b.describe()).ok();
        let broker = broker.as_ref();
        let (queues, actors) = match Registry::global() {
            Ok(registry) => super::consumed(&self.settings, registry),
            Err(_) => (Vec::new(), Vec::new()),
        };
        tracing::info!(
            processes = self.settings.processes,
            threads = self.settings.threads,
            max_memory_mb = self.settings.max_memory_mb,
            broker = broker.map(|b| b.kind),
            url = broker.and_then(|b| b.url.as_deref()),
            db = broker.and_then(|b| b.db),
            namespace = broker.and_then(|b| b.namespace.as_deref()),
            queues = %log_fields::list(&queues),
            actors = %log_fields::list(&actors),
            "starting worker processes"
        );
        for index in 0..self.slots.len() {
            self.spawn(index);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stopping && self.slots.iter().all(|s| !s.running()) {
                break;
            }
            tokio::select! {
                Some(event) = self.inbox.recv() => self.on_event(event),
                _ = term.recv() => self.on_stop_signal("SIGTERM"),
                _ = int.recv() => self.on_stop_signal("SIGINT"),
                _ = hup.recv() => self.on_hangup(),
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.recoveries.close();
        if !self.recoveries.is_empty()
            && tokio::time::timeout(RECOVERY_WAIT, self.recoveries.wait())
                .await
                .is_err()
        {
            tracing::warn!("gave up waiting for dead workers' messages to be requeued; they come back once their heartbeats time out");
        }
        let exit = self
            .fatal
            .unwrap_or(if self.forced { Exit::Killed } else { Exit::Ok });
        tracing::info!(code = exit as i32, "all worker processes stopped");
        exit
    }

    fn spawn(&mut self, index: usize) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut command = Command::new(&self.exe);
        // The readiness pipe: the worker writes its report to its stdin.
        let (ready, stdin) = match std::io::pipe() {
            Ok((reader, writer)) => (Some(reader), Stdio::from(writer)),
            Err(err) => {
                tracing::error!(worker = index, error = %err, "cannot create a readiness pipe");
                (None, Stdio::null())
            }
        };
        command
            .args(&self.args)
            .env(WORKER_ENV, index.to_string())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
        let slot = &mut self.slots[index];
        slot.generation = generation;
        slot.started = Instant::now();
        slot.ready = false;
        slot.intent = None;
        slot.term_sent = None;
        slot.worker_id = None;
        slot.forced_at = None;
        match command.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                slot.state = State::Running { pid };
                tracing::info!(worker = index, worker_pid = pid, "worker process started");
                let stdout = child.stdout.take();
                tokio::spawn(watch(
                    child,
                    stdout,
                    ready,
                    index,
                    generation,
                    self.events.clone(),
                ));
            }
            Err(err) => {
                tracing::error!(worker = index, error = %err, exe = %self.exe.display(), "cannot start a worker process");
                self.schedule_restart(index);
            }
        }
    }

    /// Restarts worker `index` after the backoff of its deaths in a row; returns the
    /// delay.
    fn schedule_restart(&mut self, index: usize) -> Duration {
        let slot = &mut self.slots[index];
        slot.state = State::Waiting;
        let delay = slot.restarts.next_delay();
        let (events, generation) = (self.events.clone(), slot.generation);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Respawn { index, generation });
        });
        delay
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Ready {
                index,
                generation,
                metrics,
                worker_id,
            } => {
                let slot = &mut self.slots[index];
                if slot.generation != generation {
                    return;
                }
                slot.ready = true;
                slot.worker_id = worker_id;
                self.ever_ready = true;
                if let Some(addr) = metrics {
                    self.metrics
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(index, addr);
                }
                let pid = slot.pid();
                tracing::info!(worker = index, worker_pid = pid, "worker process ready");
                if slot.rolled && self.rolling.front() == Some(&index) {
                    slot.rolled = false;
                    self.rolling.pop_front();
                    self.advance_rolling();
                }
            }
            Event::Exited {
                index,
                generation,
                status,
            } => self.on_exit(index, generation, status),
            Event::Respawn { index, generation } => {
                let slot = &self.slots[index];
                if slot.generation == generation
                    && matches!(slot.state, State::Waiting)
                    && !self.stopping
                {
                    self.spawn(index);
                }
            }
        }
    }

    fn on_exit(&mut self, index: usize, generation: u64, status: std::io::Result<ExitStatus>) {
        let slot = &mut self.slots[index];
        if slot.generation != generation {
            return;
        }
        let pid = slot.pid();
        let uptime = slot.started.elapsed();
        let was_ready = slot.ready;
        let intent = slot.intent.take();
        let worker_id = slot.worker_id.take();
        slot.state = State::Idle;
        slot.ready = false;
        slot.term_sent = None;
        slot.forced_at = None;
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
        if let Some(worker_id) = worker_id {
            self.recover(index, pid, worker_id);
        }
        let described = describe(&status);
        if self.stopping {
            tracing::info!(worker = index, worker_pid = pid, status = %described, "worker process stopped");
            return;
        }
        match intent {
            Some(Intent::Rolling) => {
                tracing::info!(worker = index, worker_pid = pid, status = %described, "worker process stopped for a rolling restart; starting its replacement");
                self.slots[index].rolled = true;
                self.spawn(index);
            }
            Some(Intent::Recycle) => {
                tracing::info!(worker = index, worker_pid = pid, status = %described, "worker process recycled; starting its replacement");
                self.spawn(index);
            }
            Some(Intent::Shutdown) | None => {
                let code = status.as_ref().ok().and_then(|s| s.code());
                let fatal = match code.and_then(Exit::from_code) {
                    Some(exit @ (Exit::Usage | Exit::PidFile)) if !was_ready => Some(exit),
                    Some(Exit::Connection) if !was_ready && !self.ever_ready => {
                        Some(Exit::Connection)
                    }
                    _ => None,
                };
                if let Some(exit) = fatal {
                    tracing::error!(worker = index, worker_pid = pid, status = %described, "a worker process could not start ({}); stopping", meaning(exit));
                    self.fatal = Some(exit);
                    self.begin_stop();
                    return;
                }
                if was_ready && uptime >= STABLE_AFTER {
                    self.slots[index].restarts.reset();
                }
                let delay = self.schedule_restart(index);
                tracing::error!(
                    worker = index,
                    worker_pid = pid,
                    status = %described,
                    uptime = ?Duration::from_millis(uptime.as_millis() as u64),
                    restart_in = ?delay,
                    "worker process exited unexpectedly; restarting it"
                );
            }
        }
    }

    /// Requeues the messages a dead worker held, now: it cannot ack them any more, and its
    /// heartbeat would take up to the heartbeat timeout to expire. Whatever it finished
    /// before dying was acked; the rest runs again, as after any crash.
    fn recover(&self, index: usize, pid: u32, worker_id: String) {
        self.recoveries.spawn(async move {
            let recovered = match get_broker() {
                Ok(broker) => broker.recover_worker(&worker_id).await,
                Err(err) => Err(err),
            };
            match recovered {
                Ok(0) => {}
                Ok(count) => tracing::info!(worker = index, worker_pid = pid, worker_id = %worker_id, count, "requeued the messages of a dead worker process"),
                Err(err) => tracing::warn!(worker = index, worker_pid = pid, worker_id = %worker_id, error = %err, "cannot requeue a dead worker process's messages now; they come back once its heartbeat times out"),
            }
        });
    }

    fn on_tick(&mut self) {
        self.kill_overdue();
        self.recycle_over_memory();
    }
}
