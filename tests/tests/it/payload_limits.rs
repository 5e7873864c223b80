//! Payload limits on Redis: an oversized send fails and stores nothing; an oversized message
//! another producer stored is dead-lettered with the reason, never decoded; large sends are
//! logged as warnings; processed sizes reach the Prometheus histogram.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_runtime::middleware::Prometheus;
use actor_runtime::{actor, Error, Message, Worker};
use redis::AsyncCommands;

use crate::support::redis::{broker, cleanup, config, raw};
use crate::support::{eventually, namespace};

const Q: &str = "payload_limits";
const LIMIT: usize = 4096;

#[actor(queue_name = "payload_limits")]
async fn limits_store(blob: String) -> usize {
    blob.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_send_fails_naming_size_and_limit_and_enqueues_nothing() {
    let ns = namespace();
    let broker = broker(config(&ns).max_message_size(LIMIT));
    let err = limits_store::message("x".repeat(LIMIT))
        .broker(broker.clone())
        .send()
        .await
        .unwrap_err();
    match &err {
        Error::MessageTooLarge {
            size,
            limit,
            queue,
            actor,
            ..
        } => {
            assert!(*size > LIMIT, "{err}");
            assert_eq!(*limit, LIMIT);
            assert_eq!((queue.as_str(), actor.as_str()), (Q, "limits_store"));
        }
        other => panic!("expected MessageTooLarge, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("4096 bytes") && text.contains("nothing was enqueued"),
        "{text}"
    );
    // Delayed, and in a batch beside a small message: nothing at all is stored.
    let delayed = limits_store::message("x".repeat(LIMIT))
        .broker(broker.clone())
        .delay(Duration::from_secs(60))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(delayed, Error::MessageTooLarge { .. }),
        "{delayed}"
    );
    let batch = vec![
        limits_store::message("small".into()).build().unwrap(),
        limits_store::message("x".repeat(LIMIT)).build().unwrap(),
    ];
    let err = broker.enqueue_batch(batch, None).await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    let stats = broker.stats(Q).await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (0, 0), "{stats:?}");
    let mut conn = raw().await;
    let stored: u64 = conn.hlen(format!("{ns}:{Q}.msgs")).await.unwrap();
    let delayed_stored: u64 = conn.hlen(format!("{ns}:{Q}.DQ.msgs")).await.unwrap();
    assert_eq!((stored, delayed_stored), (0, 0));
    // Just under the limit goes through.
    let fits = "x".repeat(LIMIT - 400);
    limits_store::message(fits)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(broker.stats(Q).await.unwrap().ready, 1);
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_from_another_producer_is_dead_lettered_unread() {
    let ns = namespace();
    let broker = broker(config(&ns).max_message_size(LIMIT));
    let metrics = Arc::new(Prometheus::new());
    broker.middleware().add(metrics.clone());
    let mut conn = raw().await;
    // Not JSON at all: decoding it would dead-letter it as "undecodable message".
    let garbage = "{".repeat(LIMIT + 1);
    let _: () = conn
        .hset(format!("{ns}:{Q}.msgs"), "garbage", &garbage)
        .await
        .unwrap();
    let _: () = conn.rpush(format!("{ns}:{Q}"), "garbage").await.unwrap();
    // Valid JSON whose argument would not bind (a number for a `String`): it would be
    // dead-lettered as "bad arguments" if it were decoded. Padded past the limit.
    let mut unbindable = Message::new(Q, "limits_store", vec![12.into()]);
    unbindable
        .options
        .insert("padding".into(), "p".repeat(LIMIT).into());
    unbindable
        .options
        .insert("redis_message_id".into(), "unbindable".into());
    let _: () = conn
        .hset(format!("{ns}:{Q}.msgs"), "unbindable", unbindable.encode())
        .await
        .unwrap();
    let _: () = conn.rpush(format!("{ns}:{Q}"), "unbindable").await.unwrap();
    // And one in the delay queue, already due.
    let mut delayed = Message::new(Q, "limits_store", vec!["p".repeat(LIMIT).into()]).delayed(1);
    delayed
        .options
        .insert("redis_message_id".into(), "delayed-big".into());
    let _: () = conn
        .hset(format!("{ns}:{Q}.DQ.msgs"), "delayed-big", delayed.encode())
        .await
        .unwrap();
    let _: () = conn
        .rpush(format!("{ns}:{Q}.DQ"), "delayed-big")
        .await
        .unwrap();
    let small = limits_store::message("fine".into())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let small_size = small.encode().len();

    let worker = Worker::new(broker.clone())
        .queues([Q])
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "three dead letters", || {
        let broker = broker.clone();
        async move { broker.stats(Q).await.unwrap().dead == 3 }
    })
    .await;
    broker
        .join(Q, Some(Duration::from_secs(10)), false)
        .await
        .unwrap();
    let report = worker.stop().await.unwrap();
    assert_eq!(report.succeeded, 1);
    let letters = broker.dead_letters(Q, 10).await.unwrap();
    assert_eq!(letters.len(), 3);
    for letter in &letters {
        let reason = letter.reason.clone().unwrap_or_default();
        assert!(
            reason.starts_with("message too large:")
                && reason.contains(&format!("limit of {LIMIT} bytes"))
                && reason.contains("without decoding"),
            "{}: {reason}",
            letter.id
        );
    }
    let garbage_letter = letters.iter().find(|l| l.id == "garbage").unwrap();
    assert!(garbage_letter
        .reason
        .as_deref()
        .unwrap()
        .contains(&format!("{} bytes", LIMIT + 1)));
    // The payloads are kept as they were, for an operator to inspect.
    let kept: Vec<u8> = conn
        .hget(format!("{ns}:{Q}.XQ.msgs"), "garbage")
        .await
        .unwrap();
    assert_eq!(kept, garbage.as_bytes());

    // Only the message that ran is in the size histogram, with its encoded size.
    let text = metrics.render();
    let labels = format!(r#"queue_name="{Q}",actor_name="limits_store""#);
    for line in [
        format!("actor_runtime_message_size_bytes_count{{{labels}}} 1"),
        format!("actor_runtime_message_size_bytes_sum{{{labels}}} {small_size}.0"),
        format!(r#"actor_runtime_message_size_bytes_bucket{{le="1024.0",{labels}}} 1"#),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    cleanup(&broker, 0).await;
}

/// Log lines written while the test ran, for the warning.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_send_over_the_warning_threshold_is_stored_and_logged() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let ns = namespace();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let broker = broker(config(&ns).max_message_size(LIMIT).warn_message_size(1024));
            let quiet = limits_store::message("q".repeat(100))
                .broker(broker.clone())
                .send()
                .await
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&lines.0.lock().unwrap()).contains("large message"),
                "a small send warned"
            );
            let big = limits_store::message("w".repeat(2000))
                .broker(broker.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(broker.stats(Q).await.unwrap().ready, 2);
            let logged = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
            let line = logged
                .lines()
                .find(|l| l.contains("large message enqueued"))
                .unwrap_or_else(|| panic!("no warning in {logged}"));
            assert!(line.contains("WARN"), "{line}");
            assert!(line.contains(&big.message_id), "{line}");
            assert!(!line.contains(&quiet.message_id), "{line}");
            assert!(line.contains("warn_size=1024"), "{line}");
            cleanup(&broker, 0).await;
        })
    });
}
