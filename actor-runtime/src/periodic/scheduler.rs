//! The scheduler: sleeps until the next tick of its schedules by the Redis server's clock,
//! then claims each due tick and sends its message in one script call (see the
//! [module docs](super)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Schedule;
use crate::broker::redis::periodic::Fire;
use crate::broker::{Broker, RedisBackend};
use crate::error::{Error, Result};

/// The longest a scheduler sleeps before it looks at the server's clock again.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most ticks of one schedule sent in one pass (a long backfill goes on in the next).
const MAX_PER_PASS: usize = 1000;
/// The wait after a pass failed (Redis unreachable...).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Sends the messages of its schedules at their ticks, through a Redis broker. Run any
/// number of them (processes or tasks) on one namespace: each tick is sent once.
///
/// ```no_run
/// use std::time::Duration;
/// use actor_runtime::periodic::{Schedule, Scheduler};
/// use actor_runtime::{Broker, Message};
///
/// # async fn run() -> actor_runtime::Result<()> {
/// let broker = Broker::redis(actor_runtime::broker::RedisConfig::new("redis://127.0.0.1:6379/0"))?;
/// let ping = Schedule::every("ping", Duration::from_secs(10), || {
///     Ok(Message::new("default", "ping", vec![]))
/// })?;
/// let scheduler = Scheduler::new(broker.clone(), vec![ping])?.start();
/// // ... until shutdown:
/// scheduler.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    broker: Broker,
    schedules: Arc<Vec<Schedule>>,
    fired: Arc<AtomicU64>,
    /// The server's clock at this scheduler's first pass.
    started: Arc<OnceLock<u64>>,
}

/// A schedule with its last and next run, as the CLI's `schedules` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleStatus {
    /// The schedule's name.
    pub name: String,
    /// When it fires (``cron `0 30 2 * * *` in Europe/Paris``, `every 30s`).
    pub when: String,
    /// The last tick sent (ms since the epoch), if any.
    pub last_run: Option<u64>,
    /// The id of the message sent for it.
    pub last_message_id: Option<String>,
    /// The next tick after now by the server's clock (ms since the epoch), if any.
    pub next_run: Option<u64>,
    /// Its backfill window.
    pub backfill: Duration,
}

impl Scheduler {
    /// A scheduler of `schedules` on `broker`, which must be a Redis broker
    /// ([`Error::Unsupported`] otherwise, see the [module docs](super)); two schedules with
    /// one name are an [`Error::Config`].
    pub fn new(broker: Broker, schedules: Vec<Schedule>) -> Result<Scheduler> {
        if broker.backend_as::<RedisBackend>().is_none() {
            return Err(Error::Unsupported {
                what: "running periodic jobs",
                broker: broker.kind(),
            });
        }
        let mut names: Vec<&str> = schedules.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config(format!(
                "schedule name `{}` is given twice",
                pair[0]
            )));
        }
        Ok(Scheduler {
            broker,
            schedules: Arc::new(schedules),
            fired: Arc::new(AtomicU64::new(0)),
            started: Arc::new(OnceLock::new()),
        })
    }

    /// A scheduler of every schedule declared with [`schedule!`](crate::schedule)
    /// ([`Schedule::all`]).
    pub fn from_declared(broker: Broker) -> Result<Scheduler> {
        Scheduler::new(broker, Schedule::all()?)
    }

    /// Its schedules.
    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// How many ticks this scheduler sent (others' not counted).
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    fn backend(&self) -> &RedisBackend {
        self.broker
            .backend_as::<RedisBackend>()
            .expect("checked in Scheduler::new")
    }

    /// One pass: sends every due tick not sent yet (by any replica) within each schedule's
    /// backfill window, oldest first. Returns how long until the next tick.
    pub async fn run_once(&self) -> Result<Duration> {
        let backend = self.backend();
        let now = backend.server_time().await?;
        self.started.get_or_init(|| now);
        let names: Vec<&str> = self.schedules.iter().map(|s| s.name()).collect();
        let lasts = backend.periodic_last(&names).await?;
        let mut wait = MAX_WAIT;
        for (schedule, (last, _)) in self.schedules.iter().zip(lasts) {
            let window_start = now.saturating_sub(schedule.backfill_window().as_millis() as u64);
            let from = match last {
                Some(last) => {
                    if schedule.next_after(last).is_some_and(|t| t <= window_start) {
                        tracing::warn!(schedule = schedule.name(), last_run = last, skipped_before = window_start, "ticks missed while no scheduler ran are older than the backfill window; skipping them");
                    }
                    last.max(window_start)
                }
                // Never fired: start with the first tick after this scheduler started
                // (nothing before it was missed).
                None => (*self.started.get_or_init(|| now)).max(window_start),
            };
            let mut next = schedule.next_after(from);
            let mut sent = 0;
            while let Some(tick) = next.filter(|&t| t <= now) {
                if sent == MAX_PER_PASS {
                    break;
                }
                sent += 1;
                match self.fire(schedule, tick).await? {
                    Fire::Early => break,
                    Fire::Fired(_) | Fire::Already => next = schedule.next_after(tick),
                }
            }
            if let Some(tick) = next {
                wait = wait.min(Duration::from_millis(tick.saturating_sub(now)));
            }
        }
        Ok(wait)
    }

    /// Claims `tick` of `schedule` and sends its message, running the broker's enqueue hooks.
    async fn fire(&self, schedule: &Schedule, tick: u64) -> Result<Fire> {
        let mut message = match schedule.message_for(tick) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(schedule = schedule.name(), tick, error = %err, "cannot build the schedule's message; tick not sent");
                return Ok(Fire::Already);
            }
        };
        let hooks: Vec<_> = self
            .broker
            .middleware()
            .snapshot()
            .iter()
            .filter(|m| m.hooks_enqueue())
            .cloned()
            .collect();
        for m in &hooks {
            m.before_enqueue(&self.broker, &mut message, None).await?;
        }
        let fire = self
            .backend()
            .fire_tick(schedule.name(), tick, message.undelayed())
            .await?;
        if let Fire::Fired(message) = &fire {
            self.fired.fetch_add(1, Ordering::Relaxed);
            tracing::info!(schedule = schedule.name(), tick, message_id = %message.message_id, actor = %message.actor_name, queue = %message.queue_name, "periodic job sent");
            for m in hooks.iter().rev() {
                m.after_enqueue(&self.broker, message, None).await;
            }
        }
        Ok(fire)
    }

    /// Runs passes until `stop` is cancelled. A failing pass (Redis unreachable) is logged
    /// and retried.
    pub async fn run_until_cancelled(&self, stop: CancellationToken) {
        tracing::info!(schedules = self.schedules.len(), "scheduler started");
        loop {
            let wait = match self.run_once().await {
                Ok(wait) => wait,
                Err(err) => {
                    tracing::warn!(error = %err, "scheduler pass failed; retrying");
                    RETRY_AFTER
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(fired = self.fired(), "scheduler stopped");
    }

    /// Starts running on the current tokio runtime; stop it with
    /// [`RunningScheduler::stop`].
    pub fn start(self) -> RunningScheduler {
        let stop = CancellationToken::new();
        let scheduler = self.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move { scheduler.run_until_cancelled(token).await });
        RunningScheduler {
            scheduler: self,
            stop,
            task,
        }
    }

    /// Each schedule with its last run (from Redis) and next run (after the server's now).
    pub async fn status(&self) -> Result<Vec<ScheduleStatus>> {
        let backend = self.backend();
        let now = backend.server_time().await?;
        let names: Vec<&str> = self.schedules.iter().map(|s| s.name()).collect();
        let lasts = backend.periodic_last(&names).await?;
        Ok(self
            .schedules
            .iter()
            .zip(lasts)
            .map(|(schedule, (last_run, last_message_id))| ScheduleStatus {
                name: schedule.name().to_owned(),
                when: schedule.describe(),
                last_run,
                last_message_id,
                next_run: schedule.next_after(now.max(last_run.unwrap_or(0))),
                backfill: schedule.backfill_window(),
            })
            .collect())
    }
}

/// A [`Scheduler`] running on a task.
#[derive(Debug)]
pub struct RunningScheduler {
    scheduler: Scheduler,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningScheduler {
    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Stops it (between passes: a claim in flight completes) and waits for it.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await.map_err(|err| Error::Broker {
            context: format!("the scheduler task failed: {err}"),
            source: None,
        })
    }
}
