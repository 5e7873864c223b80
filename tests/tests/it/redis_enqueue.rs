//! Enqueueing on Redis writes Dramatiq's key layout: the queue list and payload hash, a new
//! redis id per enqueue, the delay queue, batches in order. Each test has its own namespace.

use std::time::Duration;

use actor_runtime::{Error, Message};
use redis::AsyncCommands;

use crate::support::redis::{broker, cleanup, config, msg, payload, raw};
use crate::support::{eventually, namespace, now_ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_writes_dramatiqs_layout() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;

    let sent = broker.enqueue(msg("jobs", 1), None).await.unwrap();
    let rid = sent.options["redis_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        rid, sent.message_id,
        "redis_message_id must differ from message_id"
    );
    let list: Vec<String> = conn.lrange(format!("{ns}:jobs"), 0, -1).await.unwrap();
    assert_eq!(list, [rid.as_str()]);
    let stored = payload(&mut conn, &format!("{ns}:jobs.msgs"), &rid).await;
    let mut keys: Vec<_> = stored.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "actor_name",
            "args",
            "kwargs",
            "message_id",
            "message_timestamp",
            "options",
            "queue_name"
        ]
    );
    assert_eq!(stored["queue_name"], "jobs");
    assert_eq!(stored["options"]["redis_message_id"], rid.as_str());
    assert_eq!(stored["message_id"], sent.message_id.as_str());

    // Every enqueue mints a new redis id, even of the same message.
    let again = broker.enqueue(sent.clone(), None).await.unwrap();
    assert_ne!(
        again.options["redis_message_id"],
        sent.options["redis_message_id"]
    );
    assert_eq!(again.message_id, sent.message_id);

    let delayed = broker
        .enqueue(msg("jobs", 2), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let drid = delayed.options["redis_message_id"].as_str().unwrap();
    assert_eq!(delayed.queue_name, "jobs.DQ");
    let dq: Vec<String> = conn.lrange(format!("{ns}:jobs.DQ"), 0, -1).await.unwrap();
    assert_eq!(dq, [drid.to_owned()]);
    let stored = payload(&mut conn, &format!("{ns}:jobs.DQ.msgs"), drid).await;
    assert_eq!(stored["queue_name"], "jobs.DQ");
    let eta = stored["options"]["eta"].as_u64().unwrap();
    assert!(
        eta >= now_ms() + 50_000 && eta <= now_ms() + 60_000,
        "eta {eta}"
    );

    let stats = broker.stats("jobs").await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight, stats.dead),
        (2, 1, 0, 0)
    );
    assert!(broker.queues().contains(&"jobs".to_owned()));
    assert!(matches!(
        broker.enqueue(msg("bad name", 1), None).await,
        Err(Error::InvalidQueueName(_))
    ));

    // The heartbeat of this process is in Dramatiq's zset.
    let wid = broker.worker_id().unwrap().to_owned();
    eventually(Duration::from_secs(5), "heartbeat", || {
        let mut conn = conn.clone();
        let (ns, wid) = (ns.clone(), wid.clone());
        async move {
            let score: Option<f64> = conn
                .zscore(format!("{ns}:__heartbeats__"), wid)
                .await
                .unwrap();
            score.is_some()
        }
    })
    .await;
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_enqueue_keeps_order_across_queues_and_chunks() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let mut conn = raw().await;
    // 2500 to one queue (three script calls), then two to another, then a delayed batch.
    let mut batch: Vec<Message> = (0..2500).map(|n| msg("bulk", n)).collect();
    batch.extend([msg("other", 1), msg("other", 2)]);
    let sent = broker.enqueue_batch(batch, None).await.unwrap();
    assert_eq!(sent.len(), 2502);
    let rids: Vec<String> = sent[..2500]
        .iter()
        .map(|m| m.options["redis_message_id"].as_str().unwrap().to_owned())
        .collect();
    let list: Vec<String> = conn.lrange(format!("{ns}:bulk"), 0, -1).await.unwrap();
    assert_eq!(list, rids, "stored in order");
    let hlen: u64 = conn.hlen(format!("{ns}:bulk.msgs")).await.unwrap();
    assert_eq!(hlen, 2500);
    let other: u64 = conn.llen(format!("{ns}:other")).await.unwrap();
    assert_eq!(other, 2);
    let delayed = broker
        .enqueue_batch(
            vec![msg("bulk", 1), msg("bulk", 2)],
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(delayed
        .iter()
        .all(|m| m.queue_name == "bulk.DQ" && m.eta().is_some()));
    let stats = broker.stats("bulk").await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (2500, 2));
    cleanup(&broker, 0).await;
}
