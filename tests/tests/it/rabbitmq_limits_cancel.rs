//! Payload limits and cancellation on the RabbitMQ broker: an oversized send fails and
//! publishes nothing, an oversized delivery is dead-lettered unrun; cancels go through the
//! Redis beside RabbitMQ. Each test has queues and a Redis namespace of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_runtime::cancel::{CancelOutcome, Cancellation};
use actor_runtime::{actor, Error, Message, Worker};

use crate::support::rabbitmq::{broker, cleanup, config, count, queue};
use crate::support::{eventually, namespace};

fn ran() -> &'static Mutex<HashMap<String, u32>> {
    static RAN: std::sync::OnceLock<Mutex<HashMap<String, u32>>> = std::sync::OnceLock::new();
    RAN.get_or_init(Default::default)
}

fn runs(key: &str) -> u32 {
    ran().lock().unwrap().get(key).copied().unwrap_or(0)
}

#[actor(queue_name = "rabbit_limits")]
async fn rabbit_limits_note(key: String, _padding: String) {
    *ran().lock().unwrap().entry(key).or_default() += 1;
}

#[actor(queue_name = "rabbit_limits", time_limit = "2m")]
async fn rabbit_limits_long(key: String) {
    *ran().lock().unwrap().entry(key.clone()).or_default() += 1;
    tokio::time::sleep(Duration::from_secs(60)).await;
    *ran().lock().unwrap().entry(key).or_default() += 100;
}

fn on(q: &str, mut message: Message) -> Message {
    message.queue_name = q.to_owned();
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_at_send_and_dead_lettered_unrun_at_the_worker() {
    let q = queue("rabbit_limits");
    let limited = broker(config().max_message_size(4096));
    let key = uuid::Uuid::new_v4().to_string();
    let big = on(
        &q,
        rabbit_limits_note::message(key.clone(), "x".repeat(5000))
            .build()
            .unwrap(),
    );
    let err = limited.enqueue(big.clone(), None).await.unwrap_err();
    match &err {
        Error::MessageTooLarge { size, limit, .. } => {
            assert!(*size > 5000);
            assert_eq!(*limit, 4096);
        }
        other => panic!("expected MessageTooLarge, got {other}"),
    }
    limited.declare_queue(&q).await.unwrap();
    assert_eq!(count(&q).await, 0, "nothing published");
    // Another producer, with the default limit, publishes it; the limited worker must not
    // run it (it would, decoded: it is a valid message of a registered actor).
    let producer = broker(config());
    producer.enqueue(big, None).await.unwrap();
    let small_key = uuid::Uuid::new_v4().to_string();
    let small = on(
        &q,
        rabbit_limits_note::message(small_key.clone(), "s".into())
            .build()
            .unwrap(),
    );
    producer.enqueue(small, None).await.unwrap();
    let worker = Worker::new(limited.clone())
        .queues([q.as_str()])
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the small message to run", || {
        let small_key = small_key.clone();
        async move { runs(&small_key) == 1 }
    })
    .await;
    eventually(Duration::from_secs(10), "one dead letter", || async {
        count(&format!("{q}.XQ")).await == 1
    })
    .await;
    worker.stop().await.unwrap();
    assert_eq!(runs(&key), 0, "an oversized message ran");
    producer.close().await;
    cleanup(&limited, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_on_rabbitmq_go_through_the_redis_beside_it() {
    let q = queue("rabbit_limits");
    let ns = namespace();
    let broker = broker(config());
    let redis = crate::support::redis::config(&ns);
    let cancellation = Arc::new(
        Cancellation::redis(&redis)
            .unwrap()
            .namespace(format!("{ns}:aborts:")),
    );
    broker.middleware().add(cancellation.clone());
    let (skipped, control, long) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let waiting = broker
        .enqueue(
            on(
                &q,
                rabbit_limits_note::message(skipped.clone(), String::new())
                    .build()
                    .unwrap(),
            ),
            None,
        )
        .await
        .unwrap();
    let outcome = cancellation
        .cancel(&broker, &waiting.message_id)
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::Requested);
    let worker = Worker::new(broker.clone())
        .queues([q.as_str()])
        .threads(2)
        .start()
        .await
        .unwrap();
    let running = broker
        .enqueue(
            on(
                &q,
                rabbit_limits_long::message(long.clone()).build().unwrap(),
            ),
            None,
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the long actor running", || {
        let long = long.clone();
        async move { runs(&long) == 1 }
    })
    .await;
    cancellation
        .cancel(&broker, &running.message_id)
        .await
        .unwrap();
    broker
        .enqueue(
            on(
                &q,
                rabbit_limits_note::message(control.clone(), String::new())
                    .build()
                    .unwrap(),
            ),
            None,
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the control message", || {
        let control = control.clone();
        async move { runs(&control) == 1 }
    })
    .await;
    broker
        .join(&q, Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    worker.stop().await.unwrap();
    assert_eq!(runs(&skipped), 0, "a cancelled message ran");
    assert_eq!(runs(&long), 1, "the aborted actor finished");
    assert_eq!(count(&format!("{q}.XQ")).await, 0);
    cleanup(&broker, &q).await;
    crate::support::redis::cleanup(&crate::support::redis::broker(redis), 0).await;
}
