//! The benchmark's enqueue client: sends `BENCH_N` no-op messages one at a time, each send
//! awaited (as Python's `noop.send()` loop does), and prints `enqueue_seconds: X`.
//! `BENCH_BATCH=1` also times the batch API (`Broker::enqueue_batch`) on another queue.

use std::time::Instant;

use actor_runtime::broker::RedisConfig;
use actor_runtime::Broker;

#[path = "actors.rs"]
mod actors;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let broker: Broker = Broker::redis(RedisConfig::new(actors::redis_url()))?;
    // Connect and load the scripts outside the timed loop, as the Python client's imports are.
    broker.declare_queue("default").await?;

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    for _ in 0..n {
        actors::noop::message()
            .broker(broker.clone())
            .send()
            .await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!("enqueue_n: {n}");
    println!("enqueue_seconds: {elapsed:.6}");
    println!("enqueue_msgs_per_s: {:.1}", n as f64 / elapsed);
    println!("enqueue_client_cpu_us_per_msg: {:.2}", cpu / n as f64 * 1e6);

    if std::env::var("BENCH_BATCH").is_ok_and(|v| v == "1") {
        // The batch API, on a queue of its own (flushed after) so the harness's count of the
        // default queue stays exact.
        let mut messages = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            let mut message = actors::noop::message().build()?;
            message.queue_name = "bench_batch".into();
            messages.push(message);
        }
        broker.enqueue_batch(messages, None).await?;
        let elapsed = start.elapsed().as_secs_f64();
        println!("enqueue_batch_msgs_per_s: {:.1}", n as f64 / elapsed);
        broker.flush("bench_batch").await?;
    }
    broker.close().await;
    Ok(())
}

/// This process's user + system CPU time, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}
