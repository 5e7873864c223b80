//! In-process figures on Redis, printed, not checked: `N` raw enqueues from 16 concurrent
//! producers, fetching and acking them in batches of 100, then a `Worker` (8 threads) draining
//! `N` no-op messages (with `BENCH_CANCELLATION=1`, under the Cancellation middleware). It
//! works in a namespace of its own on `BENCH_REDIS_URL` and deletes it
//! at the end:
//!
//! ```sh
//! BENCH_REDIS_URL=redis://127.0.0.1:6379/0 \
//!     cargo run --release -p actor-examples --example bench_throughput
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actor_runtime::broker::RedisConfig;
use actor_runtime::{actor, Broker, Message, Worker};

#[path = "actors.rs"]
mod actors;

const N: u64 = 10_000;

#[actor(queue_name = "redis_bench")]
async fn redis_bench_noop(_n: u64) {}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let ns = format!("bench-throughput-{stamp}");
    let broker = Broker::redis(RedisConfig::new(actors::redis_url()).namespace(&ns))?;

    let start = Instant::now();
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let broker = broker.clone();
            tokio::spawn(async move {
                for n in (p..N).step_by(16) {
                    let message = Message::new("bench", "redis_noop", vec![n.into()]);
                    broker.enqueue(message, None).await?;
                }
                Ok::<_, actor_runtime::Error>(())
            })
        })
        .collect();
    for p in producers {
        p.await??;
    }
    let enqueue = start.elapsed();
    let consumer = broker.consume("bench", 100).await?;
    let start = Instant::now();
    let mut done = 0;
    while done < N as usize {
        let batch = consumer.fetch(100, Duration::from_secs(1)).await?;
        done += batch.len();
        consumer
            .ack(&batch.iter().map(|d| d.tag.clone()).collect::<Vec<_>>())
            .await?;
    }
    let fetch_ack = start.elapsed();
    consumer.close().await?;
    let per_sec = |d: Duration| (N as f64 / d.as_secs_f64()) as u64;
    println!(
        "enqueue {N} (16 concurrent producers): {enqueue:?} = {}/s; fetch+ack in batches of 100: {fetch_ack:?} = {}/s",
        per_sec(enqueue),
        per_sec(fetch_ack)
    );

    for n in 0..N {
        redis_bench_noop::message(n)
            .broker(broker.clone())
            .send()
            .await?;
    }
    // BENCH_CANCELLATION=1: the drain with the opt-in Cancellation middleware, for its cost.
    if std::env::var("BENCH_CANCELLATION").is_ok_and(|v| v == "1") {
        let config = RedisConfig::new(actors::redis_url()).namespace(&ns);
        broker.add_middleware(
            actor_runtime::cancel::Cancellation::redis(&config)?.namespace(format!("{ns}:aborts:")),
        );
    }
    let start = Instant::now();
    let worker = Worker::new(broker.clone())
        .queues(["redis_bench"])
        .start()
        .await?;
    broker
        .join("redis_bench", Some(Duration::from_secs(120)), true)
        .await?;
    let drained = start.elapsed();
    worker.stop().await?;
    println!(
        "a Worker (8 threads) drained {N} no-op messages in {drained:?} = {}/s",
        per_sec(drained)
    );

    broker.close().await;
    delete_namespace(&ns).await?;
    Ok(())
}

/// Deletes every key of namespace `ns`.
async fn delete_namespace(ns: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(actors::redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}
