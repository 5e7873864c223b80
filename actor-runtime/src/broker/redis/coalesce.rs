//! Group commit for concurrent single enqueues: many tasks sending at once (a web server's
//! handlers) share round trips instead of taking one each.
//!
//! The pattern, with no timer: a caller that finds fewer than `depth` flushes in progress
//! becomes a flusher and stores the waiting items in one call; items arriving while the
//! calls are in flight wait and go together in the next one. Each caller gets its own
//! call's result on a oneshot, and returns only once its item is stored (or its call
//! failed).
//!
//! With a depth of two, one group of senders prepares its next messages while the other
//! group's call runs, so neither the client nor the server waits idle between calls (on
//! an idle machine, each such wait is a wake-up from sleep, tens of microseconds).
//!
//! A flusher stops as soon as its own item is done: if others still wait, a spawned task
//! carries on, so no caller serves others for long. If a flusher's future is dropped (its
//! caller was cancelled) the same happens, and the call it had in flight is made again:
//! the flush must be idempotent (ours is: ids are chosen before the call, and the script
//! skips ids already stored). A cancelled caller's item may still be stored.
//!
//! Hand-written: the batching crates on crates.io flush on a timer or a size, which would
//! delay a lone sender, or run their own worker task, which costs every call a hop.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Batches of `T` stored by whoever calls [`submit`](Coalescer::submit) first.
pub(crate) struct Coalescer<T, E> {
    inner: Arc<Inner<T, E>>,
}

struct Inner<T, E> {
    /// Most items in one flush.
    cap: usize,
    /// Most flushes in progress at once.
    depth: usize,
    /// The error of a caller whose item was dropped unflushed (the runtime shut down).
    lost: fn() -> E,
    state: Mutex<State<T, E>>,
}

struct State<T, E> {
    waiting: VecDeque<Entry<T, E>>,
    /// Flushers (callers or spawned tasks) at work: at most `depth`.
    flushers: usize,
    /// The last flush carried several items: senders are concurrent.
    busy: bool,
}

struct Entry<T, E> {
    item: T,
    reply: oneshot::Sender<Result<(), E>>,
}

/// What stores a batch; any `Fn(Arc<[T]>) -> impl Future<Output = Result<(), E>>`.
pub(crate) trait Flush<T, E>: Send + Sync + 'static {
    /// Stores `items`; safe to call again with the same items.
    fn call(&self, items: Arc<[T]>) -> impl Future<Output = Result<(), E>> + Send + 'static;
}

impl<T, E, F, Fut> Flush<T, E> for F
where
    F: Fn(Arc<[T]>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
{
    fn call(&self, items: Arc<[T]>) -> impl Future<Output = Result<(), E>> + Send + 'static {
        self(items)
    }
}

impl<T, E> Coalescer<T, E>
where
    T: Send + Sync + 'static,
    E: Clone + Send + 'static,
{
    /// At most `cap` items per flush and `depth` flushes at once; `lost` is the error of
    /// an item that can no longer be flushed.
    pub(crate) fn new(cap: usize, depth: usize, lost: fn() -> E) -> Coalescer<T, E> {
        Coalescer {
            inner: Arc::new(Inner {
                cap: cap.max(1),
                depth: depth.max(1),
                lost,
                state: Mutex::new(State {
                    waiting: VecDeque::new(),
                    flushers: 0,
                    busy: false,
                }),
            }),
        }
    }

    /// Stores `item` together with whatever else is waiting, by `flush` (called with at most
    /// `cap` items, in arrival order), and returns the result of the call that took it.
    pub(crate) async fn submit(&self, item: T, flush: impl Flush<T, E>) -> Result<(), E> {
        let (reply, mut rx) = oneshot::channel();
        let (lead, busy) = {
            let mut state = self.inner.state();
            state.waiting.push_back(Entry { item, reply });
            let lead = state.flushers < self.inner.depth;
            state.flushers += usize::from(lead);
            (lead, state.busy)
        };
        if !lead {
            return rx.await.unwrap_or_else(|_| Err((self.inner.lost)()));
        }
        let mut flusher = Flusher::new(self.inner.clone(), flush, true);
        if busy {
            // Let the tasks woken with this one (the senders of the last batch) join in. A
            // lone sender skips this trip through the scheduler.
            tokio::task::yield_now().await;
        }
        loop {
            if let Ok(result) = rx.try_recv() {
                flusher.step_down();
                return result;
            }
            if !flusher.flush_next().await {
                // Nothing waits: another flusher's call has our item.
                flusher.step_down();
                return rx.await.unwrap_or_else(|_| Err((self.inner.lost)()));
            }
        }
    }
}

impl<T, E> Inner<T, E> {
    fn state(&self) -> MutexGuard<'_, State<T, E>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Holds the flusher role until it hands it on: to nobody when nothing waits, else to a
/// spawned task; dropped mid-call, that task first makes the call again.
struct Flusher<T, E, F>
where
    T: Send + Sync + 'static,
    E: Clone + Send + 'static,
    F: Flush<T, E>,
{
    inner: Arc<Inner<T, E>>,
    /// Taken once the role is released.
    flush: Option<F>,
    /// The batch whose call is under way, with its callers.
    in_flight: Option<Batch<T, E>>,
    /// A caller, not a spawned task: hands on to a spawned task.
    caller: bool,
}

type Batch<T, E> = (Arc<[T]>, Vec<oneshot::Sender<Result<(), E>>>);

impl<T, E, F> Flusher<T, E, F>
where
    T: Send + Sync + 'static,
    E: Clone + Send + 'static,
    F: Flush<T, E>,
{
    fn new(inner: Arc<Inner<T, E>>, flush: F, caller: bool) -> Self {
        Flusher {
            inner,
            flush: Some(flush),
            in_flight: None,
            caller,
        }
    }

    /// Flushes the batch in flight, or else the next one; false when none waits.
    async fn flush_next(&mut self) -> bool {
        if self.in_flight.is_none() {
            let mut state = self.inner.state();
            let n = state.waiting.len().min(self.inner.cap);
            if n == 0 {
                return false;
            }
            state.busy = n > 1;
            let (items, replies): (Vec<T>, Vec<_>) = state
                .waiting
                .drain(..n)
                .map(|entry| (entry.item, entry.reply))
                .unzip();
            self.in_flight = Some((items.into(), replies));
        }
        let (Some(flush), Some((items, _))) = (&self.flush, &self.in_flight) else {
            return false;
        };
        let result = flush.call(items.clone()).await;
        if let Some((_, replies)) = self.in_flight.take() {
            for reply in replies {
                // A cancelled caller no longer listens.
                let _ = reply.send(result.clone());
            }
        }
        true
    }

    /// Gives the role up: released if nothing waits, else handed to a spawned task (by drop).
    fn step_down(mut self) {
        let mut state = self.inner.state();
        if state.waiting.is_empty() && self.in_flight.is_none() {
            state.flushers -= 1;
            self.flush = None;
        }
    }

    /// Flushes until nothing waits, then releases the role.
    async fn drain(mut self) {
        loop {
            while self.flush_next().await {}
            let mut state = self.inner.state();
            if state.waiting.is_empty() {
                state.flushers -= 1;
                self.flush = None;
                return;
            }
        }
    }
}

impl<T, E, F> Drop for Flusher<T, E, F>
where
    T: Send + Sync + 'static,
    E: Clone + Send + 'static,
    F: Flush<T, E>,
{
    fn drop(&mut self) {
        let Some(flush) = self.flush.take() else {
            return;
        };
        // Still holding the role, with items waiting or a call cut short.
        let inner = self.inner.clone();
        let in_flight = self.in_flight.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if self.caller => {
                let mut successor = Flusher::new(inner, flush, false);
                successor.in_flight = in_flight;
                drop(runtime.spawn(successor.drain()));
            }
            // A spawned flusher dropped: its runtime is shutting down. Fail the waiting
            // callers (their replies drop) rather than leave them hanging.
            _ => {
                drop(in_flight);
                let mut state = inner.state();
                state.waiting.clear();
                state.flushers -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A store that records its calls, failing any batch holding a negative item.
    #[derive(Clone, Default)]
    struct Store {
        calls: Arc<Mutex<Vec<Vec<i32>>>>,
        running: Arc<AtomicUsize>,
        /// The most calls seen under way at once.
        most: Arc<AtomicUsize>,
    }

    impl Store {
        fn flush(&self) -> impl Fn(Arc<[i32]>) -> BoxedFlush + Send + Sync + 'static {
            let store = self.clone();
            move |items| {
                let store = store.clone();
                Box::pin(async move {
                    let _running = Running::enter(&store.running, &store.most);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    store.calls.lock().unwrap().push(items.to_vec());
                    if items.iter().any(|&i| i < 0) {
                        Err(format!("refused {items:?}"))
                    } else {
                        Ok(())
                    }
                })
            }
        }

        fn calls(&self) -> Vec<Vec<i32>> {
            self.calls.lock().unwrap().clone()
        }

        fn stored(&self) -> Vec<i32> {
            let mut all: Vec<i32> = self.calls().concat();
            all.sort();
            all
        }
    }

    /// Counts a call under way, checking there are at most [`DEPTH`].
    struct Running<'a>(&'a AtomicUsize);

    impl<'a> Running<'a> {
        fn enter(count: &'a AtomicUsize, most: &AtomicUsize) -> Running<'a> {
            let running = count.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(running <= DEPTH, "{running} calls at a time");
            most.fetch_max(running, Ordering::SeqCst);
            Running(count)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    type BoxedFlush = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;

    /// Calls in flight at once in these tests.
    const DEPTH: usize = 2;

    fn coalescer(cap: usize) -> Coalescer<i32, String> {
        Coalescer::new(cap, DEPTH, || "lost".to_owned())
    }

    #[tokio::test]
    async fn a_lone_caller_flushes_its_item_at_once() {
        let (store, c) = (Store::default(), coalescer(10));
        c.submit(1, store.flush()).await.unwrap();
        c.submit(2, store.flush()).await.unwrap();
        assert_eq!(store.calls().len(), 2, "a call each");
        assert_eq!(store.stored(), [1, 2]);
        assert_eq!(c.inner.state().flushers, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_calls_of_at_most_cap_items() {
        let (store, c) = (Store::default(), Arc::new(coalescer(8)));
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let (store, c) = (store.clone(), c.clone());
                tokio::spawn(async move { c.submit(i, store.flush()).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(store.stored(), (0..100).collect::<Vec<_>>(), "each once");
        let calls = store.calls();
        assert!(calls.iter().all(|call| call.len() <= 8));
        assert!(calls.len() < 50, "calls were shared: {}", calls.len());
        assert_eq!(c.inner.state().flushers, 0);
    }

    #[tokio::test]
    async fn a_second_call_starts_while_the_first_is_in_flight() {
        let (store, c) = (Store::default(), Arc::new(coalescer(100)));
        let first = {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { c.submit(1, store.flush()).await })
        };
        // Let the first caller's call start (it sleeps in the store).
        while store.running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        c.submit(2, store.flush()).await.unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(store.most.load(Ordering::SeqCst), 2, "the calls overlapped");
        assert_eq!(store.calls().len(), 2, "a call each");
        assert_eq!(store.stored(), [1, 2]);
        assert_eq!(c.inner.state().flushers, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_call_fails_exactly_its_callers() {
        let (store, c) = (Store::default(), Arc::new(coalescer(4)));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (store, c) = (store.clone(), c.clone());
                let item = if i == 17 { -17 } else { i };
                tokio::spawn(async move { (item, c.submit(item, store.flush()).await) })
            })
            .collect();
        let mut failed = Vec::new();
        for task in tasks {
            let (item, result) = task.await.unwrap();
            if result.is_err() {
                failed.push(item);
            }
        }
        let bad = store
            .calls()
            .into_iter()
            .find(|call| call.contains(&-17))
            .unwrap();
        failed.sort();
        let mut expected = bad.clone();
        expected.sort();
        assert_eq!(failed, expected, "the failed call's callers, and only they");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_flusher_hands_on_and_nothing_is_lost() {
        let (store, c) = (Store::default(), Arc::new(coalescer(100)));
        // The first caller leads and is cancelled mid-call; the others joined in meanwhile.
        let leader = {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { c.submit(0, store.flush()).await })
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        let others: Vec<_> = (1..20)
            .map(|i| {
                let (store, c) = (store.clone(), c.clone());
                tokio::spawn(async move { c.submit(i, store.flush()).await })
            })
            .collect();
        leader.abort();
        for task in others {
            task.await.unwrap().unwrap();
        }
        // The cut call is made again (the flush is idempotent): item 0 may be seen twice.
        let mut stored = store.stored();
        stored.dedup();
        assert_eq!(stored, (0..20).collect::<Vec<_>>());
        assert_eq!(c.inner.state().flushers, 0);
        c.submit(99, store.flush()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_waiters_do_not_block_the_others() {
        let (store, c) = (Store::default(), Arc::new(coalescer(100)));
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let (store, c) = (store.clone(), c.clone());
                tokio::spawn(async move { c.submit(i, store.flush()).await })
            })
            .collect();
        for (i, task) in tasks.iter().enumerate() {
            if i % 3 == 0 {
                task.abort();
            }
        }
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok(result) => result.unwrap(),
                Err(err) => assert!(err.is_cancelled() && i % 3 == 0),
            }
        }
        c.submit(99, store.flush()).await.unwrap();
        assert_eq!(c.inner.state().flushers, 0);
    }
}
