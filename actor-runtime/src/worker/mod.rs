//! The worker: consumes queues and runs the registered actors.

mod blocking;
mod budget;
mod dispatch;
mod fetch;
mod handler;
mod process;
mod shutdown;
mod state;
mod watchdog;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::log_fields;
use crate::message::canonical_queue;
use crate::registry::Registry;

use state::{QueueRunner, Shared};

#[cfg(all(feature = "cli", unix))]
pub(crate) use budget::DEFAULT_PREFETCH_BYTES;
pub use shutdown::wait_for_signal;

/// The default of [`Worker::max_abandoned_threads`] for `threads`.
pub(crate) fn default_max_abandoned_threads(threads: usize) -> usize {
    threads.max(4)
}

/// Consumes queues and runs the actors registered with `#[actor]` (Dramatiq's `Worker`).
///
/// `threads` bounds how many messages run at once (async actors share the runtime; plain
/// `fn` actors run on a pool of as many threads, the worker's own); `prefetch` bounds how
/// many messages per queue are fetched and not yet acked, including running ones.
///
/// # Slow and blocking actors
///
/// Rust cannot stop a thread. A plain `fn` actor still running past its time limit (or
/// cancelled at shutdown) fails as usual, but its thread goes on running it: the worker
/// counts that thread as *abandoned* and starts another in its place, so other `fn` actors
/// keep running (and tokio's own blocking pool, which DNS lookups use, is never involved).
/// Once more threads are abandoned than
/// [`max_abandoned_threads`](Worker::max_abandoned_threads) allows, the worker logs an
/// error naming the actors and asks its owner to stop it
/// ([`RunningWorker::stop_requested`]): [`run`](Worker::run) and the CLI then stop it
/// gracefully so that a fresh process replaces it.
///
/// An `async fn` actor that blocks (a blocking client, `std::thread::sleep`) stalls its
/// runtime thread, and with one thread every other message. A watchdog thread warns, naming
/// the actor and message, when one poll of an async actor runs for over a second, and again
/// when it returns.
///
/// A worker started inside [`with_broker`](crate::with_broker) runs its actors inside that
/// scope: the messages they send go to the scoped broker.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::{actor, Broker, Worker};
///
/// #[actor(queue_name = "emails")]
/// async fn send_welcome(user_id: u64) {
///     println!("welcome, user {user_id}");
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
/// let worker = Worker::new(broker.clone()).threads(4).queues(["emails"]).start().await.unwrap();
/// send_welcome::message(7).broker(broker.clone()).send().await.unwrap();
/// broker.join("emails", None, true).await.unwrap();
/// let report = worker.stop().await.unwrap();
/// assert_eq!(report.succeeded, 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Worker {
    broker: Broker,
    queues: Option<Vec<String>>,
    threads: usize,
    prefetch: Option<usize>,
    prefetch_bytes: usize,
    shutdown_timeout: Duration,
    max_abandoned_threads: Option<usize>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("broker", &self.broker.kind())
            .field("queues", &self.queues)
            .field("threads", &self.threads)
            .field("prefetch", &self.prefetch)
            .field("prefetch_bytes", &self.prefetch_bytes)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_abandoned_threads", &self.abandoned_cap())
            .finish()
    }
}

impl Worker {
    /// A worker on `broker`, with 8 threads (Dramatiq's default), every queue, and a 30 s
    /// shutdown grace period.
    pub fn new(broker: Broker) -> Worker {
        Worker {
            broker,
            queues: None,
            threads: 8,
            prefetch: None,
            prefetch_bytes: budget::DEFAULT_PREFETCH_BYTES,
            shutdown_timeout: Duration::from_secs(30),
            max_abandoned_threads: None,
        }
    }

    /// How many messages run at once (at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Consume only these queues (default: every queue of a registered actor or declared on
    /// the broker).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Messages this worker holds fetched and not yet acked, running ones included, across
    /// all its queues. By default the budget adapts to how long messages take: it starts at
    /// `threads` (nothing is fetched ahead of a free thread before durations are known) and
    /// keeps about 20 ms of work per thread buffered, up to 1000. Slow messages (over about
    /// 20 ms) are therefore never buffered: a queued message stays in the broker until a
    /// thread is free, here or in another worker. Quick ones come in large batches, one
    /// round trip each. Setting it fixes it (at least 1).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// Payload bytes this worker holds fetched and not yet acked, running ones included,
    /// across its queues (default 64 MiB): a burst of large messages waits in the broker, not
    /// in this process's memory. A fetch always takes at least one message, so a message
    /// larger than the limit still runs, alone.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use actor_runtime::{Worker, Broker};
    ///
    /// // Two worker processes in a 512 MB container: 32 MiB of buffered payloads each.
    /// let worker = Worker::new(Broker::stub()).prefetch_bytes(32 << 20);
    /// # let _ = worker;
    /// ```
    pub fn prefetch_bytes(mut self, bytes: usize) -> Self {
        self.prefetch_bytes = bytes.max(1);
        self
    }

    /// How long running messages may take to finish once shutdown begins; those still
    /// running after it are cancelled and returned to their queue.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many threads abandoned by plain `fn` actors that ran past their time limit (see
    /// [Slow and blocking actors](Worker#slow-and-blocking-actors)) may still be running
    /// before the worker asks to be stopped. The default, `max(threads, 4)`, lets a whole
    /// pool's worth of calls hang before the process is replaced; 0 stops at the first.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use actor_runtime::{actor, Worker, Broker};
    ///
    /// /// A client without a timeout of its own: a call may hang for good.
    /// #[actor(time_limit = "30s")]
    /// fn fetch_legacy_report(id: u64) {
    ///     let _ = id;
    /// }
    ///
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let worker = Worker::new(Broker::stub())
    ///     .threads(4)
    ///     // Replace this process once two calls are stuck past their time limit.
    ///     .max_abandoned_threads(2)
    ///     .start()
    ///     .await
    ///     .unwrap();
    /// worker.stop().await.unwrap();
    /// # });
    /// ```
    pub fn max_abandoned_threads(mut self, max: usize) -> Self {
        self.max_abandoned_threads = Some(max);
        self
    }

    /// [`max_abandoned_threads`](Self::max_abandoned_threads), or its default.
    fn abandoned_cap(&self) -> usize {
        self.max_abandoned_threads
            .unwrap_or_else(|| default_max_abandoned_threads(self.threads))
    }

    /// Starts consuming; returns a handle to stop the worker.
    pub async fn start(self) -> Result<RunningWorker> {
        let registry = Registry::global()?;
        let queues = self.resolve_queues(registry).await?;
        let middleware = self.broker.middleware().snapshot();
        for m in middleware.iter() {
            m.before_worker_boot(&self.broker).await;
        }
        let prefetch = self.prefetch;
        let shared = Arc::new(Shared::new(
            self.broker.clone(),
            registry,
            self.threads,
            prefetch,
            self.prefetch_bytes,
            self.abandoned_cap(),
        ));
        let fetch_stop = CancellationToken::new();
        let dispatch_stop = CancellationToken::new();
        let ack_stop = CancellationToken::new();
        let background = TaskTracker::new();
        let mut runners = Vec::new();
        for queue in &queues {
            let consumer: Arc<dyn crate::broker::Consumer> = Arc::from(
                self.broker
                    .consume(queue, prefetch.unwrap_or(budget::MAX_ADAPTIVE_PREFETCH))
                    .await?,
            );
            let (acks, rx) = mpsc::unbounded_channel();
            let runner = Arc::new(QueueRunner {
                name: Arc::from(queue.as_str()),
                consumer: consumer.clone(),
                acks,
            });
            background.spawn(fetch::ack_loop(
                runner.name.clone(),
                consumer,
                rx,
                ack_stop.clone(),
            ));
            runners.push(runner);
        }
        let fetchers = TaskTracker::new();
        for runner in &runners {
            fetchers.spawn(fetch::fetch_loop(
                shared.clone(),
                runner.clone(),
                fetch_stop.clone(),
            ));
        }
        fetchers.close();
        let tasks = TaskTracker::new();
        let dispatcher = tokio::spawn(dispatch::dispatch_loop(
            shared.clone(),
            tasks.clone(),
            dispatch_stop.clone(),
        ));
        for m in middleware.iter().rev() {
            m.after_worker_boot(&self.broker).await;
        }
        self.log_started(registry, &queues);
        Ok(RunningWorker {
            shared,
            runners,
            queues,
            fetchers,
            fetch_stop,
            dispatcher,
            dispatch_stop,
            tasks,
            background,
            ack_stop,
            shutdown_timeout: self.shutdown_timeout,
            force: CancellationToken::new(),
        })
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully (a second signal cancels running
    /// messages at once and returns them to their queue).
    ///
    /// Should the worker ask to be stopped ([`RunningWorker::stop_requested`]: too many
    /// threads abandoned by plain `fn` actors), it stops gracefully too and returns
    /// [`Error::AbandonedThreads`], so that a `main` returning the error exits non-zero and
    /// its supervisor (systemd, Kubernetes) starts a fresh process.
    pub async fn run(self) -> Result<ShutdownReport> {
        let worker = self.start().await?;
        let abandoned = tokio::select! {
            signal = wait_for_signal() => {
                tracing::info!(signal = %signal?, "shutting down gracefully");
                None
            }
            // The pool logged why.
            () = worker.stop_requested() => {
                Some((worker.abandoned_threads(), worker.shared.blocking.max_abandoned()))
            }
        };
        let report = worker
            .stop_or_cancel_on(async {
                let signal = wait_for_signal().await;
                tracing::warn!(signal = %signal.unwrap_or("?"), "second signal: cancelling running messages");
            })
            .await?;
        match abandoned {
            None => Ok(report),
            Some((abandoned, max)) => Err(Error::AbandonedThreads { abandoned, max }),
        }
    }

    /// One line that says where this worker consumes and what: the broker (a mistyped
    /// namespace shows here), its queues and the actors of those queues.
    fn log_started(&self, registry: &Registry, queues: &[String]) {
        let info = self.broker.describe();
        let actors = registry
            .actors()
            .into_iter()
            .filter(|a| queues.iter().any(|q| q == a.queue))
            .map(|a| a.name);
        let prefetch = self
            .prefetch
            .map_or_else(|| "adaptive".to_owned(), |n| n.to_string());
        tracing::info!(
            broker = info.kind,
            url = info.url,
            db = info.db,
            namespace = info.namespace,
            queues = %log_fields::list(queues),
            actors = %log_fields::list(actors),
            threads = self.threads,
            prefetch,
            "worker started"
        );
    }

    async fn resolve_queues(&self, registry: &Registry) -> Result<Vec<String>> {
        let mut queues: Vec<String> = match &self.queues {
            Some(queues) => queues
                .iter()
                .map(|q| canonical_queue(q).to_owned())
                .collect(),
            None => {
                let mut all: Vec<String> =
                    registry.queues().into_iter().map(str::to_owned).collect();
                all.extend(self.broker.queues());
                all
            }
        };
        queues.sort();
        queues.dedup();
        for queue in &queues {
            self.broker.declare_queue(queue).await?;
        }
        if queues.is_empty() {
            return Err(Error::Config(
                "no queue to consume: no actor is registered and none was given".into(),
            ));
        }
        Ok(queues)
    }
}

/// A started worker; [`stop`](RunningWorker::stop) it to shut down gracefully.
pub struct RunningWorker {
    shared: Arc<Shared>,
    runners: Vec<Arc<QueueRunner>>,
    queues: Vec<String>,
    fetchers: TaskTracker,
    fetch_stop: CancellationToken,
    dispatcher: tokio::task::JoinHandle<()>,
    dispatch_stop: CancellationToken,
    tasks: TaskTracker,
    background: TaskTracker,
    ack_stop: CancellationToken,
    shutdown_timeout: Duration,
    /// Cancelled to cut the grace period short.
    force: CancellationToken,
}

impl std::fmt::Debug for RunningWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningWorker")
            .field("queues", &self.queues)
            .finish()
    }
}

/// What a worker did, reported when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Messages whose actor succeeded.
    pub succeeded: u64,
    /// Actor runs that failed (each retry counts).
    pub failed: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Prefetched messages returned to their queue unstarted.
    pub requeued: u64,
    /// Running messages cancelled at the end of the grace period and returned to their queue.
    pub cancelled: u64,
}

impl RunningWorker {
    /// The queues being consumed.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// The signal raised when shutdown begins (what `notify_shutdown` actors and
    /// [`shutdown_requested`](crate::middleware::shutdown_requested) observe).
    pub fn shutdown_signal(&self) -> crate::middleware::Shutdown {
        crate::middleware::Shutdown(self.shared.shutdown.clone())
    }

    /// Completes when the worker asks its owner to stop it: more threads were abandoned by
    /// plain `fn` actors past their time limit than
    /// [`Worker::max_abandoned_threads`] allows (an error log line says how many, and which
    /// actors). Nothing stops by itself: stop the worker, then let a fresh process take
    /// over, as [`Worker::run`] and the CLI do.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use actor_runtime::{actor, Worker, Broker};
    ///
    /// #[actor]
    /// fn resize(image: String) {
    ///     let _ = image;
    /// }
    ///
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let worker = Worker::new(Broker::stub()).start().await.unwrap();
    /// # let shutdown = async {};
    /// tokio::select! {
    ///     () = shutdown => {}
    ///     () = worker.stop_requested() => {
    ///         eprintln!("{} threads are stuck: restarting", worker.abandoned_threads());
    ///     }
    /// }
    /// worker.stop().await.unwrap();
    /// # });
    /// ```
    pub fn stop_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.blocking.stop_requested().cancelled_owned()
    }

    /// Threads still running calls of plain `fn` actors that were given up on (past their
    /// time limit, or cancelled at shutdown).
    pub fn abandoned_threads(&self) -> usize {
        self.shared.blocking.abandoned()
    }

    /// [`stop`](Self::stop), but once `cancel` completes (say, a second signal) the grace
    /// period ends at once: running messages are cancelled and returned to their queue.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use actor_runtime::{actor, Worker, Broker};
    ///
    /// #[actor]
    /// async fn nap() {
    ///     tokio::time::sleep(Duration::from_secs(60)).await;
    /// }
    ///
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let broker = Broker::stub();
    /// let worker = Worker::new(broker.clone()).start().await.unwrap();
    /// // Give up on running messages after 10 ms instead of the 30 s shutdown timeout.
    /// let report = worker
    ///     .stop_or_cancel_on(tokio::time::sleep(Duration::from_millis(10)))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(report.cancelled, 0);
    /// # });
    /// ```
    pub async fn stop_or_cancel_on(
        self,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<ShutdownReport> {
        let force = self.force.clone();
        let stop = self.stop();
        tokio::pin!(stop);
        tokio::select! {
            report = &mut stop => report,
            () = cancel => {
                force.cancel();
                stop.await
            }
        }
    }

    /// Stops gracefully: stop fetching, return prefetched messages to their queues, let
    /// running messages finish within the shutdown timeout (then cancel and requeue them),
    /// flush acks.
    pub async fn stop(self) -> Result<ShutdownReport> {
        let broker = self.shared.broker.clone();
        let middleware = broker.middleware().snapshot();
        for m in middleware.iter() {
            m.before_worker_shutdown(&broker).await;
        }
        self.shared.shutdown.cancel();
        self.fetch_stop.cancel();
        self.fetchers.wait().await;
        self.dispatch_stop.cancel();
        let _ = self.dispatcher.await;

        let mut report = ShutdownReport::default();
        let pending = self.shared.take_pending();
        report.requeued = pending.len() as u64;
        let mut by_queue: HashMap<Arc<str>, (Arc<QueueRunner>, Vec<_>)> = HashMap::new();
        for item in pending {
            by_queue
                .entry(item.runner.name.clone())
                .or_insert_with(|| (item.runner.clone(), Vec::new()))
                .1
                .push(item.delivery.tag);
        }
        for (runner, tags) in by_queue.into_values() {
            if let Err(err) = runner.consumer.requeue(&tags).await {
                tracing::error!(queue = %runner.name, error = %err, count = tags.len(), "could not requeue prefetched messages; they will be recovered as a dead worker's");
            }
        }

        self.tasks.close();
        let finished = tokio::select! {
            _ = self.tasks.wait() => true,
            _ = tokio::time::sleep(self.shutdown_timeout) => false,
            _ = self.force.cancelled() => false,
        };
        if !finished {
            self.shared.cancel_running.cancel();
            self.tasks.wait().await;
            let running = self.shared.take_in_flight();
            report.cancelled = running.len() as u64;
            tracing::warn!(
                count = running.len(),
                "shutdown timeout: returning running messages to their queues"
            );
            for (runner, tag) in running {
                if let Err(err) = runner.consumer.requeue(std::slice::from_ref(&tag)).await {
                    tracing::error!(queue = %runner.name, id = %tag.id, error = %err, "could not requeue a running message");
                }
            }
        }

        self.ack_stop.cancel();
        self.background.close();
        self.background.wait().await;
        for runner in &self.runners {
            if let Err(err) = runner.consumer.close().await {
                tracing::error!(queue = %runner.name, error = %err, "closing the consumer failed");
            }
        }
        // Threads still running abandoned calls end when their call returns.
        self.shared.blocking.close();
        self.shared.watchdog.stop();
        let counters = &self.shared.counters;
        report.succeeded = counters.succeeded.load(Ordering::Relaxed);
        report.failed = counters.failed.load(Ordering::Relaxed);
        report.dead_lettered = counters.dead_lettered.load(Ordering::Relaxed);
        for m in middleware.iter().rev() {
            m.after_worker_shutdown(&broker).await;
        }
        tracing::info!(
            succeeded = report.succeeded,
            failed = report.failed,
            dead_lettered = report.dead_lettered,
            requeued = report.requeued,
            cancelled = report.cancelled,
            "worker stopped"
        );
        Ok(report)
    }
}
