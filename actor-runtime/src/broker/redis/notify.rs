//! Low-latency wake-ups for idle consumers, whoever pushed the message (a Python producer
//! included): Redis keyspace notifications on the queue lists, received on one pub/sub
//! connection per broker. Without them consumers poll (see `RedisConfig::poll_interval`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSub;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::keys::Keys;
use crate::backoff::{Backoff, Jitter};
use crate::broker::Wake;
use crate::error::{Error, Result};

/// What consumers of one queue wait on.
#[derive(Debug, Default)]
pub(crate) struct QueueSignal {
    /// Woken (all waiters) when the queue or its delay queue receives messages.
    pub(crate) ready: Wake,
    /// Bumped on every push to the delay queue, so consumers know to fetch from it.
    pub(crate) dq_gen: AtomicU64,
    /// Notifications for this queue are known to work: consumers may wait long between polls.
    pub(crate) live: AtomicBool,
}

impl QueueSignal {
    pub(crate) fn wake(&self, delay_queue: bool) {
        if delay_queue {
            self.dq_gen.fetch_add(1, Ordering::AcqRel);
        }
        self.ready.wake();
    }
}

/// The queues to watch and their signals; `run` keeps the subscription in sync.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    signals: Mutex<HashMap<String, Arc<QueueSignal>>>,
    changed: Notify,
}

impl Notifier {
    fn signals(&self) -> MutexGuard<'_, HashMap<String, Arc<QueueSignal>>> {
        self.signals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signal of canonical `queue`, subscribing to it if new.
    pub(crate) fn watch(&self, queue: &str) -> Arc<QueueSignal> {
        let mut signals = self.signals();
        if let Some(signal) = signals.get(queue) {
            return signal.clone();
        }
        let signal = Arc::new(QueueSignal::default());
        signals.insert(queue.to_owned(), signal.clone());
        drop(signals);
        self.changed.notify_one();
        signal
    }

    /// Whether any queue is watched (the notifier has work).
    pub(crate) fn is_watching(&self) -> bool {
        !self.signals().is_empty()
    }

    fn all(&self) -> Vec<(String, Arc<QueueSignal>)> {
        self.signals()
            .iter()
            .map(|(q, s)| (q.clone(), s.clone()))
            .collect()
    }

    /// Keeps a pub/sub connection subscribed to every watched queue, reconnecting with
    /// backoff, until `stop`.
    pub(crate) async fn run(
        self: Arc<Self>,
        conn: Arc<Conn>,
        keys: Keys,
        poll_interval: Duration,
        stop: CancellationToken,
    ) {
        let mut warned = false;
        // 100 ms doubling up to 5 s between lost connections.
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Jitter::Equal,
        );
        loop {
            let connected = async {
                // Connect first: a refused CONFIG is only worth a warning on a live server.
                let pubsub = conn.pubsub().await?;
                backoff.reset();
                let enabled = enable_notifications(&conn, poll_interval, &mut warned).await;
                self.serve(pubsub, &conn, &keys, enabled).await
            };
            let lost = tokio::select! {
                _ = stop.cancelled() => return,
                lost = connected => lost,
            };
            if let Err(err) = lost {
                tracing::warn!(error = %err, "keyspace notifications unavailable; consumers poll until they are back");
            }
            for (_, signal) in self.all() {
                signal.live.store(false, Ordering::Release);
                signal.wake(true);
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Subscribes to every watched queue (and those watched later) and wakes their consumers
    /// on pushes; returns when the connection is lost.
    async fn serve(&self, pubsub: PubSub, conn: &Conn, keys: &Keys, enabled: bool) -> Result<()> {
        let prefix = format!("__keyspace@{}__:", conn.db());
        let (mut sink, mut stream) = pubsub.split();
        let mut channels: HashMap<String, (Arc<QueueSignal>, bool)> = HashMap::new();
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            for (queue, signal) in self.all() {
                let ready = format!("{prefix}{}", keys.list(&queue));
                if channels.contains_key(&ready) {
                    continue;
                }
                let delayed = format!("{prefix}{}", keys.list(&format!("{queue}.DQ")));
                sink.subscribe(&[&ready, &delayed])
                    .await
                    .map_err(|e| conn.error("subscribe", &e))?;
                signal.live.store(enabled, Ordering::Release);
                // Anything pushed before the subscription took effect.
                signal.wake(true);
                channels.insert(ready, (signal.clone(), false));
                channels.insert(delayed, (signal, true));
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = keepalive.tick() => {
                    // A silently dead connection (no FIN) would otherwise go unnoticed.
                    match tokio::time::timeout(KEEPALIVE, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return Err(conn.error("ping", &err)),
                        Err(_) => return Err(Error::connection("keyspace notification connection: no reply to PING")),
                    }
                }
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if let Some((signal, delayed)) = channels.get(msg.get_channel_name()) {
                            if adds_elements(&msg.get_payload::<String>().unwrap_or_default()) {
                                signal.wake(*delayed);
                            }
                        }
                    }
                    None => return Err(Error::connection("keyspace notification connection lost")),
                }
            }
        }
    }
}

/// How often the notification connection is checked with a PING.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Whether a list event may have added elements (pushes, moves in, restores), as opposed to
/// pops, trims and deletions, which need no wake-up.
fn adds_elements(event: &str) -> bool {
    !matches!(
        event,
        "lpop"
            | "rpop"
            | "ltrim"
            | "lrem"
            | "del"
            | "expire"
            | "expired"
            | "evicted"
            | "rename_from"
    )
}

/// Makes sure the server publishes keyspace events for lists (`K` and `l`, or `A`), adding
/// the missing flags to those already set. Returns whether they are known to be on; logs a
/// warning once when they cannot be enabled.
async fn enable_notifications(conn: &Conn, poll_interval: Duration, warned: &mut bool) -> bool {
    let mut warn = |why: String| {
        if !std::mem::replace(warned, true) {
            tracing::warn!(
                "cannot enable Redis keyspace notifications ({why}); idle consumers poll every \
                 {poll_interval:?} instead. Set `notify-keyspace-events Kl` on the server for \
                 immediate pickup"
            );
        }
        false
    };
    let current = match current_flags(conn).await {
        Ok(flags) => flags,
        Err(err) => return warn(format!("CONFIG GET refused: {err}")),
    };
    let has_keyspace = current.contains('K');
    let has_lists = current.contains('l') || current.contains('A');
    if has_keyspace && has_lists {
        return true;
    }
    let mut wanted = current.clone();
    if !has_keyspace {
        wanted.push('K');
    }
    if !has_lists {
        wanted.push('l');
    }
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET").arg("notify-keyspace-events").arg(&wanted);
    match conn.query::<()>("config set", &cmd).await {
        Ok(()) => {
            tracing::info!(from = %current, to = %wanted, "enabled Redis keyspace notifications for lists");
            true
        }
        Err(err) => warn(format!(
            "CONFIG SET notify-keyspace-events {wanted} refused: {err}"
        )),
    }
}

async fn current_flags(conn: &Conn) -> Result<String> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("notify-keyspace-events");
    let reply: Vec<String> = conn.query("config get", &cmd).await?;
    Ok(reply.get(1).cloned().unwrap_or_default())
}
