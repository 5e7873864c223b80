//! Spots async actors that block their runtime thread (a blocking client called from an
//! `async fn`), which on a one-thread runtime (`-t 1`) stalls every other message, timer and
//! heartbeat of the worker.
//!
//! Each running async actor holds a slot; around every poll of its future the slot holds the
//! time the poll began, read from a coarse clock the watchdog thread advances on each tick:
//! two relaxed atomic stores per poll, no lock, no allocation. Every tick the watchdog looks
//! at the slots and warns, once per blocking episode, about a poll older than a second; the
//! poll, once it returns, says how long it blocked.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::message::Message;

/// How often the watchdog looks, and the coarse clock's resolution.
const TICK: Duration = Duration::from_millis(250);
/// A poll running longer than this is reported.
const THRESHOLD: Duration = Duration::from_secs(1);
/// Set on a slot's poll stamp once it was reported.
const WARNED: u64 = 1;

const ADVICE: &str = "use a plain `fn` actor or tokio::task::spawn_blocking for blocking calls";

/// The slots of a worker's async actors, and the thread that watches them.
pub(crate) struct Watchdog {
    slots: Arc<Slots>,
    /// Dropping it ends the thread at once.
    stop: Mutex<Option<mpsc::Sender<()>>>,
    #[cfg(test)]
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Slots {
    base: Instant,
    /// Milliseconds from `base` to the watchdog's last tick, plus 1 (so never 0).
    clock: AtomicU64,
    slots: Box<[Slot]>,
}

struct Slot {
    claimed: AtomicBool,
    /// While a poll runs, `clock` at its start shifted left by one, `| WARNED` once
    /// reported; 0 between polls.
    polling: AtomicU64,
    /// The message of the actor holding the slot, for the warning.
    message: Mutex<Option<Arc<Message>>>,
}

impl Watchdog {
    /// Watches up to `slots` async actors at once (the worker's `threads`) from a thread of
    /// its own; without that thread (it could not start) nothing is watched.
    pub(crate) fn start(slots: usize) -> Watchdog {
        let slots = Arc::new(Slots {
            base: Instant::now(),
            clock: AtomicU64::new(1),
            slots: (0..slots)
                .map(|_| Slot {
                    claimed: AtomicBool::new(false),
                    polling: AtomicU64::new(0),
                    message: Mutex::new(None),
                })
                .collect(),
        });
        let (stop, stopped) = mpsc::channel();
        let watched = slots.clone();
        let spawned = std::thread::Builder::new()
            .name("actor-watchdog".into())
            .spawn(move || watch(&watched, &stopped));
        let (stop, thread) = match spawned {
            Ok(thread) => (Some(stop), Some(thread)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start the watchdog thread: async actors that block their thread will not be reported");
                (None, None)
            }
        };
        #[cfg(not(test))]
        drop(thread);
        Watchdog {
            slots,
            stop: Mutex::new(stop),
            #[cfg(test)]
            thread,
        }
    }

    /// Ends the watchdog's thread.
    pub(crate) fn stop(&self) {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// `future`, for `message`, watched while it runs (unwatched when every slot is taken).
    pub(crate) fn watch<F: Future + Unpin>(
        &self,
        message: &Arc<Message>,
        future: F,
    ) -> Watched<'_, F> {
        Watched {
            future,
            claim: self.slots.claim(message),
        }
    }
}

impl Slots {
    fn claim(&self, message: &Arc<Message>) -> Option<Claim<'_>> {
        let n = self.slots.len();
        // Start where the message's address points, so concurrent claims rarely collide
        // without sharing a counter.
        let start = (Arc::as_ptr(message) as usize >> 4) % n.max(1);
        (0..n).map(|i| (start + i) % n).find_map(|index| {
            let slot = &self.slots[index];
            slot.claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .ok()?;
            *slot.message() = Some(message.clone());
            Some(Claim { slots: self, index })
        })
    }
}

impl Slot {
    fn message(&self) -> MutexGuard<'_, Option<Arc<Message>>> {
        self.message.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watchdog's thread: ticks until told to stop.
fn watch(slots: &Slots, stop: &mpsc::Receiver<()>) {
    let threshold = (THRESHOLD + TICK).as_millis() as u64;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(TICK) {
        let now = slots.base.elapsed().as_millis() as u64 + 1;
        slots.clock.store(now, Ordering::Relaxed);
        for slot in slots.slots.iter() {
            let polling = slot.polling.load(Ordering::Relaxed);
            if polling == 0 || polling & WARNED != 0 {
                continue;
            }
            // The stamp is the last tick before the poll began, up to a tick early: past
            // threshold + tick, the poll has surely run longer than the threshold.
            let since = now.saturating_sub(polling >> 1);
            if since < threshold {
                continue;
            }
            if slot
                .polling
                .compare_exchange(
                    polling,
                    polling | WARNED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let blocked = Duration::from_millis(since - TICK.as_millis() as u64);
            if let Some(m) = slot.message().as_deref() {
                tracing::warn!(
                    actor = %m.actor_name,
                    message_id = %m.message_id,
                    queue = %m.queue_name,
                    blocked_ms = blocked.as_millis() as u64,
                    "an async actor has blocked its runtime thread for over {:.1} s; {ADVICE}",
                    blocked.as_secs_f64()
                );
            }
        }
    }
}

/// A slot held by one running actor.
struct Claim<'a> {
    slots: &'a Slots,
    index: usize,
}

impl Claim<'_> {
    fn slot(&self) -> &Slot {
        &self.slots.slots[self.index]
    }

    /// A reported poll returned; `stamp` is the clock when it began.
    fn report_return(&self, stamp: u64) {
        let began = self.slots.base + Duration::from_millis(stamp - 1);
        // The stamp is up to a tick early: take the middle.
        let blocked = began.elapsed().saturating_sub(TICK / 2);
        if let Some(m) = self.slot().message().as_deref() {
            tracing::warn!(
                actor = %m.actor_name,
                message_id = %m.message_id,
                queue = %m.queue_name,
                blocked_ms = blocked.as_millis() as u64,
                "an async actor blocked its runtime thread for about {:.1} s before yielding; {ADVICE}",
                blocked.as_secs_f64()
            );
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let slot = self.slot();
        *slot.message() = None;
        slot.polling.store(0, Ordering::Relaxed);
        slot.claimed.store(false, Ordering::Release);
    }
}

/// A future whose polls the watchdog times.
pub(crate) struct Watched<'a, F> {
    future: F,
    claim: Option<Claim<'a>>,
}

impl<F: Future + Unpin> Future for Watched<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(claim) = &this.claim else {
            return Pin::new(&mut this.future).poll(cx);
        };
        let slot = claim.slot();
        let stamp = claim.slots.clock.load(Ordering::Relaxed);
        slot.polling.store(stamp << 1, Ordering::Relaxed);
        let poll = Pin::new(&mut this.future).poll(cx);
        if slot.polling.swap(0, Ordering::Relaxed) & WARNED != 0 {
            claim.report_return(stamp);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Arc<Message> {
        Arc::new(Message::new("q", "sleepy", vec![]))
    }

    #[test]
    fn a_slot_is_held_while_watched_and_freed_after() {
        let watchdog = Watchdog::start(2);
        let (a, b, c) = (message(), message(), message());
        let first = watchdog.watch(&a, std::future::ready(()));
        let second = watchdog.watch(&b, std::future::ready(()));
        assert!(first.claim.is_some() && second.claim.is_some());
        // Every slot is taken: the third runs unwatched.
        assert!(watchdog.watch(&c, std::future::ready(())).claim.is_none());
        drop(first);
        assert!(watchdog.watch(&c, std::future::ready(())).claim.is_some());
        watchdog.stop();
    }

    #[test]
    fn stopping_ends_the_thread_at_once() {
        let mut watchdog = Watchdog::start(1);
        let thread = watchdog.thread.take().unwrap();
        let stopping = Instant::now();
        watchdog.stop();
        thread.join().unwrap();
        assert!(stopping.elapsed() < TICK, "{:?}", stopping.elapsed());
    }

    #[tokio::test]
    async fn a_long_poll_is_flagged_once_and_cleared_when_it_returns() {
        let watchdog = Watchdog::start(1);
        let m = message();
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let slots = watchdog.slots.clone();
        let future = Box::pin(async move {
            // Block this thread until the watchdog has flagged the poll.
            let slot = &slots.slots[0];
            let deadline = Instant::now() + Duration::from_secs(10);
            while slot.polling.load(Ordering::Relaxed) & WARNED == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            seen_tx
                .send(slot.polling.load(Ordering::Relaxed) & WARNED != 0)
                .unwrap();
        });
        watchdog.watch(&m, future).await;
        assert_eq!(
            seen.recv().ok(),
            Some(true),
            "the watchdog flagged the poll"
        );
        assert_eq!(watchdog.slots.slots[0].polling.load(Ordering::Relaxed), 0);
        assert!(!watchdog.slots.slots[0].claimed.load(Ordering::Relaxed));
        watchdog.stop();
    }
}
