//! Job records when things go wrong: a Python producer, late and repeated writes, migrations
//! applied twice, pruning, PostgreSQL unreachable mid-run.

use std::time::Duration;

use actor_runtime::middleware::Middleware;
use actor_runtime::records::{JobState, Records, Retention, MIGRATIONS};
use actor_runtime::{actor, Worker};

use crate::records::wait_state;
use crate::support::postgres::{
    builder, cleanup, database_url, drop_schema, raw, schema_name, Proxy,
};
use crate::support::python::{python, python_dir};
use crate::support::redis::{broker, cleanup as cleanup_redis, config};
use crate::support::{eventually, namespace, redis_url};

#[actor(queue_name = "rec_faults")]
async fn rec_fault_noop(n: i64) -> i64 {
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_a_python_producer_are_recorded() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let records = builder(&database_url(), &schema_name())
        .build()
        .await
        .unwrap();
    broker.add_middleware(records.recorder());
    let worker = Worker::new(broker.clone())
        .queues(["interop_rs"])
        .start()
        .await
        .unwrap();
    let out = tokio::process::Command::new(python())
        .arg("produce.py")
        .current_dir(python_dir())
        .env("REDIS_URL", redis_url())
        .env("DRAMATIQ_NAMESPACE", &ns)
        .env("PYTHONPATH", python_dir())
        .env("INTEROP_KEY", uuid::Uuid::new_v4().to_string())
        .output()
        .await
        .expect("run the Python producer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for what in ["positional", "kwargs", "greet", "delayed", "retry"] {
        let id = sent[what].as_str().unwrap();
        let job = wait_state(&records, id, JobState::Succeeded).await;
        assert_eq!(job.queue_name, "interop_rs");
        assert!(
            job.enqueued_at.is_some(),
            "from the Python message's timestamp"
        );
        let attempt = if what == "retry" { 2 } else { 1 };
        assert_eq!(job.attempt, attempt, "{what}: Python's `retries` counts");
    }
    worker.stop().await.unwrap();
    cleanup_redis(&broker, 0).await;
    cleanup(&records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_repeated_writes_never_move_a_record_back() {
    let broker = broker(config(&namespace()));
    let schema = schema_name();
    let worker_records = builder(&database_url(), &schema).build().await.unwrap();
    broker.add_middleware(worker_records.recorder());
    let worker = Worker::new(broker.clone())
        .queues(["rec_faults"])
        .start()
        .await
        .unwrap();
    let sent = rec_fault_noop::message(1)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    let done = wait_state(&worker_records, &sent.message_id, JobState::Succeeded).await;
    worker.stop().await.unwrap();

    // A second process (another producer, a slow flush) writes the message's enqueue late,
    // twice, after the success is stored.
    let late = builder(&database_url(), &schema).build().await.unwrap();
    let recorder = late.recorder();
    for _ in 0..2 {
        recorder.after_enqueue(&broker, sent.message(), None).await;
        late.flush().await.unwrap();
        // And the worker's own success again (a duplicate flush).
        worker_records.flush().await.unwrap();
    }
    let job = late.job(&sent.message_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.finished_at, done.finished_at);
    assert_eq!(
        late.stats().written,
        2,
        "both late writes reached PostgreSQL"
    );
    // The late enqueue was that process's first sight of the message: its flusher tried the
    // plain INSERT, met the stored record and wrote the row again as the upsert (which kept
    // the newer state); the next batch went straight to the upsert.
    assert_eq!(late.stats().insert_conflicts, 1);
    assert_eq!(worker_records.stats().insert_conflicts, 0);
    let count = raw()
        .await
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".job_executions"),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(count, 1, "one row per message");
    late.close().await;
    cleanup_redis(&broker, 0).await;
    cleanup(&worker_records).await;
}

#[tokio::test]
async fn migrations_apply_twice() {
    let schema = schema_name();
    let records = Records::builder(database_url())
        .schema(&schema)
        .build()
        .await
        .unwrap();
    let first = records.migrate().await.unwrap();
    assert_eq!(first, MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
    assert!(records.migrate().await.unwrap().is_empty());
    // The files themselves are idempotent too: a foreign tool may apply them again.
    let client = raw().await;
    for (_, sql) in MIGRATIONS {
        client
            .batch_execute(&format!(
                "SET search_path TO \"{schema}\"; {sql}; RESET search_path"
            ))
            .await
            .unwrap();
    }
    let again = builder(&database_url(), &schema).build().await.unwrap();
    assert!(again.jobs(&Default::default()).await.unwrap().is_empty());
    again.close().await;
    records.close().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn pruning_deletes_old_finished_records_in_batches() {
    let schema = schema_name();
    let records = builder(&database_url(), &schema).build().await.unwrap();
    let client = raw().await;
    // 5 old successes, 3 old dead, 2 recent dead, 2 old running: aged by hand.
    client
        .batch_execute(&format!(
            "SET search_path TO \"{schema}\";
             INSERT INTO job_executions (message_id, queue_name, actor_name, state, state_order,
               created_at, finished_at)
             SELECT 'ok' || i, 'q', 'a', 'succeeded', 4, now() - interval '3 days',
               now() - interval '3 days' FROM generate_series(1, 5) i;
             INSERT INTO job_executions (message_id, queue_name, actor_name, state, state_order,
               created_at, finished_at)
             SELECT 'dead' || i, 'q', 'a', 'dead', 4, now() - interval '3 days',
               now() - interval '3 days' FROM generate_series(1, 3) i;
             INSERT INTO job_executions (message_id, queue_name, actor_name, state, state_order,
               created_at, finished_at)
             SELECT 'recent' || i, 'q', 'a', 'dead', 4, now() - interval '1 hour',
               now() - interval '1 hour' FROM generate_series(1, 2) i;
             INSERT INTO job_executions (message_id, queue_name, actor_name, state, state_order,
               created_at)
             SELECT 'run' || i, 'q', 'a', 'running', 2, now() - interval '3 days'
               FROM generate_series(1, 2) i;
             RESET search_path"
        ))
        .await
        .unwrap();
    let retention = Retention {
        succeeded: Duration::from_secs(24 * 3600),
        failed: Duration::from_secs(30 * 60),
        batch: 2,
    };
    assert_eq!(records.prune(retention).await.unwrap(), 10);
    let left: Vec<String> = client
        .query(
            &format!("SELECT message_id FROM \"{schema}\".job_executions ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["run1", "run2"]);
    assert_eq!(records.prune(retention).await.unwrap(), 0);
    cleanup(&records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_keeps_going_while_postgres_is_unreachable_and_records_catch_up() {
    let proxy = Proxy::start().await;
    let broker = broker(config(&namespace()));
    let records = builder(&proxy.url(), &schema_name()).build().await.unwrap();
    broker.add_middleware(records.recorder());
    let worker = Worker::new(broker.clone())
        .queues(["rec_faults"])
        .start()
        .await
        .unwrap();
    let first = rec_fault_noop::message(0)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    wait_state(&records, &first.message_id, JobState::Succeeded).await;

    proxy.cut();
    let mut ids = Vec::new();
    for n in 1..=20 {
        let sent = rec_fault_noop::message(n)
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
        ids.push(sent.message_id.clone());
    }
    broker
        .join("rec_faults", Some(Duration::from_secs(20)), true)
        .await
        .expect("the queue drains without PostgreSQL");
    eventually(Duration::from_secs(20), "a failed flush", || async {
        records.stats().unreachable && records.stats().flush_errors > 0
    })
    .await;
    assert!(
        records.stats().buffered > 0,
        "the records wait in the buffer"
    );

    proxy.restore();
    for id in &ids {
        wait_state(&records, id, JobState::Succeeded).await;
    }
    assert!(!records.stats().unreachable);
    assert_eq!(records.stats().dropped, 0);
    worker.stop().await.unwrap();
    cleanup_redis(&broker, 0).await;
    cleanup(&records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_records_counted_and_the_queue_keeps_going() {
    // Nothing listens on port 1: every flush fails, the buffer fills.
    let broker = broker(config(&namespace()));
    let records = Records::builder("postgres://postgres@127.0.0.1:1/test")
        .schema(schema_name())
        .capacity(5)
        .connect_timeout(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    broker.add_middleware(records.recorder());
    let worker = Worker::new(broker.clone())
        .queues(["rec_faults"])
        .start()
        .await
        .unwrap();
    for n in 0..20 {
        rec_fault_noop::message(n)
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
    }
    broker
        .join("rec_faults", Some(Duration::from_secs(20)), true)
        .await
        .expect("the queue drains while records are dropped");
    let stats = records.stats();
    assert_eq!(stats.buffered, 5, "{stats:?}");
    // 20 enqueued + 20 running + 20 succeeded changes, 5 messages kept: the other 15
    // messages' first change each is dropped, and so is every later change of theirs.
    assert_eq!(stats.dropped, 45, "{stats:?}");
    assert!(stats.dropped_succeeded >= 15, "{stats:?}");
    eventually(Duration::from_secs(10), "a failed flush", || async {
        records.stats().unreachable
    })
    .await;
    worker.stop().await.unwrap();
    records.close().await;
    cleanup_redis(&broker, 0).await;
}
