//! Rate limiters hammered by concurrent tasks and by several workers: the limit holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actor_runtime::rate_limits::{
    Barrier, BucketRateLimiter, ConcurrentRateLimiter, RateLimitExceeded, RateLimiterBackend,
    RedisRateLimiterBackend, StubRateLimiterBackend, WindowRateLimiter,
};
use actor_runtime::{actor, Broker, Worker};

use crate::support::results::delete_keys;
use crate::support::{namespace, redis_url};

async fn redis_backend() -> Arc<dyn RateLimiterBackend> {
    Arc::new(RedisRateLimiterBackend::new(redis_url()).unwrap())
}

/// Tracks how many holders run at once, and the most ever seen.
#[derive(Default)]
struct Occupancy {
    now: AtomicI64,
    max: AtomicI64,
    total: AtomicUsize,
}

impl Occupancy {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn hammer_concurrent(backend: Arc<dyn RateLimiterBackend>, key: &str) {
    let limiter = ConcurrentRateLimiter::new(backend.clone(), key, 3);
    let occupancy = Arc::new(Occupancy::default());
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (limiter, occupancy) = (limiter.clone(), occupancy.clone());
            tokio::spawn(async move {
                for j in 0..25u64 {
                    let ran = limiter
                        .run(|| async {
                            occupancy.enter();
                            tokio::time::sleep(Duration::from_millis(1 + (i + j) % 3)).await;
                            occupancy.leave();
                        })
                        .await;
                    if ran.is_err() {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let max = occupancy.max.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} holders at once with a limit of 3");
    assert!(max >= 2, "the test never got concurrency: max {max}");
    assert!(occupancy.total.load(Ordering::SeqCst) > 16);
    // Every slot was given back.
    assert!(backend.add(key, 0, Duration::from_secs(1)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_limiter_holds_under_contention_in_memory() {
    hammer_concurrent(Arc::new(StubRateLimiterBackend::new()), "mem-concurrent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_limiter_holds_under_contention_on_redis() {
    let key = namespace();
    hammer_concurrent(redis_backend().await, &key).await;
    let mut conn = crate::support::results::redis().await;
    let left: Option<i64> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, Some(0), "every slot is released");
    delete_keys(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bucket_limiter_allows_at_most_limit_per_bucket_on_redis() {
    let key = namespace();
    let limiter = BucketRateLimiter::new(
        redis_backend().await,
        key.as_str(),
        5,
        Duration::from_millis(200),
    );
    let granted: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (limiter, granted) = (limiter.clone(), granted.clone());
            tokio::spawn(async move {
                for _ in 0..40 {
                    let before = actor_runtime::message::now_ms();
                    if limiter.try_acquire().await.is_some() {
                        let after = actor_runtime::message::now_ms();
                        // Attribute the grant to its bucket only when the call did not
                        // straddle two buckets.
                        if before / 200 == after / 200 {
                            *granted.lock().unwrap().entry(before / 200).or_default() += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let granted = granted.lock().unwrap().clone();
    assert!(granted.len() > 1, "ran across several buckets");
    for (bucket, count) in &granted {
        assert!(
            *count <= 5,
            "bucket {bucket}: {count} grants for a limit of 5"
        );
    }
    delete_keys(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn window_limiter_allows_at_most_limit_per_sliding_window_on_redis() {
    let key = namespace();
    let limiter = WindowRateLimiter::new(redis_backend().await, key.as_str(), 4, 2);
    let grants: Arc<Mutex<Vec<u64>>> = Arc::default();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (limiter, grants) = (limiter.clone(), grants.clone());
            tokio::spawn(async move {
                let end = actor_runtime::message::now_ms() + 2_500;
                while actor_runtime::message::now_ms() < end {
                    let before = actor_runtime::message::now_ms() / 1000;
                    if limiter.try_acquire().await.is_some() {
                        grants.lock().unwrap().push(before);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let grants = grants.lock().unwrap().clone();
    assert!(!grants.is_empty());
    let (first, last) = (grants.iter().min().unwrap(), grants.iter().max().unwrap());
    for second in *first..=*last {
        let in_window = grants
            .iter()
            .filter(|s| **s == second || **s + 1 == second)
            .count();
        assert!(
            in_window <= 4,
            "{in_window} grants in the 2 s window ending at {second}"
        );
    }
    delete_keys(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn barrier_releases_every_party_on_redis() {
    let key = namespace();
    let barrier = Barrier::new(redis_backend().await, key.as_str()).ttl(Duration::from_secs(30));
    assert!(barrier.create(5).await.unwrap());
    let parties: Vec<_> = (0..5)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move { barrier.wait(true, Some(Duration::from_secs(10))).await })
        })
        .collect();
    for party in parties {
        assert!(party.await.unwrap().unwrap());
    }
    // A lone party times out (sub-second) on a barrier that is not cleared.
    let other = Barrier::new(redis_backend().await, format!("{key}-other"));
    other.create(2).await.unwrap();
    let started = std::time::Instant::now();
    assert!(!other
        .wait(true, Some(Duration::from_millis(300)))
        .await
        .unwrap());
    assert!(started.elapsed() < Duration::from_millis(1500));
    delete_keys(&key).await;
}

/// Per-test state for the actor below, by test key.
struct Limited {
    limiter: ConcurrentRateLimiter,
    occupancy: Occupancy,
    done: AtomicUsize,
}

fn limited_state() -> &'static Mutex<HashMap<String, Arc<Limited>>> {
    static STATE: OnceLock<Mutex<HashMap<String, Arc<Limited>>>> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

/// Holds a shared Redis semaphore while it works; when it is full, fails with
/// `RateLimitExceeded` and Retries runs it again shortly.
#[actor(
    queue_name = "rate_limited_q",
    max_retries = 1000,
    min_backoff = 5,
    max_backoff = 40
)]
async fn limited_work(test: String) -> Result<(), RateLimitExceeded> {
    let state = limited_state().lock().unwrap()[&test].clone();
    state
        .limiter
        .run(|| async {
            state.occupancy.enter();
            tokio::time::sleep(Duration::from_millis(10)).await;
            state.occupancy.leave();
        })
        .await?;
    state.done.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_sharing_a_redis_limiter_never_exceed_it() {
    let key = namespace();
    let state = Arc::new(Limited {
        limiter: ConcurrentRateLimiter::new(redis_backend().await, key.as_str(), 2),
        occupancy: Occupancy::default(),
        done: AtomicUsize::new(0),
    });
    limited_state()
        .lock()
        .unwrap()
        .insert(key.clone(), state.clone());
    let broker = Broker::stub();
    let workers = [
        Worker::new(broker.clone())
            .threads(4)
            .queues(["rate_limited_q"])
            .start()
            .await
            .unwrap(),
        Worker::new(broker.clone())
            .threads(4)
            .queues(["rate_limited_q"])
            .start()
            .await
            .unwrap(),
    ];
    for _ in 0..24 {
        limited_work::message(key.clone())
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
    }
    broker
        .join("rate_limited_q", Some(Duration::from_secs(60)), true)
        .await
        .unwrap();
    for worker in workers {
        worker.stop().await.unwrap();
    }
    assert_eq!(state.done.load(Ordering::SeqCst), 24);
    let max = state.occupancy.max.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} actors held a limit of 2 at once");
    assert_eq!(
        max, 2,
        "8 threads competed: the limit should have been reached"
    );
    delete_keys(&key).await;
}
