//! One worker process: its runtime, its broker, the worker, and how signals stop it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::metrics::{self, Source};
use super::settings::WorkerSettings;
use super::{Exit, Failure};
use crate::middleware::Prometheus;
use crate::worker::Worker;

/// The report a worker process sends the supervisor once it consumes.
pub(crate) const READY: &str = "@actor-runtime ready";

/// Who runs this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// On its own (`--processes 1`): it handles signals as a standalone program.
    Alone,
    /// Under a supervisor: it announces readiness, ignores SIGINT (the supervisor forwards
    /// the terminal's Ctrl-C as SIGTERM; a second SIGTERM cancels running messages), and
    /// stops if the supervisor disappears.
    Child { index: usize },
}

/// How the worker ended.
enum Ending {
    Exit(Exit),
    /// SIGHUP on a standalone worker: run the binary again.
    Reexec,
}

/// Runs a worker process to its end; returns its exit code.
pub(crate) fn run(settings: &WorkerSettings, role: Role) -> Exit {
    let runtime = match runtime(settings.threads) {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return Exit::Killed;
        }
    };
    let ending = runtime.block_on(serve(settings, role));
    // Only the user's own blocking tasks can be left: do not wait.
    runtime.shutdown_timeout(Duration::from_millis(50));
    match ending {
        Ok(Ending::Exit(exit)) => exit,
        Ok(Ending::Reexec) => reexec(),
        Err(failure) => {
            tracing::error!("{}", failure.message);
            failure.exit
        }
    }
}

/// One thread for one message at a time (the smallest footprint); otherwise as many threads
/// as messages run at once, up to the CPUs there are.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.min(cpus))
            .thread_name("actor-worker")
            .enable_all()
            .build()
    }
}

/// SIGTERM, SIGINT and SIGHUP, registered before anything starts so none kills the process.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Signals, Failure> {
        let listen = |kind| {
            signal(kind).map_err(|e| Failure {
                exit: Exit::Killed,
                message: format!("cannot listen for signals: {e}"),
            })
        };
        Ok(Signals {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
            hup: listen(SignalKind::hangup())?,
        })
    }

    async fn any(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }

    /// SIGINT is registered (so it does nothing) but never answered.
    async fn term_or_hup(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

async fn serve(settings: &WorkerSettings, role: Role) -> Result<Ending, Failure> {
    let mut signals = Signals::new()?;
    let broker = crate::cli::broker()?;
    // Once, before anything starts (the broker's heartbeat thread would warn about every
    // failed beat): an unreachable broker is exit 3 at once.
    broker.ping().await.map_err(Failure::from)?;
    // Connects now, so an unreachable broker is exit 3 at start-up, not a retry loop.
    let probe = settings
        .queues
        .as_ref()
        .and_then(|q| q.first().cloned())
        .or_else(|| {
            crate::registry::Registry::global()
                .ok()
                .and_then(|r| r.queues().first().map(|q| (*q).to_owned()))
        });
    if let Some(queue) = probe {
        broker.declare_queue(&queue).await.map_err(Failure::from)?;
        broker.stats(&queue).await.map_err(Failure::from)?;
    }
    if broker.kind() == "stub" && matches!(role, Role::Child { index: 0 }) {
        tracing::warn!("each worker process has its own in-memory stub broker: set REDIS_URL or RABBITMQ_URL so they share queues");
    }

    let metrics_addr = match role {
        Role::Alone => settings.metrics_addr,
        // The supervisor serves the user's address and sums its workers' endpoints.
        Role::Child { .. } => settings
            .metrics_addr
            .map(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
    };
    let mut metrics_bound = None;
    if let Some(addr) = metrics_addr {
        let prometheus = Arc::new(Prometheus::new());
        broker.middleware().add(prometheus.clone());
        let bound = metrics::serve(addr, Source::Local(prometheus))
            .await
            .map_err(|e| Failure::usage(format!("cannot serve metrics on {addr}: {e}")))?;
        if role == Role::Alone {
            tracing::info!("metrics at http://{bound}/metrics");
        }
        metrics_bound = Some(bound);
    }

    // Before the records' recorder, which then sees the cancel.
    #[cfg(feature = "redis")]
    super::cancel::install(&broker)?;

    #[cfg(feature = "postgres")]
    let records = super::records::install(&broker).await?;

    let mut worker = Worker::new(broker.clone())
        .threads(settings.threads)
        .shutdown_timeout(settings.shutdown_timeout);
    if let Some(queues) = &settings.queues {
        worker = worker.queues(queues.iter().cloned());
    }
    if let Some(prefetch) = settings.prefetch {
        worker = worker.prefetch(prefetch);
    }
    if let Some(mb) = settings.prefetch_mb {
        worker = worker.prefetch_bytes(mb.saturating_mul(1 << 20));
    }
    if let Some(max) = settings.max_abandoned_threads {
        worker = worker.max_abandoned_threads(max);
    }
    let running = worker.start().await.map_err(Failure::from)?;
    // Too many threads stuck in `fn` actors (the worker logged why): stop gracefully and exit
    // 1, so that the supervisor, or whatever runs this process, starts a fresh one.
    let stop_requested = running.stop_requested();

    let (ending, forced) = match role {
        Role::Alone => {
            let signal = tokio::select! {
                signal = signals.any() => Some(signal),
                () = stop_requested => None,
            };
            if let Some(signal) = signal {
                tracing::info!(%signal, "stopping gracefully");
            }
            let mut forced = false;
            let report = running
                .stop_or_cancel_on(async {
                    let second = signals.any().await;
                    tracing::warn!(signal = %second, "second signal: cancelling running messages");
                    forced = true;
                })
                .await;
            report.map_err(Failure::from)?;
            let ending = match signal {
                Some("SIGHUP") => Ending::Reexec,
                Some(_) => Ending::Exit(Exit::Ok),
                None => Ending::Exit(Exit::Killed),
            };
            (ending, forced)
        }
        Role::Child { .. } => {
            announce_ready(metrics_bound, broker.worker_id());
            let parent = std::os::unix::process::parent_id();
            let exit = tokio::select! {
                signal = signals.term_or_hup() => {
                    tracing::info!(%signal, "stopping gracefully");
                    Exit::Ok
                }
                () = parent_gone(parent) => {
                    tracing::warn!("the supervisor is gone: stopping gracefully");
                    Exit::Ok
                }
                () = stop_requested => Exit::Killed,
            };
            // The supervisor forwards a second Ctrl-C as a second SIGTERM.
            let mut forced = false;
            running
                .stop_or_cancel_on(async {
                    let second = signals.term_or_hup().await;
                    tracing::warn!(signal = %second, "second signal: cancelling running messages");
                    forced = true;
                })
                .await
                .map_err(Failure::from)?;
            (Ending::Exit(exit), forced)
        }
    };
    #[cfg(feature = "postgres")]
    if let Some(records) = records {
        // After the worker's own final flush: stops the flusher.
        records.close().await;
    }
    broker.close().await;
    Ok(if forced {
        Ending::Exit(Exit::Killed)
    } else {
        ending
    })
}

/// Tells the supervisor that this worker consumes, where its metrics are and its id on the
/// broker (to recover its messages at once should it die), on the readiness pipe the
/// supervisor gave it as stdin; then closes that pipe for good (stdin becomes /dev/null), so
/// nothing in this process, an actor printing included, can report again.
fn announce_ready(metrics: Option<SocketAddr>, worker_id: Option<&str>) {
    use std::io::Write;
    use std::os::fd::AsFd;
    let metrics = metrics.map_or_else(|| "-".to_owned(), |a| a.to_string());
    let report = match worker_id {
        Some(id) => format!("{READY} metrics={metrics} worker_id={id}\n"),
        None => format!("{READY} metrics={metrics}\n"),
    };
    let sent = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|mut pipe| pipe.write_all(report.as_bytes()));
    if let Err(err) = sent {
        tracing::error!(error = %err, "cannot report readiness to the supervisor");
    }
    match std::fs::File::open("/dev/null") {
        Ok(null) => {
            if let Err(err) = nix::unistd::dup2_stdin(&null) {
                tracing::warn!(error = %err, "cannot close the readiness pipe");
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot open /dev/null to close the readiness pipe")
        }
    }
}

/// Completes once this process has been re-parented (its supervisor died).
async fn parent_gone(parent: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

/// Replaces this process with a fresh run of the same binary and arguments (Dramatiq's
/// SIGHUP reload); only returns if that fails.
fn reexec() -> Exit {
    use std::os::unix::process::CommandExt;
    let exe = match current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            tracing::error!(error = %err, "cannot find this program to restart it");
            return Exit::Killed;
        }
    };
    tracing::info!(exe = %exe.display(), "restarting (SIGHUP)");
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    tracing::error!(exe = %exe.display(), error = %err, "cannot restart");
    Exit::Killed
}

/// This program's path; after a deploy replaced the binary, the new one at the same path.
pub(crate) fn current_exe() -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => path.into(),
        None => exe,
    })
}
