//! The RabbitMQ broker on the real server: round trips through a worker, delays, dead
//! letters, priorities, the consumer-timeout bound, and a cut connection. Each test has
//! queues of its own and deletes them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actor_runtime::{actor, Message, Worker};
use serde_json::{json, Value};

use crate::support::eventually;
use crate::support::rabbitmq::{broker, cleanup, close_connections_named, config, count, queue};

/// What the actors below ran, by test key: (value, when).
type Seen = Mutex<HashMap<String, Vec<(Value, Instant)>>>;

fn seen() -> &'static Seen {
    static SEEN: std::sync::OnceLock<Seen> = std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
}

fn seen_by(key: &str) -> Vec<Value> {
    let seen = seen().lock().unwrap();
    seen.get(key)
        .map(|runs| runs.iter().map(|(v, _)| v.clone()).collect())
        .unwrap_or_default()
}

#[actor(queue_name = "rabbit_default")]
async fn rabbit_record(key: String, n: i64) {
    seen()
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push((json!(n), Instant::now()));
}

#[actor(queue_name = "rabbit_default", max_retries = 0)]
async fn rabbit_fail(key: String) -> Result<(), String> {
    seen()
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push((json!("failed"), Instant::now()));
    Err("boom".into())
}

/// `message` routed to `q`.
fn on(q: &str, mut message: Message) -> Message {
    message.queue_name = q.to_owned();
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_messages_delays_and_dead_letters_failures() {
    let q = queue("rabbit_round");
    let broker = broker(config());
    let key = uuid::Uuid::new_v4().to_string();
    for n in 1..=3 {
        let message = on(&q, rabbit_record::message(key.clone(), n).build().unwrap());
        broker.enqueue(message, None).await.unwrap();
    }
    let delayed = on(&q, rabbit_record::message(key.clone(), 4).build().unwrap());
    let sent_at = Instant::now();
    broker
        .enqueue(delayed, Some(Duration::from_millis(400)))
        .await
        .unwrap();
    assert_eq!(
        count(&format!("{q}.DQ")).await,
        1,
        "the delayed one waits in .DQ"
    );
    let failing = on(&q, rabbit_fail::message(key.clone()).build().unwrap());
    let failing_id = failing.message_id.clone();
    broker.enqueue(failing, None).await.unwrap();
    // Undecodable: dead-lettered by the worker, the rest still run.
    let bad = on(&q, Message::new(&q, "rabbit_record", vec![json!("k")]));
    broker.enqueue(bad, None).await.unwrap();

    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .threads(2)
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "every message ran", || async {
        seen_by(&key).len() == 5
    })
    .await;
    let runs = seen().lock().unwrap()[&key].clone();
    let (_, delayed_ran) = runs.iter().find(|(v, _)| *v == json!(4)).unwrap();
    assert!(delayed_ran.duration_since(sent_at) >= Duration::from_millis(400));
    eventually(Duration::from_secs(10), "two dead letters", || async {
        count(&format!("{q}.XQ")).await == 2
    })
    .await;
    worker.stop().await.unwrap();

    let dead = broker.dead_letters(&q, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|d| d.id == failing_id));
    assert!(dead.iter().all(|d| d.reason.as_deref() == Some("rejected")));
    // Listing leaves them where they are.
    assert_eq!(count(&format!("{q}.XQ")).await, 2);
    let moved = broker
        .requeue_dead_letters(&q, Some(std::slice::from_ref(&failing_id)))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(count(&q).await, 1);
    assert_eq!(count(&format!("{q}.XQ")).await, 1);
    assert_eq!(broker.purge_dead_letters(&q).await.unwrap(), 1);
    cleanup(&broker, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_delivers_higher_broker_priorities_first() {
    let q = queue("rabbit_prio");
    let broker = broker(config().max_priority(10));
    let key = uuid::Uuid::new_v4().to_string();
    let mut batch = Vec::new();
    for (n, priority) in [(1, 0), (2, 9), (3, 5)] {
        let message = rabbit_record::message(key.clone(), n)
            .option("broker_priority", priority)
            .build()
            .unwrap();
        batch.push(on(&q, message));
    }
    broker.enqueue_batch(batch, None).await.unwrap();
    let consumer = broker.consume(&q, 10).await.unwrap();
    let mut order = Vec::new();
    while order.len() < 3 {
        for delivery in consumer.fetch(3, Duration::from_secs(5)).await.unwrap() {
            order.push(delivery.message.unwrap().args[1].clone());
            consumer.ack(&[delivery.tag]).await.unwrap();
        }
    }
    assert_eq!(order, [json!(2), json!(3), json!(1)]);
    consumer.close().await.unwrap();
    cleanup(&broker, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_held_past_max_hold_goes_back_and_runs_once() {
    let q = queue("rabbit_hold");
    let broker = broker(config().max_hold(Duration::from_millis(150)));
    let key = uuid::Uuid::new_v4().to_string();
    let message = on(&q, rabbit_record::message(key.clone(), 7).build().unwrap());
    let sent_at = Instant::now();
    broker
        .enqueue(message, Some(Duration::from_millis(1200)))
        .await
        .unwrap();
    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .start()
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the delayed message ran",
        || async { !seen_by(&key).is_empty() },
    )
    .await;
    assert!(sent_at.elapsed() >= Duration::from_millis(1200));
    // Given back to .DQ several times meanwhile, it still ran once, and nothing is left.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen_by(&key), [json!(7)]);
    assert_eq!(count(&format!("{q}.DQ")).await, 0);
    assert_eq!(count(&format!("{q}.XQ")).await, 0);
    worker.stop().await.unwrap();
    cleanup(&broker, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_producers_come_back_after_a_connection_cut() {
    let q = queue("rabbit_cut");
    let name = format!("cut-{}", uuid::Uuid::new_v4().simple());
    let broker = broker(config().connection_name(&name));
    let key = uuid::Uuid::new_v4().to_string();
    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .threads(2)
        .start()
        .await
        .unwrap();
    for n in 0..20 {
        let message = on(&q, rabbit_record::message(key.clone(), n).build().unwrap());
        broker.enqueue(message, None).await.unwrap();
    }
    eventually(Duration::from_secs(10), "the first batch ran", || async {
        seen_by(&key).len() >= 20
    })
    .await;
    assert!(
        close_connections_named(&name).await >= 1,
        "our connection was found and cut"
    );
    // Sends after the cut reconnect; the consumer resumes on the new connection.
    for n in 20..40 {
        let message = on(&q, rabbit_record::message(key.clone(), n).build().unwrap());
        broker.enqueue(message, None).await.unwrap();
    }
    let delayed = on(&q, rabbit_record::message(key.clone(), 40).build().unwrap());
    broker
        .enqueue(delayed, Some(Duration::from_millis(200)))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "every message ran after the cut",
        || async {
            let mut values: Vec<i64> = seen_by(&key).iter().filter_map(Value::as_i64).collect();
            values.sort();
            values.dedup();
            values.len() == 41
        },
    )
    .await;
    assert_eq!(count(&format!("{q}.XQ")).await, 0, "nothing dead-lettered");
    worker.stop().await.unwrap();
    cleanup(&broker, &q).await;
}

/// The test server through a proxy whose outages stand for a broker restart (the shared
/// server itself is never stopped: other tests run on it).
async fn through_proxy() -> (crate::support::proxy::Proxy, String) {
    let proxy = crate::support::proxy::Proxy::start("127.0.0.1:5672").await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    (proxy, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_outage_sends_retry_and_consumers_resume_losing_nothing() {
    let q = queue("rabbit_outage");
    let (proxy, url) = through_proxy().await;
    let broker = broker(config().url(url).reconnect_timeout(Duration::from_secs(20)));
    let key = uuid::Uuid::new_v4().to_string();
    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .threads(2)
        .start()
        .await
        .unwrap();
    for n in 0..10 {
        let message = on(&q, rabbit_record::message(key.clone(), n).build().unwrap());
        broker.enqueue(message, None).await.unwrap();
    }
    let delayed = on(&q, rabbit_record::message(key.clone(), 10).build().unwrap());
    broker
        .enqueue(delayed, Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the first ten ran", || async {
        seen_by(&key).len() >= 10
    })
    .await;
    let connections = proxy.accepted.load(std::sync::atomic::Ordering::Acquire);
    proxy.down();
    // A send during the outage waits for the broker to come back, within the bound.
    let sending = {
        let broker = broker.clone();
        let message = on(&q, rabbit_record::message(key.clone(), 11).build().unwrap());
        tokio::spawn(async move { broker.enqueue(message, None).await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!sending.is_finished(), "the send waits during the outage");
    proxy.up();
    sending
        .await
        .unwrap()
        .expect("the send went through after the outage");
    for n in 12..20 {
        let message = on(&q, rabbit_record::message(key.clone(), n).build().unwrap());
        broker.enqueue(message, None).await.unwrap();
    }
    eventually(
        Duration::from_secs(20),
        "all twenty ran, the delayed one too",
        || async {
            let mut values: Vec<i64> = seen_by(&key).iter().filter_map(Value::as_i64).collect();
            values.sort();
            values.dedup();
            values.len() == 20
        },
    )
    .await;
    assert!(
        proxy.accepted.load(std::sync::atomic::Ordering::Acquire) > connections,
        "the broker reconnected"
    );
    assert_eq!(count(&format!("{q}.XQ")).await, 0, "nothing dead-lettered");
    worker.stop().await.unwrap();
    cleanup(&broker, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_fails_clearly_once_the_reconnect_bound_passes() {
    let q = queue("rabbit_bound");
    let (proxy, url) = through_proxy().await;
    let broker = broker(
        config()
            .url(url)
            .reconnect_timeout(Duration::from_millis(600)),
    );
    broker.declare_queue(&q).await.unwrap();
    proxy.down();
    let started = Instant::now();
    let err = broker
        .enqueue(Message::new(&q, "rabbit_record", vec![]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, actor_runtime::Error::Connection { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up within the bound"
    );
    proxy.up();
    broker
        .enqueue(Message::new(&q, "rabbit_record", vec![]), None)
        .await
        .expect("works again once the broker is back");
    // The failed send's outcome is unknown to it: its publish may have reached RabbitMQ
    // before the connection was cut, its confirm not (at-least-once, as documented).
    let stored = count(&q).await;
    assert!((1..=2).contains(&stored), "{stored} messages");
    cleanup(&broker, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_longer_than_consumer_timeout_neither_closes_the_channel_nor_duplicates() {
    // A private node whose consumer_timeout is 2 s, checked every 200 ms.
    let node = crate::support::rabbit_node::Node::start(
        "{consumer_timeout, 2000}, {channel_tick_interval, 200}",
    )
    .await;
    const TIMED_OUT: &str = "timed out waiting for delivery acknowledgement";
    let run = |max_hold: Duration| {
        let url = node.url();
        async move {
            let q = queue("rabbit_ct");
            let broker = broker(config().url(url).max_hold(max_hold));
            let key = uuid::Uuid::new_v4().to_string();
            let message = on(&q, rabbit_record::message(key.clone(), 1).build().unwrap());
            broker
                .enqueue(message, Some(Duration::from_millis(3500)))
                .await
                .unwrap();
            let worker = Worker::new(broker.clone())
                .queues([q.as_str()])
                .start()
                .await
                .unwrap();
            eventually(
                Duration::from_secs(20),
                "the delayed message ran",
                || async { !seen_by(&key).is_empty() },
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            worker.stop().await.unwrap();
            broker.close().await;
            seen_by(&key).len()
        }
    };
    // As Python holds it (longer than the timeout): the server closes the channel.
    assert_eq!(run(Duration::from_secs(600)).await, 1);
    let before = node.log().matches(TIMED_OUT).count();
    assert!(
        before >= 1,
        "the control run hit the consumer timeout:\n{}",
        node.log()
    );
    // Given back to .DQ every 500 ms: no timeout, one run.
    assert_eq!(run(Duration::from_millis(500)).await, 1);
    assert_eq!(
        node.log().matches(TIMED_OUT).count(),
        before,
        "{}",
        node.log()
    );
}

/// `rabbitmqctl stop_app` / `start_app` on a node of the test's own (the shared server is
/// never stopped): durable queues and persistent messages survive, a send made during the
/// restart waits and goes through, the worker resumes, and every message, the delayed one
/// held across the restart included, runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_application_restart_loses_nothing_and_dead_letters_nothing() {
    let node = crate::support::rabbit_node::Node::start("").await;
    let ctl = |action: &str| {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["-n", &node.name, action])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("rabbitmqctl");
        assert!(status.success(), "rabbitmqctl {action}");
    };
    let q = queue("rabbit_restart");
    let broker = broker(
        config()
            .url(node.url())
            .reconnect_timeout(Duration::from_secs(60)),
    );
    let key = uuid::Uuid::new_v4().to_string();
    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .threads(2)
        .start()
        .await
        .unwrap();
    for n in 0..5 {
        let message = on(&q, rabbit_record::message(key.clone(), n).build().unwrap());
        broker.enqueue(message, None).await.unwrap();
    }
    // Held by the worker's delay-queue consumer when the application stops.
    let delayed = on(&q, rabbit_record::message(key.clone(), 5).build().unwrap());
    broker
        .enqueue(delayed, Some(Duration::from_secs(3)))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the first five ran", || async {
        seen_by(&key).len() >= 5
    })
    .await;
    ctl("stop_app");
    let sending = {
        let broker = broker.clone();
        let message = on(&q, rabbit_record::message(key.clone(), 6).build().unwrap());
        tokio::spawn(async move { broker.enqueue(message, None).await })
    };
    ctl("start_app");
    sending
        .await
        .unwrap()
        .expect("the send made during the restart went through");
    for n in 7..10 {
        let message = on(&q, rabbit_record::message(key.clone(), n).build().unwrap());
        broker.enqueue(message, None).await.unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "all ten ran, the delayed one too",
        || async {
            let mut values: Vec<i64> = seen_by(&key).iter().filter_map(Value::as_i64).collect();
            values.sort();
            values.dedup();
            values == (0..10).collect::<Vec<_>>()
        },
    )
    .await;
    let report = worker.stop().await.unwrap();
    assert_eq!(
        report.dead_lettered, 0,
        "nothing dead-lettered by the worker"
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.dead), (0, 0), "{stats:?}");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_settle_exactly_the_acked_messages_in_any_order() {
    let q = queue("rabbit_acks");
    let broker = broker(config());
    let batch: Vec<Message> = (0..4)
        .map(|n| {
            on(
                &q,
                rabbit_record::message("k".to_owned(), n).build().unwrap(),
            )
        })
        .collect();
    broker.enqueue_batch(batch, None).await.unwrap();
    let consumer = broker.consume(&q, 10).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(consumer.fetch(4, Duration::from_secs(5)).await.unwrap());
    }
    // The last one alone (two lower ones unsettled), then the first: neither may settle
    // the two in between.
    consumer.ack(&[got[3].tag.clone()]).await.unwrap();
    consumer.ack(&[got[0].tag.clone()]).await.unwrap();
    consumer.close().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the two unacked to come back",
        || async { count(&q).await == 2 },
    )
    .await;
    let consumer = broker.consume(&q, 10).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 2 {
        again.extend(consumer.fetch(2, Duration::from_secs(5)).await.unwrap());
    }
    let values: Vec<Value> = again
        .iter()
        .map(|d| d.message.as_ref().unwrap().args[1].clone())
        .collect();
    assert_eq!(values, [json!(1), json!(2)]);
    // Both together, nothing lower unsettled: one `multiple` ack.
    let tags: Vec<_> = again.iter().map(|d| d.tag.clone()).collect();
    consumer.ack(&tags).await.unwrap();
    consumer.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&q).await, 0);
    cleanup(&broker, &q).await;
}
