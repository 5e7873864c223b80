//! Under pressure: a burst of large messages (the worker's byte budget), Redis out of memory
//! (maxmemory with noeviction), a server gone while a message is being dead-lettered, and
//! dead-letter reasons whose dead letters were deleted by someone else (Python's flush or
//! TTL).

use std::sync::OnceLock;
use std::time::Duration;

use actor_runtime::broker::RedisConfig;
use actor_runtime::{actor, Broker, Error, Worker};
use redis::AsyncCommands;
use tokio::sync::Semaphore;

use crate::support::redis::{broker, cleanup, config, raw, PrivateRedis};
use crate::support::{namespace, resident_mb};

#[actor(queue_name = "pressure")]
async fn pressure_ok(blob: String) {
    let _ = blob;
}

#[actor(queue_name = "pressure", max_retries = 0)]
async fn pressure_fail(blob: String) -> Result<(), String> {
    Err(format!("refused a blob of {} bytes", blob.len()))
}

/// Released by the test once the server is down.
fn gate() -> &'static Semaphore {
    static GATE: OnceLock<Semaphore> = OnceLock::new();
    GATE.get_or_init(|| Semaphore::new(0))
}

/// Signalled when `fail_when_released` starts.
fn started() -> &'static Semaphore {
    static STARTED: OnceLock<Semaphore> = OnceLock::new();
    STARTED.get_or_init(|| Semaphore::new(0))
}

#[actor(queue_name = "pressure_gone", max_retries = 0)]
async fn fail_when_released() -> Result<(), String> {
    started().add_permits(1);
    gate().acquire().await.map_err(|e| e.to_string())?.forget();
    Err("failed while the server was down".into())
}

fn private_broker(url: &str, ns: &str) -> Broker {
    broker(
        RedisConfig::new(url)
            .namespace(ns)
            .retry_timeout(Duration::from_millis(200)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_drain_and_dead_letter_on_a_redis_that_is_out_of_memory() {
    let redis =
        PrivateRedis::fresh(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).await;
    let ns = namespace();
    let producer = private_broker(&redis.url(), &ns);
    let blob = "x".repeat(20_000);
    for _ in 0..3 {
        pressure_fail::message(blob.clone())
            .broker(producer.clone())
            .send()
            .await
            .unwrap();
    }
    // Fill the server until it refuses, with a clear error; then the CLI says so with its
    // own exit code. Redis counts client buffers in its memory, so the CLI's small message may
    // find room again once the producer's buffers shrink: fill again and retry.
    let mut stored = 3;
    let mut cli_codes = Vec::new();
    let stderr = loop {
        let refusal = loop {
            match pressure_ok::message(blob.clone())
                .broker(producer.clone())
                .send()
                .await
            {
                Ok(_) => stored += 1,
                Err(err) => break err,
            }
            assert!(
                stored < 10_000,
                "a 4 MB server took {stored} messages of 20 KB"
            );
        };
        assert!(matches!(refusal, Error::OutOfMemory { .. }), "{refusal}");
        assert!(refusal.to_string().contains("out of memory"), "{refusal}");

        let output = tokio::process::Command::new(crate::support::cli::WORKER)
            .args(["enqueue", "cli_record", "--args", r#"["k"]"#])
            .env("REDIS_URL", redis.url())
            .env("DRAMATIQ_NAMESPACE", &ns)
            .env_remove("APP_ENV")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        cli_codes.push(output.status.code());
        match output.status.code() {
            Some(5) => break stderr,
            Some(0) if cli_codes.len() < 10 => continue,
            code => panic!("enqueue on a full server exited {code:?}: {stderr}"),
        }
    };
    assert!(stderr.contains("out of memory"), "{stderr}");

    // A worker drains the full server: fetching, acking and dead-lettering all write.
    let worker = Worker::new(producer.clone() as Broker)
        .threads(2)
        .queues(["pressure"])
        .start()
        .await
        .unwrap();
    producer
        .join("pressure", Some(Duration::from_secs(60)), false)
        .await
        .unwrap();
    worker.stop().await.unwrap();
    let stats = producer.stats("pressure").await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead),
        (0, 0, 3),
        "{stats:?}"
    );
    // Memory came back.
    pressure_ok::message(blob)
        .broker(producer.clone())
        .send()
        .await
        .unwrap();
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_retried_until_the_server_takes_it() {
    let mut redis = PrivateRedis::fresh(&[]).await;
    let ns = namespace();
    let broker = private_broker(&redis.url(), &ns);
    let worker = Worker::new(broker.clone() as Broker)
        .threads(1)
        .queues(["pressure_gone"])
        .start()
        .await
        .unwrap();
    fail_when_released::message()
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    started().acquire().await.unwrap().forget();
    redis.kill().await;
    gate().add_permits(1);
    // Down longer than the five attempts the worker used to make before giving up and
    // leaving the message in its ack set.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _redis = redis.start_again().await;
    broker
        .join("pressure_gone", Some(Duration::from_secs(30)), false)
        .await
        .unwrap();
    let stats = broker.stats("pressure_gone").await.unwrap();
    assert_eq!((stats.in_flight, stats.dead), (0, 1), "{stats:?}");
    worker.stop().await.unwrap();
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_of_dead_letters_deleted_elsewhere_are_swept() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let worker = Worker::new(broker.clone() as Broker)
        .threads(1)
        .queues(["pressure"])
        .start()
        .await
        .unwrap();
    for blob in ["kept", "flushed"] {
        let mut message = pressure_fail::message(blob.to_owned()).build().unwrap();
        if blob == "flushed" {
            message.queue_name = "pressure_flushed".into();
        }
        broker.enqueue(message, None).await.unwrap();
    }
    // The second queue's dead letter needs a worker of its own.
    let flushed_worker = Worker::new(broker.clone() as Broker)
        .threads(1)
        .queues(["pressure_flushed"])
        .start()
        .await
        .unwrap();
    for queue in ["pressure", "pressure_flushed"] {
        broker
            .join(queue, Some(Duration::from_secs(10)), false)
            .await
            .unwrap();
    }
    worker.stop().await.unwrap();
    flushed_worker.stop().await.unwrap();
    let mut conn = raw().await;
    // What Python's flush (or its dead-letter TTL) does: the zset and payloads go, the
    // reasons hash it does not know stays.
    let _: () = conn
        .del(&[
            format!("{ns}:pressure_flushed.XQ"),
            format!("{ns}:pressure_flushed.XQ.msgs"),
        ])
        .await
        .unwrap();
    let before: usize = conn
        .hlen(format!("{ns}:pressure_flushed.XQ.reasons"))
        .await
        .unwrap();
    assert_eq!(before, 1);

    broker
        .backend_as::<actor_runtime::broker::RedisBackend>()
        .unwrap()
        .run_maintenance()
        .await
        .unwrap();
    let orphans: usize = conn
        .hlen(format!("{ns}:pressure_flushed.XQ.reasons"))
        .await
        .unwrap();
    let kept: usize = conn
        .hlen(format!("{ns}:pressure.XQ.reasons"))
        .await
        .unwrap();
    assert_eq!((orphans, kept), (0, 1));
    cleanup(&broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_messages_waits_in_redis_not_in_the_worker() {
    let f = crate::support::cli::Fixture::new();
    let blob = "x".repeat(2 << 20);
    let total = 150;
    for chunk in 0..total / 10 {
        let batch = (0..10)
            .map(|i| {
                actor_runtime::Message::new(
                    "cli",
                    "cli_blob",
                    vec![
                        serde_json::json!(format!("b{}", chunk * 10 + i)),
                        serde_json::json!(blob),
                    ],
                )
            })
            .collect();
        f.broker.enqueue_batch(batch, None).await.unwrap();
    }
    drop(blob);
    let mut env = f.env();
    env.push(("WORKER_PREFETCH_MB", "32"));
    let mut worker = crate::support::cli::Proc::spawn(
        crate::support::cli::WORKER,
        &["-p", "1", "-t", "1"],
        &env,
    );
    worker.wait_message("worker started").await;
    let pid = worker.pid();
    let mut peak = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while f.recorded().len() < total {
        peak = peak.max(resident_mb(pid));
        assert!(
            std::time::Instant::now() < deadline,
            "ran {}",
            f.recorded().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 300 MB of messages, a 32 MB budget: about 70 MB at the peak, where the worker without
    // a byte budget took what it could fetch (176 MB here, 427 MB in a bigger burst).
    assert!(peak < 110, "the worker peaked at {peak} MB");
    crate::support::cli::kill("TERM", pid);
    worker.exit().await;
    f.cleanup().await;
}
