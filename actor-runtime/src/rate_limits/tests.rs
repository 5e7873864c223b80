//! Dramatiq's limiter semantics, on the in-memory backend.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn backend() -> Arc<StubRateLimiterBackend> {
    Arc::new(StubRateLimiterBackend::new())
}

#[tokio::test]
async fn concurrent_limiter_counts_holders_and_releases_on_drop() {
    let b = backend();
    let limiter = ConcurrentRateLimiter::new(b.clone(), "c", 2);
    let first = limiter.acquire().await.unwrap();
    let second = limiter.acquire().await.unwrap();
    let err = limiter.acquire().await.unwrap_err();
    assert_eq!(err.key, "c");
    assert_eq!(b.counter("c"), Some(2));
    second.release().await;
    assert_eq!(b.counter("c"), Some(1));
    drop(first);
    // Dropping releases in the background.
    for _ in 0..100 {
        if b.counter("c") == Some(0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(b.counter("c"), Some(0));
    assert_eq!(limiter.run(|| async { 5 }).await.unwrap(), 5);
    assert_eq!(b.counter("c"), Some(0));
}

#[tokio::test]
async fn bucket_limiter_uses_epoch_aligned_buckets() {
    let limiter = BucketRateLimiter::new(backend(), "b", 2, Duration::from_secs(60));
    assert_eq!(limiter.bucket_key(125_000), "b@120000");
    let mut got = 0;
    for _ in 0..5 {
        got += limiter.try_acquire().await.is_some() as u32;
    }
    // At most 2, or 4 if the run straddled a bucket boundary.
    assert!(got == 2 || got == 4, "{got}");
}

#[tokio::test]
async fn window_limiter_sums_the_window() {
    let limiter = WindowRateLimiter::new(backend(), "w", 3, 5);
    assert_eq!(
        limiter.window_keys(100),
        ["w@100", "w@99", "w@98", "w@97", "w@96"]
    );
    let mut got = 0;
    for _ in 0..10 {
        got += limiter.try_acquire().await.is_some() as u32;
    }
    assert_eq!(got, 3);
}

#[tokio::test]
async fn barrier_releases_blocked_parties_when_the_last_arrives() {
    let b = backend();
    let barrier = Barrier::new(b.clone(), "bar");
    assert!(barrier.create(3).await.unwrap());
    assert!(!barrier.create(3).await.unwrap());
    let waiter = {
        let barrier = barrier.clone();
        tokio::spawn(async move { barrier.wait(true, Some(Duration::from_secs(5))).await })
    };
    while b.counter("bar") != Some(2) {
        tokio::task::yield_now().await;
    }
    assert!(!barrier.wait(false, None).await.unwrap());
    assert!(barrier.wait(false, None).await.unwrap());
    assert!(waiter.await.unwrap().unwrap());
    // Dramatiq leaves the counter at 1.
    assert_eq!(b.counter("bar"), Some(1));
}

#[tokio::test]
async fn blocking_wait_times_out() {
    let barrier = Barrier::new(backend(), "lonely");
    barrier.create(2).await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(!barrier
        .wait(true, Some(Duration::from_millis(50)))
        .await
        .unwrap());
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn rate_limit_exceeded_reads_well() {
    let err = RateLimitExceeded::new("k", Some("connection refused".into()));
    assert_eq!(
        err.to_string(),
        "rate limiter for key `k` is unavailable: connection refused"
    );
}
