//! Concurrent sends on the Redis broker share script calls (issue #11), and still answer
//! each sender for its own message: stored once, under the id it was given, or an error.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actor_runtime::broker::RedisConfig;
use actor_runtime::{Broker, Error, Message};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use crate::faults::cleanup;
use crate::support::redis::{connection, PrivateRedis};
use crate::support::{namespace, redis_url};

const QUEUE: &str = "coalesce";

fn broker(url: &str, ns: &str) -> Broker {
    let config = RedisConfig::new(url)
        .namespace(ns)
        .retry_timeout(Duration::from_millis(300));
    Broker::redis(config).unwrap()
}

/// Message `i` for `queue`: its index is its only argument.
fn message(queue: &str, i: usize) -> Message {
    Message::new(queue, "coalesced", vec![i.into()])
}

fn redis_id(message: &Message) -> String {
    message.options["redis_message_id"]
        .as_str()
        .expect("a redis_message_id")
        .to_owned()
}

/// `send`s of messages `0..n` to `queue` (with `delay`), all at once, each in a task.
async fn send_all(
    broker: &Broker,
    queue: &str,
    n: usize,
    delay: Option<Duration>,
) -> Vec<tokio::task::JoinHandle<actor_runtime::Result<Message>>> {
    (0..n)
        .map(|i| {
            let (broker, message) = (broker.clone(), message(queue, i));
            tokio::spawn(async move { broker.enqueue(message, delay).await })
        })
        .collect()
}

/// A list's ids and its hash's payloads, by id, checking every id is listed once and has
/// its payload and no payload is unlisted.
async fn stored(
    conn: &mut MultiplexedConnection,
    ns: &str,
    list: &str,
) -> HashMap<String, serde_json::Value> {
    let ids: Vec<String> = conn.lrange(format!("{ns}:{list}"), 0, -1).await.unwrap();
    let payloads: HashMap<String, String> =
        conn.hgetall(format!("{ns}:{list}.msgs")).await.unwrap();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an id listed twice in {list}");
    assert_eq!(
        payloads.len(),
        ids.len(),
        "{list}: every payload listed, once"
    );
    ids.into_iter()
        .map(|id| {
            let payload = payloads.get(&id).expect("a listed id has its payload");
            (id, serde_json::from_str(payload).unwrap())
        })
        .collect()
}

/// The `evalsha` calls the server ran.
async fn script_calls(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_calls_and_each_is_stored_once_under_its_id() {
    // A server of its own, so its call count is ours alone.
    let redis = PrivateRedis::fresh(&[]).await;
    let (url, ns) = (redis.url(), namespace());
    let broker = broker(&url, &ns);
    broker.enqueue(message(QUEUE, 999), None).await.unwrap();
    let mut conn = connection(&url).await;
    let calls_before = script_calls(&mut conn).await;

    let mut sent = HashMap::new();
    for task in send_all(&broker, QUEUE, 256, None).await {
        let message = task.await.unwrap().unwrap();
        assert_eq!(message.queue_name, QUEUE);
        sent.insert(redis_id(&message), message.args.clone());
    }
    let calls = script_calls(&mut conn).await - calls_before;
    assert!(calls < 64, "256 sends made {calls} script calls");

    let mut in_redis = stored(&mut conn, &ns, QUEUE).await;
    in_redis.retain(|_, payload| payload["args"][0] != 999);
    assert_eq!(in_redis.len(), 256);
    for (id, payload) in in_redis {
        let args = sent
            .remove(&id)
            .expect("a stored id was returned to its sender");
        assert_eq!(payload["args"], serde_json::Value::from(args));
        assert_eq!(payload["options"]["redis_message_id"], id.as_str());
    }
    assert!(sent.is_empty());
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_several_queues_and_delay_queues_land_in_each() {
    let (url, ns) = (redis_url(), namespace());
    let broker = broker(&url, &ns);
    let queues = ["coalesce_a", "coalesce_b", "coalesce_c"];
    let mut tasks = Vec::new();
    for queue in queues {
        for delay in [None, Some(Duration::from_secs(3600))] {
            tasks.push((queue, delay, send_all(&broker, queue, 40, delay).await));
        }
    }
    let mut conn = connection(&url).await;
    for (queue, delay, sends) in tasks {
        let list = match delay {
            None => queue.to_owned(),
            Some(_) => format!("{queue}.DQ"),
        };
        let mut ids = HashSet::new();
        for task in sends {
            let message = task.await.unwrap().unwrap();
            assert_eq!(message.queue_name, list);
            assert_eq!(message.options.contains_key("eta"), delay.is_some());
            ids.insert(redis_id(&message));
        }
        let in_redis = stored(&mut conn, &ns, &list).await;
        assert_eq!(
            in_redis.keys().cloned().collect::<HashSet<_>>(),
            ids,
            "{list}"
        );
    }
    for queue in queues {
        let stats = broker.stats(queue).await.unwrap();
        assert_eq!((stats.ready, stats.delayed), (40, 40), "{queue}: {stats:?}");
    }
    // Each queue was declared by its senders, as a lone send declares it.
    let declared = broker.queues();
    assert!(
        queues.iter().all(|q| declared.contains(&q.to_string())),
        "{declared:?}"
    );
    broker.close().await;
    cleanup(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_server_every_concurrent_sender_gets_out_of_memory_and_nothing_is_half_stored() {
    let redis = PrivateRedis::fresh(&["--maxmemory-policy", "noeviction"]).await;
    let (url, ns) = (redis.url(), namespace());
    let broker = broker(&url, &ns);
    broker.enqueue(message(QUEUE, 999), None).await.unwrap();
    // Well over the limit, so no shrinking client buffer makes room for one message.
    let mut conn = connection(&url).await;
    let _: () = conn.set("fill", "x".repeat(4 << 20)).await.unwrap();
    let limit = |bytes: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .to_owned()
    };
    let _: () = limit("2mb").query_async(&mut conn).await.unwrap();

    for task in send_all(&broker, QUEUE, 64, None).await {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    }
    let in_redis = stored(&mut conn, &ns, QUEUE).await;
    assert_eq!(
        in_redis.len(),
        1,
        "only the message sent before the server was full"
    );

    // Room again: sends go through (no flusher was left stuck).
    let _: () = limit("0").query_async(&mut conn).await.unwrap();
    for task in send_all(&broker, QUEUE, 64, None).await {
        task.await.unwrap().unwrap();
    }
    assert_eq!(stored(&mut conn, &ns, QUEUE).await.len(), 65);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_gone_every_concurrent_sender_gets_a_connection_error() {
    let mut redis = PrivateRedis::fresh(&[]).await;
    let (url, ns) = (redis.url(), namespace());
    let broker = broker(&url, &ns);
    broker.enqueue(message(QUEUE, 999), None).await.unwrap();
    redis.kill().await;
    for task in send_all(&broker, QUEUE, 64, None).await {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Connection { .. }), "{err}");
    }
    let _redis = redis.start_again().await;
    for task in send_all(&broker, QUEUE, 64, None).await {
        task.await.unwrap().unwrap();
    }
    let mut conn = connection(&url).await;
    let in_redis = stored(&mut conn, &ns, QUEUE).await;
    // The append-only file kept the first message; none of the failed sends is there.
    assert_eq!(in_redis.len(), 65);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_senders_do_not_disturb_the_others() {
    let (url, ns) = (redis_url(), namespace());
    let broker = broker(&url, &ns);
    broker.declare_queue(QUEUE).await.unwrap();
    let mut conn = connection(&url).await;
    let (mut answered, mut cancelled) = (HashMap::new(), HashSet::new());
    for round in 0..4 {
        // Senders give up after 0 to 50 ms: some before their call, some with it in flight
        // (a flusher among them), some never.
        let tasks: Vec<_> = (0..256)
            .map(|i| {
                let index = round * 256 + i;
                let (broker, message) = (broker.clone(), message(QUEUE, index));
                let patience = Duration::from_micros((i as u64 * 197) % 50_000);
                tokio::spawn(async move {
                    let sent = tokio::time::timeout(patience, broker.enqueue(message, None)).await;
                    (index, sent)
                })
            })
            .collect();
        for task in tasks {
            match task.await.unwrap() {
                (index, Ok(sent)) => {
                    answered.insert(redis_id(&sent.unwrap()), index);
                }
                (index, Err(_elapsed)) => {
                    cancelled.insert(index);
                }
            }
        }
    }
    assert!(
        !answered.is_empty() && !cancelled.is_empty(),
        "{} answered, {} cancelled",
        answered.len(),
        cancelled.len()
    );
    // Later senders are not stuck behind a cancelled flusher.
    tokio::time::timeout(
        Duration::from_secs(5),
        broker.enqueue(message(QUEUE, 9999), None),
    )
    .await
    .expect("a send after the cancellations completes")
    .unwrap();

    let in_redis = stored(&mut conn, &ns, QUEUE).await;
    for (id, index) in &answered {
        let payload = in_redis.get(id).expect("every answered send is stored");
        assert_eq!(payload["args"][0], *index);
    }
    for (id, payload) in &in_redis {
        let index = payload["args"][0].as_u64().unwrap() as usize;
        assert!(
            answered.get(id) == Some(&index) || cancelled.contains(&index) || index == 9999,
            "{id} holds message {index}, which no sender sent"
        );
    }
    broker.close().await;
    cleanup(&url, &ns).await;
}
