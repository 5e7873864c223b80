//! A running Worker on Redis: bad payloads are dead-lettered while the rest run, delayed
//! messages run when due. Each test has its own namespace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actor_runtime::{actor, Message, Worker};
use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::support::redis::{broker, cleanup, config, raw};
use crate::support::{eventually, namespace};

/// What the actors below saw, by test key.
fn seen() -> &'static Mutex<HashMap<String, Vec<Value>>> {
    static SEEN: std::sync::OnceLock<Mutex<HashMap<String, Vec<Value>>>> =
        std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
}

fn seen_by(key: &str) -> Vec<Value> {
    seen().lock().unwrap().get(key).cloned().unwrap_or_default()
}

#[actor(queue_name = "redis_worker")]
async fn redis_record(key: String, n: i64) {
    seen()
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push(json!(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_letters_bad_payloads_and_runs_the_rest() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let key = uuid::Uuid::new_v4().to_string();
    let mut conn = raw().await;
    let q = "redis_worker";
    let raw_push = |id: &'static str, body: String| {
        let mut conn = conn.clone();
        let ns = ns.clone();
        async move {
            let _: () = conn.hset(format!("{ns}:{q}.msgs"), id, body).await.unwrap();
            let _: () = conn.rpush(format!("{ns}:{q}"), id).await.unwrap();
        }
    };
    redis_record::message(key.clone(), 1)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    raw_push("not-json", "{\"queue_name\": ".into()).await;
    let mut unknown = Message::new(q, "redis_nobody_has_this", vec![]);
    unknown
        .options
        .insert("redis_message_id".into(), "unknown-actor".into());
    raw_push(
        "unknown-actor",
        String::from_utf8(unknown.encode()).unwrap(),
    )
    .await;
    let mut wrong = Message::new(q, "redis_record", vec![json!("k"), json!("not a number")]);
    wrong
        .options
        .insert("redis_message_id".into(), "wrong-args".into());
    raw_push("wrong-args", String::from_utf8(wrong.encode()).unwrap()).await;
    redis_record::message(key.clone(), 2)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();

    let worker = Worker::new(broker.clone())
        .queues([q])
        .threads(2)
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the good messages", || {
        let key = key.clone();
        async move { seen_by(&key).len() == 2 }
    })
    .await;
    eventually(Duration::from_secs(10), "three dead letters", || {
        let broker = broker.clone();
        async move { broker.stats(q).await.unwrap().dead == 3 }
    })
    .await;
    broker
        .join(q, Some(Duration::from_secs(10)), false)
        .await
        .unwrap();
    let report = worker.stop().await.unwrap();
    assert_eq!(report.succeeded, 2);
    let mut seen_args = seen_by(&key);
    seen_args.sort_by_key(|v| v.as_i64());
    assert_eq!(seen_args, [json!(1), json!(2)]);
    let letters = broker.dead_letters(q, 10).await.unwrap();
    let mut reasons: Vec<String> = letters.iter().map(|l| l.reason.clone().unwrap()).collect();
    reasons.sort();
    assert!(reasons[0].starts_with("bad arguments"), "{reasons:?}");
    assert!(reasons[1].starts_with("undecodable message"), "{reasons:?}");
    assert!(reasons[2].contains("unknown actor"), "{reasons:?}");
    // Where a Python operator looks: ZSET `.XQ` + `.XQ.msgs`.
    let xq: Vec<String> = conn.zrange(format!("{ns}:{q}.XQ"), 0, -1).await.unwrap();
    let xq_msgs: u64 = conn.hlen(format!("{ns}:{q}.XQ.msgs")).await.unwrap();
    assert_eq!((xq.len(), xq_msgs), (3, 3));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_delayed_messages_when_due() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let key = uuid::Uuid::new_v4().to_string();
    let worker = Worker::new(broker.clone())
        .queues(["redis_worker"])
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    redis_record::message(key.clone(), 5)
        .delay(Duration::from_millis(300))
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    redis_record::message(key.clone(), 6)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    broker
        .join("redis_worker", Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(seen_by(&key), [json!(6), json!(5)]);
    worker.stop().await.unwrap();
    cleanup(&broker, 0).await;
}
