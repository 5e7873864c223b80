//! Testing actors: a broker of its own for each test, and a worker that runs until the queues
//! are drained, then says what ran, what failed and what was dead-lettered.
//!
//! `cargo test` runs tests in parallel threads of one process, where the global broker of
//! [`set_broker`](crate::set_broker) is shared: one test's worker runs another's messages, or
//! one test's `set_broker` sends another's messages elsewhere. [`with_broker`] scopes a broker
//! to a future instead; [`TestBroker`] adds the rest of a test's ceremony.
//!
//! ```
//! use actor_runtime::actor;
//! use actor_runtime::testing::TestBroker;
//!
//! #[actor(max_retries = 0)]
//! async fn charge(cents: i64) -> Result<(), String> {
//!     if cents < 0 { Err(format!("cannot charge {cents}")) } else { Ok(()) }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // #[tokio::test] async fn charges() {
//! let test = TestBroker::new();
//! test.scope(async {
//!     for cents in [100, 250, -5] {
//!         charge::send(cents).await.unwrap(); // to this test's broker
//!     }
//! })
//! .await;
//! let report = test.drain().await.unwrap();
//! assert_eq!(report.runs_of::<charge>().len(), 3);
//! assert_eq!(report.succeeded().count(), 2);
//! report.assert_dead_lettered::<charge>("cannot charge -5");
//! // }
//! # });
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::actor::{Actor, ActorFailure};
use crate::broker::{deadline_after, with_broker, Broker, DeadLetter, StubBackend};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::middleware::{MessageContext, Middleware};
use crate::worker::Worker;

/// A fresh in-memory broker for one test, with a worker that [`drain`](Self::drain)s it.
///
/// Send inside [`scope`](Self::scope) (or pass [`broker`](Self::broker) to `.broker(..)`),
/// then `drain()`: a worker runs every registered actor on this broker alone until no queue
/// holds a ready or running message, nor a delayed one due within
/// [`wait_for_delayed`](Self::wait_for_delayed), and stops. Messages the actors send go to
/// this broker too.
///
/// Retries wait out their backoff in the delay queue (15 s by default): a drain does not wait
/// for those past `wait_for_delayed` (1 s) and reports them in [`Drained::delayed`], or runs
/// them at once with [`skip_delays`](Self::skip_delays).
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::actor;
/// use actor_runtime::testing::TestBroker;
///
/// #[actor(max_retries = 2)] // default backoff: 15 s, then 30 s
/// async fn flaky_sync(feed: String) -> Result<(), String> {
///     Err(format!("{feed}: timeout"))
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let test = TestBroker::new().skip_delays();
/// test.scope(flaky_sync::send("news".into())).await.unwrap();
/// let report = test.drain().await.unwrap();
/// assert_eq!(report.runs.len(), 3); // the first try and two retries, without waiting
/// report.assert_dead_lettered::<flaky_sync>("news: timeout");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct TestBroker {
    broker: Broker,
    recorder: Arc<Recorder>,
    threads: usize,
    wait_for_delayed: Duration,
    skip_delays: bool,
    timeout: Duration,
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBroker {
    /// A fresh in-memory broker ([`Broker::stub`]) with the default middleware; drains with
    /// 8 threads, wait for delayed messages due within 1 s, and give up after 10 s.
    pub fn new() -> TestBroker {
        let broker = Broker::stub();
        let recorder = Arc::new(Recorder::default());
        // Last, so its `after_process_message` runs first: before Retries counts the retry.
        broker.middleware().add(recorder.clone());
        TestBroker {
            broker,
            recorder,
            threads: 8,
            wait_for_delayed: Duration::from_secs(1),
            skip_delays: false,
            timeout: Duration::from_secs(10),
        }
    }

    /// The broker, to pass to `.broker(..)`, a [`Worker`] or [`with_broker`], or to inspect
    /// (`stats`, `dead_letters`, `join`).
    pub fn broker(&self) -> Broker {
        self.broker.clone()
    }

    /// The in-memory backend, for what only it offers ([`StubBackend::enqueue_bytes`],
    /// [`StubBackend::dead_letters_all`]).
    pub fn backend(&self) -> &StubBackend {
        self.broker
            .backend_as::<StubBackend>()
            .expect("a TestBroker is built over a StubBackend")
    }

    /// Runs `future` with this broker in place of the global one (see [`with_broker`]):
    /// `my_actor::send(..)` inside it enqueues here.
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        with_broker(self.broker(), future).await
    }

    /// How many messages the draining worker runs at once (default 8).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// How far ahead a drain waits for delayed messages (a `.delay(..)`, a retry's backoff);
    /// those due later stay in the broker, listed in [`Drained::delayed`]. Default 1 s.
    pub fn wait_for_delayed(mut self, horizon: Duration) -> Self {
        self.wait_for_delayed = horizon;
        self
    }

    /// A drain runs delayed messages (a `.delay(..)`, a retry's backoff) at once, as if
    /// their time had come.
    pub fn skip_delays(mut self) -> Self {
        self.skip_delays = true;
        self
    }

    /// How long a drain may take before it fails with [`Error::JoinTimeout`] naming the
    /// queues still busy (default 10 s): an actor that never returns, or retries forever.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts a worker on this broker (inside its scope), waits until the queues are drained
    /// (see [`TestBroker`]), stops the worker and reports the actor runs since the last
    /// drain, the dead letters and the delayed messages left.
    ///
    /// Fails with [`Error::JoinTimeout`] after [`timeout`](Self::timeout), or when the worker
    /// cannot start (say, two actors with one name).
    pub async fn drain(&self) -> Result<Drained> {
        let broker = self.broker();
        let deadline = deadline_after(self.timeout);
        let settled = self
            .scope(async {
                let worker = Worker::new(broker.clone())
                    .threads(self.threads)
                    .shutdown_timeout(Duration::from_secs(1))
                    .start()
                    .await?;
                let settled = self
                    .backend()
                    .settle(self.wait_for_delayed, self.skip_delays, deadline)
                    .await;
                worker.stop().await?;
                Ok::<_, Error>(settled)
            })
            .await?;
        let delayed = settled.map_err(|busy| Error::JoinTimeout {
            queue: busy.join(", "),
            timeout: self.timeout,
        })?;
        let mut dead_letters = Vec::new();
        for queue in broker.queues() {
            dead_letters.extend(broker.dead_letters(&queue, usize::MAX).await?);
        }
        dead_letters.sort_by_key(|d| d.dead_at);
        Ok(Drained {
            runs: self.recorder.take(),
            dead_letters,
            delayed,
        })
    }
}

/// What a [`TestBroker::drain`] saw.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Drained {
    /// Every actor run since the previous drain, in the order they ended; each retry is a run.
    pub runs: Vec<Run>,
    /// Every dead letter in the broker, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Delayed messages left in the broker, due past the drain's horizon, soonest first.
    pub delayed: Vec<Message>,
}

impl Drained {
    /// The runs of actor `A` (the type `#[actor]` generates beside the function).
    pub fn runs_of<A: Actor>(&self) -> Vec<&Run> {
        self.runs.iter().filter(|r| r.actor == A::NAME).collect()
    }

    /// The runs that returned successfully.
    pub fn succeeded(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(|r| r.result.is_ok())
    }

    /// The runs that failed (whether retried or dead-lettered next).
    pub fn failed(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(|r| r.result.is_err())
    }

    /// The dead letters of actor `A`.
    pub fn dead_letters_of<A: Actor>(&self) -> Vec<&DeadLetter> {
        self.dead_letters
            .iter()
            .filter(|d| d.message.as_ref().is_ok_and(|m| m.actor_name == A::NAME))
            .collect()
    }

    /// Panics, listing them, if anything was dead-lettered.
    #[track_caller]
    pub fn assert_no_dead_letters(&self) -> &Self {
        if !self.dead_letters.is_empty() {
            panic!(
                "expected no dead letters, found {}:\n{}",
                self.dead_letters.len(),
                self.describe_dead_letters()
            );
        }
        self
    }

    /// Panics unless a message of actor `A` was dead-lettered with a reason containing
    /// `reason`; returns the first such dead letter.
    #[track_caller]
    pub fn assert_dead_lettered<A: Actor>(&self, reason: &str) -> &DeadLetter {
        let found = self.dead_letters_of::<A>().into_iter().find(|d| {
            d.reason
                .as_deref()
                .is_some_and(|text| text.contains(reason))
        });
        match found {
            Some(dead) => dead,
            None => panic!(
                "expected a dead letter of `{}` with a reason containing {reason:?}; dead letters:\n{}",
                A::NAME,
                self.describe_dead_letters()
            ),
        }
    }

    fn describe_dead_letters(&self) -> String {
        if self.dead_letters.is_empty() {
            return "  (none)".to_owned();
        }
        let mut text = String::new();
        for dead in &self.dead_letters {
            let (actor, id) = match &dead.message {
                Ok(m) => (m.actor_name.as_str(), m.message_id.as_str()),
                Err(_) => ("?", dead.id.as_str()),
            };
            let reason = dead.reason.as_deref().unwrap_or("(no reason)");
            text.push_str(&format!("  `{actor}` message {id}: {reason}\n"));
        }
        text
    }
}

/// One run of an actor on one message.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Run {
    /// The actor's registered name.
    pub actor: String,
    /// The queue the message came from.
    pub queue: String,
    /// The message's id (a retry keeps it).
    pub message_id: String,
    /// The positional arguments, as sent.
    pub args: Vec<Value>,
    /// The arguments by name, as sent.
    pub kwargs: Map<String, Value>,
    /// Retries before this run (0 for the first).
    pub retries: u32,
    /// What the actor returned, or how it failed.
    pub result: std::result::Result<Value, ActorFailure>,
}

impl Run {
    /// Positional argument `index`, decoded; `None` when missing or of another type.
    ///
    /// ```
    /// # fn check(run: &actor_runtime::testing::Run) {
    /// let customer: Option<u64> = run.arg(0);
    /// # let _ = customer;
    /// # }
    /// ```
    pub fn arg<T: DeserializeOwned>(&self, index: usize) -> Option<T> {
        serde_json::from_value(self.args.get(index)?.clone()).ok()
    }
}

/// Records every run (the middleware a [`TestBroker`] adds).
#[derive(Debug, Default)]
struct Recorder {
    runs: Mutex<Vec<Run>>,
}

impl Recorder {
    fn take(&self) -> Vec<Run> {
        std::mem::take(&mut *self.runs.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Middleware for Recorder {
    fn hooks_enqueue(&self) -> bool {
        false
    }

    async fn after_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
        result: &std::result::Result<Value, ActorFailure>,
    ) {
        let message = &ctx.message;
        let run = Run {
            actor: message.actor_name.clone(),
            queue: ctx.queue().to_owned(),
            message_id: message.message_id.clone(),
            args: message.args.clone(),
            kwargs: message.kwargs.clone(),
            retries: message.retries(),
            result: result.clone(),
        };
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(run);
    }
}
