//! Testing actors as users write tests: each test has a broker of its own (`with_broker`, or
//! `testing::TestBroker`), so tests in parallel threads of this binary never run, count or
//! steal each other's messages. The first three are the Dramatiq-style patterns that failed
//! under `cargo test` while every test shared the global broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actor_runtime::testing::TestBroker;
use actor_runtime::{actor, get_broker, set_broker, with_broker, Broker, Error, Worker};

const JOIN: Option<Duration> = Some(Duration::from_secs(10));

static TALLIED: AtomicU64 = AtomicU64::new(0);
static STAMPED: AtomicU64 = AtomicU64::new(0);
static SHIPPED: AtomicU64 = AtomicU64::new(0);

/// Every test's actors share the `default` queue: only their brokers keep them apart.
#[actor]
async fn tally_order(order: u64) {
    let _ = order;
    TALLIED.fetch_add(1, Ordering::Relaxed);
}

#[actor]
fn stamp_invoice(invoice: u64) {
    let _ = invoice;
    STAMPED.fetch_add(1, Ordering::Relaxed);
}

#[actor]
async fn place_parcel(parcel: u64) -> Result<(), Error> {
    // No `.broker(..)`: the worker runs this inside the test's scope.
    ship_parcel::send(parcel).await?;
    Ok(())
}

#[actor(queue_name = "shipping")]
async fn ship_parcel(parcel: u64) {
    let _ = parcel;
    SHIPPED.fetch_add(1, Ordering::Relaxed);
}

#[tokio::test]
async fn send_then_start_a_worker_then_join_runs_exactly_its_50() {
    with_broker(Broker::stub(), async {
        for order in 0..50 {
            tally_order::send(order).await.unwrap();
        }
        let broker = get_broker().unwrap();
        let worker = Worker::new(broker.clone()).start().await.unwrap();
        broker.join("default", JOIN, true).await.unwrap();
        let report = worker.stop().await.unwrap();
        assert_eq!(report.succeeded, 50, "its worker ran only its messages");
    })
    .await;
    assert_eq!(TALLIED.load(Ordering::Relaxed), 50);
}

#[tokio::test]
async fn worker_first_then_send_then_join_runs_exactly_its_50() {
    with_broker(Broker::stub(), async {
        let broker = get_broker().unwrap();
        let worker = Worker::new(broker.clone())
            .threads(4)
            .start()
            .await
            .unwrap();
        for invoice in 0..50 {
            stamp_invoice::send(invoice).await.unwrap();
        }
        broker.join("default", JOIN, true).await.unwrap();
        let report = worker.stop().await.unwrap();
        assert_eq!(report.succeeded, 50, "its worker ran only its messages");
    })
    .await;
    assert_eq!(STAMPED.load(Ordering::Relaxed), 50);
}

#[tokio::test]
async fn messages_an_actor_sends_stay_in_the_scope() {
    with_broker(Broker::stub(), async {
        let broker = get_broker().unwrap();
        let worker = Worker::new(broker.clone()).start().await.unwrap();
        for parcel in 0..50 {
            place_parcel::send(parcel).await.unwrap();
        }
        broker.join("default", JOIN, true).await.unwrap();
        broker.join("shipping", JOIN, true).await.unwrap();
        let report = worker.stop().await.unwrap();
        assert_eq!(report.succeeded, 100, "50 placed, 50 shipped");
    })
    .await;
    assert_eq!(SHIPPED.load(Ordering::Relaxed), 50);
}

#[actor(queue_name = "scoped_only")]
async fn scoped_only(n: u64) {
    let _ = n;
}

#[tokio::test]
async fn send_inside_a_scope_never_reaches_the_global_broker() {
    // The only test of this binary that touches the global broker.
    let global = Broker::stub();
    set_broker(global.clone());
    let global_dyn: Broker = global.clone();
    let scoped = Broker::stub();
    with_broker(scoped.clone(), async {
        for n in 0..10 {
            scoped_only::send(n).await.unwrap();
        }
        assert_eq!(
            get_broker()
                .unwrap()
                .stats("scoped_only")
                .await
                .unwrap()
                .ready,
            10
        );
        // A spawned task is outside the scope (tokio task-locals do not propagate) ...
        let outside = tokio::spawn(async { get_broker().unwrap() });
        assert!(
            outside.await.unwrap().same(&global_dyn),
            "the global broker"
        );
        // ... unless it is wrapped in one.
        let inside = tokio::spawn(with_broker(get_broker().unwrap(), async {
            scoped_only::send(10).await.unwrap();
        }));
        inside.await.unwrap();
    })
    .await;
    assert_eq!(scoped.stats("scoped_only").await.unwrap().ready, 11);
    assert!(
        !global.queues().contains(&"scoped_only".to_owned()),
        "nothing reached the global broker"
    );
}

#[actor(queue_name = "two_brokers")]
async fn count_on_either(n: u64) {
    let _ = n;
}

#[tokio::test]
async fn a_worker_started_in_a_scope_consumes_only_its_broker() {
    let (mine, other) = (Broker::stub(), Broker::stub());
    for n in 0..20 {
        count_on_either::message(n)
            .broker(other.clone())
            .send()
            .await
            .unwrap();
    }
    let report = with_broker(mine.clone(), async {
        let worker = Worker::new(get_broker().unwrap()).start().await.unwrap();
        for n in 0..20 {
            count_on_either::send(n).await.unwrap();
        }
        mine.join("two_brokers", JOIN, true).await.unwrap();
        worker.stop().await.unwrap()
    })
    .await;
    assert_eq!(report.succeeded, 20);
    assert_eq!(
        other.stats("two_brokers").await.unwrap().ready,
        20,
        "untouched"
    );
}

static SEEN_BY_FN: std::sync::Mutex<Vec<Broker>> = std::sync::Mutex::new(Vec::new());

/// A plain `fn` runs on the worker's own threads: the scope goes with it.
#[actor(queue_name = "fn_scope")]
fn note_broker() {
    let broker = get_broker().unwrap();
    SEEN_BY_FN.lock().unwrap().push(broker);
}

#[tokio::test]
async fn a_plain_fn_actor_runs_inside_its_workers_scope() {
    let test = TestBroker::new();
    test.scope(async {
        for _ in 0..5 {
            note_broker::send().await.unwrap();
        }
    })
    .await;
    test.drain().await.unwrap().assert_no_dead_letters();
    let seen = SEEN_BY_FN.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|broker| broker.same(&test.broker())));
}

#[actor(queue_name = "harness")]
async fn audit_entry(entry: u64) -> u64 {
    entry * 2
}

#[actor(queue_name = "harness", max_retries = 0)]
async fn reject_odd(n: u64) -> Result<u64, String> {
    if n % 2 == 1 {
        Err(format!("{n} is odd"))
    } else {
        Ok(n)
    }
}

#[actor(queue_name = "harness", max_retries = 2)]
async fn always_times_out(feed: String) -> Result<(), String> {
    Err(format!("{feed}: timeout"))
}

#[tokio::test]
async fn test_broker_drain_reports_exactly_its_50_runs() {
    let test = TestBroker::new();
    test.scope(async {
        for entry in 0..50 {
            audit_entry::send(entry).await.unwrap();
        }
    })
    .await;
    let report = test.drain().await.unwrap();
    report.assert_no_dead_letters();
    let runs = report.runs_of::<audit_entry>();
    assert_eq!(runs.len(), 50);
    assert_eq!(report.succeeded().count(), 50);
    let mut entries: Vec<u64> = runs.iter().map(|r| r.arg(0).unwrap()).collect();
    entries.sort_unstable();
    assert_eq!(entries, (0..50).collect::<Vec<_>>());
    assert!(runs
        .iter()
        .all(|r| r.result == Ok((r.arg::<u64>(0).unwrap() * 2).into())));
    assert!(report.delayed.is_empty());
}

#[tokio::test]
async fn test_broker_drain_reports_failures_and_dead_letters() {
    let test = TestBroker::new();
    test.scope(async {
        for n in 0..10 {
            reject_odd::send(n).await.unwrap();
        }
    })
    .await;
    let report = test.drain().await.unwrap();
    assert_eq!(report.succeeded().count(), 5);
    assert_eq!(report.failed().count(), 5);
    assert_eq!(report.dead_letters_of::<reject_odd>().len(), 5);
    report.assert_dead_lettered::<reject_odd>("7 is odd");
    let failure = report.failed().next().unwrap().result.clone().unwrap_err();
    assert!(failure.message.ends_with("is odd"), "{failure:?}");
}

#[tokio::test]
async fn test_broker_skip_delays_runs_retries_without_their_backoff() {
    let test = TestBroker::new().skip_delays();
    test.scope(always_times_out::send("news".into()))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = test.drain().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "15 s and 30 s backoffs skipped"
    );
    let retries: Vec<u32> = report.runs.iter().map(|r| r.retries).collect();
    assert_eq!(retries, [0, 1, 2]);
    report.assert_dead_lettered::<always_times_out>("news: timeout");
}

#[tokio::test]
async fn test_broker_reports_retries_due_past_its_horizon_without_waiting() {
    let test = TestBroker::new();
    test.scope(always_times_out::send("weather".into()))
        .await
        .unwrap();
    let report = test.drain().await.unwrap();
    assert_eq!(
        report.runs.len(),
        1,
        "the first try; its retry is due in 15 s or so"
    );
    assert_eq!(report.delayed.len(), 1);
    assert_eq!(report.delayed[0].retries(), 1);
    report.assert_no_dead_letters();
}

#[tokio::test]
async fn test_broker_waits_for_delayed_messages_due_within_its_horizon() {
    let test = TestBroker::new();
    audit_entry::message(1)
        .delay(Duration::from_millis(200))
        .broker(test.broker())
        .send()
        .await
        .unwrap();
    let report = test.drain().await.unwrap();
    assert_eq!(report.runs_of::<audit_entry>().len(), 1);
    assert!(report.delayed.is_empty());
}

#[actor(queue_name = "harness_stuck")]
async fn never_returns() {
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn test_broker_drain_times_out_naming_the_busy_queue() {
    let test = TestBroker::new().timeout(Duration::from_millis(300));
    test.scope(never_returns::send()).await.unwrap();
    match test.drain().await {
        Err(Error::JoinTimeout { queue, .. }) => assert_eq!(queue, "harness_stuck"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
