//! Periodic jobs on Redis: scheduler replicas (CLI processes) send one message per tick,
//! whatever replica dies; missed ticks are backfilled within the window; `schedules` lists
//! the last and next run. Each test has its own namespace. (The daylight-saving rule is
//! tested as the pure tick function, in the runtime's unit tests.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use actor_runtime::periodic::{Schedule, Scheduler};
use actor_runtime::{Broker, Message};
use redis::AsyncCommands;
use serde_json::Value;

use crate::support::cli::{kill, Proc, WORKER};
use crate::support::redis::{broker, cleanup, config, raw};
use crate::support::{namespace, now_ms, redis_url};

/// The `periodic_tick` of every message waiting in `queue`, in queue order.
async fn queued_ticks(ns: &str, queue: &str) -> Vec<u64> {
    let mut conn = raw().await;
    let ids: Vec<String> = conn.lrange(format!("{ns}:{queue}"), 0, -1).await.unwrap();
    let mut ticks = Vec::new();
    for id in ids {
        let payload: String = conn.hget(format!("{ns}:{queue}.msgs"), &id).await.unwrap();
        let message = Message::decode(payload.as_bytes()).unwrap();
        ticks.push(message.options["periodic_tick"].as_u64().unwrap());
    }
    ticks
}

/// Asserts `ticks` are distinct, in order, and every second between the first and last.
fn assert_one_per_second(ticks: &[u64]) {
    let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ticks.len(),
        "a tick was sent twice: {ticks:?}"
    );
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1000),
        "a tick is missing or out of order: {ticks:?}"
    );
}

fn scheduler_replica(ns: &str) -> Proc {
    Proc::spawn(
        WORKER,
        &["scheduler"],
        &[("REDIS_URL", &redis_url()), ("DRAMATIQ_NAMESPACE", ns)],
    )
}

/// Sleeps until `offset` past the next whole second of the clock (the ticks' clock).
async fn until_second_boundary(offset: Duration) {
    let ms = now_ms();
    let next = (ms / 1000 + 1) * 1000;
    tokio::time::sleep(Duration::from_millis(next - ms) + offset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scheduler_replicas_send_one_message_per_tick_even_when_one_is_killed() {
    let ns = namespace();
    let mut replicas: Vec<Proc> = (0..3).map(|_| scheduler_replica(&ns)).collect();
    for replica in &mut replicas {
        replica.wait_message("scheduler started").await;
    }
    let started = Instant::now();
    // A replica killed at a tick, while the three race for it.
    tokio::time::sleep(Duration::from_secs(15)).await;
    until_second_boundary(Duration::ZERO).await;
    let mut killed = replicas.remove(0);
    kill("KILL", killed.pid());
    assert!(!killed.exit().await.success());
    // A replica restarting mid-run.
    tokio::time::sleep(Duration::from_secs(15)).await;
    replicas.push(scheduler_replica(&ns));
    replicas
        .last_mut()
        .unwrap()
        .wait_message("scheduler started")
        .await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    for replica in &replicas {
        kill("TERM", replica.pid());
    }
    let sent_by = |replica: &Proc| {
        replica
            .seen
            .iter()
            .filter(|l| l["message"] == "periodic job sent")
            .count()
    };
    let mut sent = sent_by(&killed);
    for mut replica in replicas {
        assert!(replica.exit().await.success(), "{}", replica.dump());
        sent += sent_by(&replica);
    }

    let ticks = queued_ticks(&ns, "cli").await;
    assert!(
        ticks.len() >= 58,
        "about a minute of ticks: {}",
        ticks.len()
    );
    assert_one_per_second(&ticks);
    // Every message a replica says it sent is queued, and no other: each tick was claimed by
    // exactly one replica (the killed one may have died before logging its last claim).
    assert!(
        sent == ticks.len() || sent + 1 == ticks.len(),
        "{sent} sends logged, {} queued",
        ticks.len()
    );

    // `schedules` lists the last tick sent and the next one.
    let output = tokio::process::Command::new(WORKER)
        .args(["schedules", "--json"])
        .env("REDIS_URL", redis_url())
        .env("DRAMATIQ_NAMESPACE", &ns)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let listing: Value = serde_json::from_slice(&output.stdout).unwrap();
    let schedule = &listing["schedules"][0];
    assert_eq!(schedule["name"], "cli-every-second");
    assert_eq!(schedule["when"], "every 1s");
    assert_eq!(schedule["last_run"], *ticks.last().unwrap());
    assert!(schedule["next_run"].as_u64().unwrap() > *ticks.last().unwrap());
    let text = tokio::process::Command::new(WORKER)
        .arg("schedules")
        .env("REDIS_URL", redis_url())
        .env("DRAMATIQ_NAMESPACE", &ns)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("SCHEDULE"), "{text}");
    assert!(text.contains("cli-every-second  every 1s"), "{text}");

    let cleaner = broker(config(&ns));
    cleanup(&cleaner, 0).await;
}

fn ping(queue: &'static str) -> impl Fn() -> actor_runtime::Result<Message> + Send + Sync {
    move || Ok(Message::new(queue, "ping", vec![]))
}

#[tokio::test]
async fn missed_ticks_are_sent_within_the_backfill_window_and_older_ones_skipped() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let schedule = Schedule::every(
        "backfilled",
        Duration::from_secs(1),
        ping("periodic_backfill"),
    )
    .unwrap()
    .backfill(Duration::from_secs(10));
    // The last tick sent was 30 s ago: every scheduler was down since.
    let mut conn = raw().await;
    let last = (now_ms() / 1000 - 30) * 1000;
    let _: () = conn
        .hset(format!("{ns}:__periodic__"), "backfilled", last)
        .await
        .unwrap();
    let scheduler = Scheduler::new(broker.clone(), vec![schedule]).unwrap();
    let before = now_ms();
    let wait = scheduler.run_once().await.unwrap();
    let after = now_ms();
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    let ticks = queued_ticks(&ns, "periodic_backfill").await;
    assert_one_per_second(&ticks);
    assert!(
        (10..=11).contains(&ticks.len()),
        "the last 10 s of ticks: {ticks:?}"
    );
    assert!(ticks[0] + 11_000 >= before && *ticks.last().unwrap() <= after + 1000);
    assert!(ticks[0] > last + 15_000, "older ticks were skipped");
    assert_eq!(scheduler.fired(), ticks.len() as u64);
    // A second pass (or replica) sends nothing more for those ticks.
    let again = Scheduler::new(
        broker.clone(),
        vec![Schedule::every(
            "backfilled",
            Duration::from_secs(1),
            ping("periodic_backfill"),
        )
        .unwrap()
        .backfill(Duration::from_secs(10))],
    )
    .unwrap();
    again.run_once().await.unwrap();
    let now_ticks = queued_ticks(&ns, "periodic_backfill").await;
    assert_one_per_second(&now_ticks);
    let status = again.status().await.unwrap();
    assert_eq!(status[0].last_run, now_ticks.last().copied());
    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn a_schedule_that_never_ran_starts_with_the_next_tick_and_sends_nothing_before() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let hourly = Schedule::cron(
        "hourly",
        "0 * * * *",
        "Europe/Paris",
        ping("periodic_fresh"),
    )
    .unwrap();
    let scheduler = Scheduler::new(broker.clone(), vec![hourly]).unwrap();
    let wait = scheduler.run_once().await.unwrap();
    let status = scheduler.status().await.unwrap();
    // Nothing before its first start counts as missed.
    assert!(queued_ticks(&ns, "periodic_fresh").await.is_empty());
    assert_eq!(status[0].last_run, None);
    let next = status[0].next_run.unwrap();
    assert_eq!(
        next % 3_600_000,
        0,
        "on the hour (Paris is on whole hours from UTC)"
    );
    assert!(wait <= Duration::from_secs(30));
    // Its first tick after the start is sent: an every-second schedule shows it in a pass
    // at that tick.
    let secondly = Schedule::every("secondly", Duration::from_secs(1), ping("periodic_fresh"));
    let secondly = Scheduler::new(broker.clone(), vec![secondly.unwrap()]).unwrap();
    let wait = secondly.run_once().await.unwrap();
    assert!(queued_ticks(&ns, "periodic_fresh").await.is_empty());
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    tokio::time::sleep(wait).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while secondly.fired() == 0 {
        assert!(Instant::now() < deadline, "the first tick was never sent");
        let wait = secondly.run_once().await.unwrap();
        tokio::time::sleep(wait.min(Duration::from_millis(5))).await;
    }
    assert_eq!(queued_ticks(&ns, "periodic_fresh").await.len(), 1);
    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn the_scheduler_and_unique_keys_are_refused_on_rabbitmq_and_the_stub() {
    let rabbit = Broker::rabbitmq(actor_runtime::broker::RabbitmqConfig::new(
        "amqp://127.0.0.1:5672/%2f",
    ))
    .unwrap();
    let schedule = || Schedule::every("x", Duration::from_secs(1), ping("q")).unwrap();
    for broker in [rabbit.clone(), Broker::stub()] {
        let err = Scheduler::new(broker.clone(), vec![schedule()]).unwrap_err();
        assert!(
            matches!(err, actor_runtime::Error::Unsupported { .. }),
            "{}: {err}",
            broker.kind()
        );
    }
    let mut message = Message::new("q", "f", vec![]);
    message.options.insert("unique_key".into(), "k".into());
    let err = rabbit.enqueue(message, None).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "sending a message with a `unique_key` is not supported by the rabbitmq broker"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn help_lists_the_scheduler_commands() {
    let output = tokio::process::Command::new(WORKER)
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("scheduler"), "{help}");
    assert!(help.contains("schedules"), "{help}");
    assert!(help.contains("Run the periodic jobs' scheduler"), "{help}");
}
