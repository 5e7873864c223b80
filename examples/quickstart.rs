//! Declares a few actors, sends them messages and runs a worker that processes them, in one
//! process. With no `REDIS_URL` this runs on the in-memory stub broker; with `REDIS_URL` set
//! the same program runs on Redis.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actor_runtime::{actor, current_message, get_broker, Worker};
use serde::{Deserialize, Serialize};

static PROCESSED: AtomicUsize = AtomicUsize::new(0);

/// Adds two numbers.
#[actor]
async fn add(x: i64, y: i64) -> i64 {
    PROCESSED.fetch_add(1, Ordering::Relaxed);
    println!("processed add({x}, {y}) = {}", x + y);
    x + y
}

/// An email to send.
#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
}

/// Sends an email; the first attempt for `flaky@example.com` fails and is retried.
#[actor(
    queue_name = "emails",
    max_retries = 3,
    min_backoff = "100ms",
    max_backoff = "1s"
)]
async fn send_email(email: Email) -> Result<(), String> {
    let retries = current_message().map_or(0, |m| m.retries());
    if email.to.starts_with("flaky") && retries == 0 {
        println!("send_email to {} failed (will retry)", email.to);
        return Err("SMTP server said 421, try again later".into());
    }
    PROCESSED.fetch_add(1, Ordering::Relaxed);
    println!(
        "processed send_email to {}: {:?} (attempt {})",
        email.to,
        email.subject,
        retries + 1
    );
    Ok(())
}

/// CPU-bound work: a plain `fn` runs on the blocking pool, never stalling async actors.
#[actor(queue_name = "reports")]
fn checksum(data: String) -> u64 {
    let sum = data
        .bytes()
        .fold(0u64, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u64));
    PROCESSED.fetch_add(1, Ordering::Relaxed);
    println!("processed checksum({data:?}) = {sum}");
    sum
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,actor_runtime=info".into()),
        )
        .init();

    // The global broker: Redis when REDIS_URL is set, else the in-memory stub (with a warning).
    let broker = get_broker()?;
    let worker = Worker::new(broker.clone()).threads(4).start().await?;

    add::send(1, 2).await?;
    add::message(40, 2).priority(-1).send().await?;
    send_email::send(Email {
        to: "ada@example.com".into(),
        subject: "Welcome".into(),
    })
    .await?;
    send_email::send(Email {
        to: "flaky@example.com".into(),
        subject: "Retry me".into(),
    })
    .await?;
    checksum::send("hello, actors".into()).await?;
    add::message(2, 3)
        .delay(Duration::from_millis(200))
        .send()
        .await?;

    for queue in ["default", "emails", "reports"] {
        broker
            .join(queue, Some(Duration::from_secs(30)), true)
            .await?;
    }
    let report = worker.stop().await?;
    broker.close().await;
    println!(
        "done: {} messages processed ({} actor runs succeeded, {} failed and were retried)",
        PROCESSED.load(Ordering::Relaxed),
        report.succeeded,
        report.failed
    );
    Ok(())
}
