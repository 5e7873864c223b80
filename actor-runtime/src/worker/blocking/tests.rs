//! The pool's promises, one thread and one channel at a time.

use super::*;
use std::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn pool(size: usize, max_abandoned: usize) -> BlockingPool {
    BlockingPool::new(size, max_abandoned, CancellationToken::new())
}

fn message() -> Arc<Message> {
    Arc::new(Message::new("q", "stuck_actor", vec![]))
}

/// Submits a call that reports it started, then blocks until `release` is sent to (or
/// dropped); returns the call and that release.
fn blocked(pool: &BlockingPool) -> (Call<()>, mpsc::Sender<()>) {
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let call = pool.submit(message(), move || {
        started_tx.send(()).unwrap();
        let _ = released.recv();
    });
    started.recv_timeout(WAIT).expect("the call started");
    (call, release)
}

#[tokio::test]
async fn a_call_runs_on_a_named_thread_and_returns() {
    let pool = pool(2, 4);
    let name = pool
        .submit(message(), || {
            std::thread::current().name().map(str::to_owned)
        })
        .await;
    let name = name.ok().flatten().unwrap();
    assert!(name.starts_with("actor-blocking-"), "{name}");
}

#[tokio::test]
async fn a_panic_is_an_error_and_the_thread_goes_on() {
    let pool = pool(1, 4);
    let call = pool.submit(message(), || -> u8 { panic!("boom") });
    match call.await {
        Err(CallError::Panic(payload)) => {
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"))
        }
        _ => panic!("expected a panic"),
    }
    assert_eq!(pool.submit(message(), || 7).await.ok(), Some(7));
}

#[tokio::test]
async fn abandoning_a_running_call_leaves_room_for_as_many_calls_as_threads() {
    let pool = pool(2, 4);
    let (stuck, release) = blocked(&pool);
    drop(stuck);
    assert_eq!(pool.abandoned(), 1);
    // Two calls that each wait for the other: both run only if two threads serve them.
    let (a_tx, a_rx) = mpsc::channel();
    let (b_tx, b_rx) = mpsc::channel();
    let a = pool.submit(message(), move || {
        a_tx.send(()).unwrap();
        b_rx.recv_timeout(WAIT).is_ok()
    });
    let b = pool.submit(message(), move || {
        b_tx.send(()).unwrap();
        a_rx.recv_timeout(WAIT).is_ok()
    });
    assert_eq!((a.await.ok(), b.await.ok()), (Some(true), Some(true)));
    release.send(()).unwrap();
    let (abandoned, live) = pool.wait_until(WAIT, |abandoned, _| abandoned == 0);
    assert_eq!(abandoned, 0);
    assert!(live <= 2, "{live} threads");
}

#[tokio::test]
async fn the_abandoned_count_goes_down_when_the_call_returns() {
    let pool = pool(1, 4);
    let (first, release_first) = blocked(&pool);
    drop(first);
    let (second, release_second) = blocked(&pool);
    drop(second);
    assert_eq!(pool.abandoned(), 2);
    assert!(!pool.stop_requested().is_cancelled());
    drop(release_first);
    assert_eq!(pool.wait_until(WAIT, |abandoned, _| abandoned <= 1).0, 1);
    drop(release_second);
    assert_eq!(pool.wait_until(WAIT, |abandoned, _| abandoned == 0).0, 0);
    // The pool is back to one thread, which still serves calls.
    assert_eq!(pool.submit(message(), || 1).await.ok(), Some(1));
    assert_eq!(pool.inner.lock().live, 1);
}

#[tokio::test]
async fn a_call_dropped_while_queued_never_runs() {
    let pool = pool(1, 4);
    let (running, release) = blocked(&pool);
    let (ran_tx, ran) = mpsc::channel();
    let queued = pool.submit(message(), move || ran_tx.send(()).unwrap());
    drop(queued);
    release.send(()).unwrap();
    running.await.ok().unwrap();
    // One thread, first in first out: the dropped call would have run before this one.
    assert_eq!(pool.submit(message(), || 2).await.ok(), Some(2));
    assert!(ran.try_recv().is_err(), "the dropped call ran");
    assert_eq!(pool.abandoned(), 0);
}

#[tokio::test]
async fn more_abandoned_calls_than_allowed_request_a_stop() {
    let pool = pool(1, 1);
    let stop = pool.stop_requested();
    let (first, _release_first) = blocked(&pool);
    drop(first);
    assert!(!stop.is_cancelled());
    let (second, _release_second) = blocked(&pool);
    drop(second);
    assert!(stop.is_cancelled());
    assert_eq!(pool.abandoned(), 2);
}

#[tokio::test]
async fn calls_abandoned_during_shutdown_request_no_stop() {
    let shutdown = CancellationToken::new();
    let pool = BlockingPool::new(1, 0, shutdown.clone());
    shutdown.cancel();
    let (call, _release) = blocked(&pool);
    drop(call);
    assert_eq!(pool.abandoned(), 1);
    assert!(!pool.stop_requested().is_cancelled());
}

#[tokio::test]
async fn closing_ends_idle_threads_and_refuses_calls() {
    let pool = pool(2, 4);
    assert_eq!(pool.submit(message(), || 1).await.ok(), Some(1));
    pool.close();
    assert_eq!(pool.wait_until(WAIT, |_, live| live == 0), (0, 0));
    assert!(matches!(
        pool.submit(message(), || 1).await,
        Err(CallError::Unavailable)
    ));
}
