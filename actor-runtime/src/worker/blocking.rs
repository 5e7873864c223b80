//! The worker's own pool of OS threads for plain `fn` actors, which keeps count of the calls
//! it had to abandon.
//!
//! Rust cannot stop a thread: a call given up on (past its time limit, at shutdown) goes on
//! running its user's code. On tokio's blocking pool such a call kept its thread unseen and
//! uncounted, and that pool is shared with tokio's own blocking work (DNS lookups, files), so
//! a few hundred stuck actors starved all of it. Here an abandoned call's thread leaves the
//! pool, is counted, and a replacement serves the others; once more calls are abandoned than
//! the worker allows, [`BlockingPool::stop_requested`] asks the worker's owner to stop it so
//! that a fresh process takes over. When an abandoned call returns at last, its thread
//! rejoins the pool if the pool is short, else ends.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::message::Message;

/// A call's progress; changed only under the pool's lock.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ABANDONED: u8 = 2;
/// Finished, or removed from the queue unrun.
const OVER: u8 = 3;

/// Runs plain `fn` actors on at most `size` threads of its own, started as calls need them.
pub(crate) struct BlockingPool {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes idle threads: a call was queued, or the pool closed.
    work: Condvar,
    /// Signalled when an abandoned call returns or a thread ends (tests wait on it).
    changed: Condvar,
    size: usize,
    max_abandoned: usize,
    /// The worker's shutdown: calls abandoned once it began never ask for a stop.
    shutdown: CancellationToken,
    stop_requested: CancellationToken,
    names: AtomicUsize,
}

struct State {
    queue: VecDeque<Job>,
    /// Threads serving the pool, running a call or idle (abandoned ones excluded).
    live: usize,
    idle: usize,
    /// Calls given up on whose threads still run them, with when they were given up.
    abandoned: Vec<(Arc<Ticket>, Instant)>,
    closed: bool,
}

struct Job {
    ticket: Arc<Ticket>,
    run: Box<dyn FnOnce() + Send>,
}

struct Ticket {
    status: AtomicU8,
    message: Arc<Message>,
}

/// Why a call produced no value.
pub(crate) enum CallError {
    /// It panicked; the payload.
    Panic(Box<dyn Any + Send>),
    /// No thread could be started to run it.
    Unavailable,
}

/// The result of a submitted call. Dropping it before the call finished gives the call up:
/// a queued call is removed unrun, a running one is abandoned (see the module docs).
pub(crate) struct Call<T> {
    result: oneshot::Receiver<std::thread::Result<T>>,
    /// Until the result is in.
    ticket: Option<Arc<Ticket>>,
    pool: Arc<Inner>,
}

impl BlockingPool {
    /// A pool of at most `size` threads (at least 1) that asks for a stop once more than
    /// `max_abandoned` abandoned calls are running, unless `shutdown` has begun.
    pub(crate) fn new(size: usize, max_abandoned: usize, shutdown: CancellationToken) -> Self {
        BlockingPool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    live: 0,
                    idle: 0,
                    abandoned: Vec::new(),
                    closed: false,
                }),
                work: Condvar::new(),
                changed: Condvar::new(),
                size: size.max(1),
                max_abandoned,
                shutdown,
                stop_requested: CancellationToken::new(),
                names: AtomicUsize::new(0),
            }),
        }
    }

    /// Queues `call` (for `message`) to run on one of the pool's threads.
    pub(crate) fn submit<T, F>(&self, message: Arc<Message>, call: F) -> Call<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, result) = oneshot::channel();
        let ticket = Arc::new(Ticket {
            status: AtomicU8::new(QUEUED),
            message,
        });
        let run = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(call)));
        });
        let mut state = self.inner.lock();
        if state.closed {
            // `run`, and with it the sender, is dropped: the call is `Unavailable`.
            return Call {
                result,
                ticket: None,
                pool: self.inner.clone(),
            };
        }
        state.queue.push_back(Job {
            ticket: ticket.clone(),
            run,
        });
        if state.idle > 0 {
            self.inner.work.notify_one();
        }
        let spawn = self.inner.need_thread(&mut state);
        drop(state);
        if spawn {
            self.inner.spawn_thread();
        }
        Call {
            result,
            ticket: Some(ticket),
            pool: self.inner.clone(),
        }
    }

    /// Completes once more calls are abandoned than allowed (the pool logged why).
    pub(crate) fn stop_requested(&self) -> CancellationToken {
        self.inner.stop_requested.clone()
    }

    /// Abandoned calls still running.
    pub(crate) fn abandoned(&self) -> usize {
        self.inner.lock().abandoned.len()
    }

    /// The most abandoned calls allowed before a stop is requested.
    pub(crate) fn max_abandoned(&self) -> usize {
        self.inner.max_abandoned
    }

    /// Ends idle threads, and the others once their call returns; later calls are
    /// `Unavailable`.
    pub(crate) fn close(&self) {
        let mut state = self.inner.lock();
        state.closed = true;
        let queued = std::mem::take(&mut state.queue);
        for job in &queued {
            job.ticket.status.store(OVER, Ordering::Relaxed);
        }
        drop(state);
        self.inner.work.notify_all();
        // Outside the lock: dropping a job drops its result's sender, waking its caller.
        drop(queued);
    }

    /// Waits until `done` holds of (abandoned calls, live threads), or `timeout` passes;
    /// returns those numbers.
    #[cfg(test)]
    fn wait_until(&self, timeout: Duration, done: impl Fn(usize, usize) -> bool) -> (usize, usize) {
        let state = self.inner.lock();
        let (state, _) = self
            .inner
            .changed
            .wait_timeout_while(state, timeout, |s| !done(s.abandoned.len(), s.live))
            .unwrap_or_else(|e| e.into_inner());
        (state.abandoned.len(), state.live)
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a thread should be started for the queued calls; counts it as live if so.
    fn need_thread(&self, state: &mut State) -> bool {
        if !state.closed && state.queue.len() > state.idle && state.live < self.size {
            state.live += 1;
            true
        } else {
            false
        }
    }

    fn spawn_thread(self: &Arc<Self>) {
        let n = self.names.fetch_add(1, Ordering::Relaxed) + 1;
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("actor-blocking-{n}"))
            .spawn(move || pool.serve());
        if let Err(err) = spawned {
            let mut state = self.lock();
            state.live -= 1;
            // With no thread at all, queued calls would wait forever: fail them.
            let orphans = if state.live == 0 {
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            };
            for job in &orphans {
                job.ticket.status.store(OVER, Ordering::Relaxed);
            }
            drop(state);
            tracing::error!(error = %err, failed_calls = orphans.len(), "cannot start a thread for plain `fn` actors");
        }
    }

    /// A pool thread: runs queued calls until the pool closes or its call is abandoned.
    fn serve(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            let Some(Job { ticket, run }) = state.queue.pop_front() else {
                if state.closed {
                    state.live -= 1;
                    drop(state);
                    self.changed.notify_all();
                    return;
                }
                state.idle += 1;
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                state.idle -= 1;
                continue;
            };
            ticket.status.store(RUNNING, Ordering::Relaxed);
            drop(state);
            run();
            state = self.lock();
            if ticket.status.load(Ordering::Relaxed) != ABANDONED {
                ticket.status.store(OVER, Ordering::Relaxed);
                continue;
            }
            ticket.status.store(OVER, Ordering::Relaxed);
            let given_up = state
                .abandoned
                .iter()
                .position(|(t, _)| Arc::ptr_eq(t, &ticket))
                .map(|i| state.abandoned.swap_remove(i).1);
            let still = state.abandoned.len();
            let rejoin = !state.closed && state.live < self.size;
            if rejoin {
                state.live += 1;
            }
            drop(state);
            self.changed.notify_all();
            let late = given_up.map_or(Duration::ZERO, |at| at.elapsed());
            let m = &ticket.message;
            tracing::info!(
                actor = %m.actor_name,
                message_id = %m.message_id,
                queue = %m.queue_name,
                late_ms = late.as_millis() as u64,
                abandoned = still,
                "an abandoned plain `fn` actor returned; its thread is free again"
            );
            if !rejoin {
                return;
            }
            state = self.lock();
        }
    }

    /// The caller stopped waiting for `ticket`'s call.
    fn give_up(self: &Arc<Self>, ticket: Arc<Ticket>) {
        let mut state = self.lock();
        match ticket.status.load(Ordering::Relaxed) {
            QUEUED => {
                ticket.status.store(OVER, Ordering::Relaxed);
                let position = state
                    .queue
                    .iter()
                    .position(|job| Arc::ptr_eq(&job.ticket, &ticket));
                let job = position.and_then(|i| state.queue.remove(i));
                drop(state);
                drop(job);
            }
            RUNNING => {
                ticket.status.store(ABANDONED, Ordering::Relaxed);
                state.live -= 1;
                state.abandoned.push((ticket.clone(), Instant::now()));
                let abandoned = state.abandoned.len();
                let over_cap = abandoned > self.max_abandoned
                    && !self.shutdown.is_cancelled()
                    && !self.stop_requested.is_cancelled();
                let actors = over_cap.then(|| actor_counts(&state.abandoned));
                let spawn = self.need_thread(&mut state);
                drop(state);
                if spawn {
                    self.spawn_thread();
                }
                let m = &ticket.message;
                tracing::warn!(
                    actor = %m.actor_name,
                    message_id = %m.message_id,
                    queue = %m.queue_name,
                    abandoned,
                    max_abandoned = self.max_abandoned,
                    "a plain `fn` actor was given up on but goes on running (Rust cannot stop a \
                     thread); its thread is abandoned and replaced"
                );
                if let Some(actors) = actors {
                    tracing::error!(
                        abandoned,
                        max_abandoned = self.max_abandoned,
                        actors = %actors,
                        "{abandoned} threads are stuck in plain `fn` actors past their time limit \
                         (at most {} allowed): stopping this worker gracefully so that a fresh \
                         process replaces it",
                        self.max_abandoned
                    );
                    self.stop_requested.cancel();
                }
            }
            _ => {}
        }
    }
}

/// `name ×count` per actor, most first.
fn actor_counts(abandoned: &[(Arc<Ticket>, Instant)]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (ticket, _) in abandoned {
        let name = ticket.message.actor_name.as_str();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(name, count)| format!("{name} ×{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<T> Future for Call<T> {
    type Output = Result<T, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match Pin::new(&mut self.result).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(Ok(value))) => Ok(value),
            Poll::Ready(Ok(Err(payload))) => Err(CallError::Panic(payload)),
            Poll::Ready(Err(_)) => Err(CallError::Unavailable),
        };
        self.ticket = None;
        Poll::Ready(result)
    }
}

impl<T> Drop for Call<T> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        // Finished but not yet collected: nothing to give up.
        if self.result.try_recv().is_ok() {
            return;
        }
        self.pool.give_up(ticket);
    }
}

#[cfg(test)]
mod tests;
