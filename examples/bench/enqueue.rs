//! The benchmark's enqueue client: sends `BENCH_N` no-op messages one at a time, each send
//! awaited (as Python's `noop.send()` loop does), and prints `enqueue_seconds: X`.
//! `BENCH_BATCH=1` also times the batch API (`Broker::enqueue_batch`) on another queue.
//!
//! `BENCH_SENDERS=1,64,256` instead compares, in one run against one Redis, the batch API
//! with that many concurrent tasks each awaiting one send at a time (a web server's
//! handlers), `BENCH_ROUNDS` times (default 3), and prints msg/s and the ratio to the batch
//! API. `BENCH_THREADS=N` runs them on a multi-thread runtime of N workers.
//!
//! `BENCH_RATE=R` instead sends the `BENCH_N` messages at a steady R msg/s (a batch every
//! 10 ms), for a worker running meanwhile (`bench/records.sh` measures the job records' lag
//! this way), and prints the rate reached.
//! With `RABBITMQ_URL` set, the same on RabbitMQ (its settings from `RABBITMQ_*`; publisher
//! confirms on unless `RABBITMQ_CONFIRMS=0`), as `bench/rabbitmq_bench.py` runs it.

use std::time::Instant;

use actor_runtime::broker::{RabbitmqConfig, RedisConfig};
use actor_runtime::Broker;

#[path = "actors.rs"]
mod actors;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let threads: usize = env_or("BENCH_THREADS", 1);
    let runtime = if threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(run())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run() -> Result<(), BoxError> {
    let n: usize = env_or("BENCH_N", 20_000);
    let broker: Broker = match std::env::var("RABBITMQ_URL") {
        // RABBITMQ_CONFIRMS=0 turns publisher confirms off, as Dramatiq's default is.
        Ok(url) if !url.is_empty() => Broker::rabbitmq(RabbitmqConfig::from_env()?.url(url))?,
        _ => Broker::redis(RedisConfig::new(actors::redis_url()))?,
    };
    // Connect and load the scripts outside the timed loop, as the Python client's imports are.
    broker.declare_queue("default").await?;
    if let Ok(senders) = std::env::var("BENCH_SENDERS") {
        let senders = senders
            .split(',')
            .map(|s| s.trim().parse::<usize>().map(|c| c.max(1)))
            .collect::<Result<Vec<_>, _>>()?;
        let result = compare_senders(&broker, n, &senders, env_or("BENCH_ROUNDS", 3)).await;
        broker.close().await;
        return result;
    }

    if let Some(rate) = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|r| r.parse::<u64>().ok())
    {
        let result = paced(&broker, n, rate.max(100)).await;
        broker.close().await;
        return result;
    }

    // BENCH_SINGLE_N: fewer one-at-a-time sends than the batch's BENCH_N (RabbitMQ with
    // confirms takes a disk sync per awaited send).
    let single_n: usize = env_or("BENCH_SINGLE_N", n);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    for _ in 0..single_n {
        actors::noop::message()
            .broker(broker.clone())
            .send()
            .await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!("enqueue_n: {single_n}");
    println!("enqueue_seconds: {elapsed:.6}");
    println!("enqueue_msgs_per_s: {:.1}", single_n as f64 / elapsed);
    println!(
        "enqueue_client_cpu_us_per_msg: {:.2}",
        cpu / single_n.max(1) as f64 * 1e6
    );

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

/// Sends `n` no-ops at `rate` msg/s: a batch every 10 ms.
async fn paced(broker: &Broker, n: usize, rate: u64) -> Result<(), BoxError> {
    let per_tick = (rate / 100).max(1) as usize;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        tick.tick().await;
        let batch = per_tick.min(n - sent);
        let messages = (0..batch)
            .map(|_| actors::noop::message().build())
            .collect::<Result<Vec<_>, _>>()?;
        broker.enqueue_batch(messages, None).await?;
        sent += batch;
    }
    println!(
        "paced_msgs_per_s: {:.1}",
        n as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The queue of `compare_senders`, flushed after each measurement.
const COMPARE_QUEUE: &str = "bench_coalesce";

/// msg/s of the batch API and of `senders` concurrent senders, `rounds` times.
async fn compare_senders(
    broker: &Broker,
    n: usize,
    senders: &[usize],
    rounds: usize,
) -> Result<(), BoxError> {
    let message = || -> Result<actor_runtime::Message, BoxError> {
        let mut message = actors::noop::message().build()?;
        message.queue_name = COMPARE_QUEUE.into();
        Ok(message)
    };
    broker.flush(COMPARE_QUEUE).await?;
    // rates[i]: senders[i]'s msg/s, one per round.
    let mut batch_rates = Vec::new();
    let mut rates = vec![Vec::new(); senders.len()];
    for round in 1..=rounds.max(1) {
        let start = Instant::now();
        let messages = (0..n).map(|_| message()).collect::<Result<Vec<_>, _>>()?;
        broker.enqueue_batch(messages, None).await?;
        let batch = n as f64 / start.elapsed().as_secs_f64();
        broker.flush(COMPARE_QUEUE).await?;
        batch_rates.push(batch);
        let mut line = format!("round {round}: enqueue_batch {batch:.0} msg/s");
        for (i, &c) in senders.iter().enumerate() {
            let each = n.div_ceil(c);
            let start = Instant::now();
            let tasks: Vec<_> = (0..c)
                .map(|_| {
                    let broker = broker.clone();
                    tokio::spawn(async move {
                        for _ in 0..each {
                            broker.enqueue(message()?, None).await?;
                        }
                        Ok::<_, BoxError>(())
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            let rate = (each * c) as f64 / start.elapsed().as_secs_f64();
            broker.flush(COMPARE_QUEUE).await?;
            rates[i].push(rate);
            line += &format!(
                " | {c} sender{} {rate:.0} ({:.2})",
                if c == 1 { "" } else { "s" },
                rate / batch
            );
        }
        println!("{line}");
    }
    let (median_batch, _) = median_spread(&batch_rates);
    println!("enqueue_batch_msgs_per_s: {median_batch:.0}");
    for (&c, rates) in senders.iter().zip(&rates) {
        let ratios: Vec<f64> = rates.iter().zip(&batch_rates).map(|(r, b)| r / b).collect();
        let (rate, _) = median_spread(rates);
        let (ratio, (low, high)) = median_spread(&ratios);
        println!(
            "senders_{c}_msgs_per_s: {rate:.0}  ratio to enqueue_batch: {ratio:.2} [{low:.2}-{high:.2}]"
        );
    }
    Ok(())
}

/// The median of `values`, and their min and max.
fn median_spread(values: &[f64]) -> (f64, (f64, f64)) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let spread = (
        sorted.first().copied().unwrap_or(0.0),
        sorted.last().copied().unwrap_or(0.0),
    );
    (median, spread)
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
