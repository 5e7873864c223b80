//! In-process throughput on the stub broker, without Redis: catches regressions in the
//! message path (send -> fetch -> dispatch -> middleware -> actor -> ack) and in the codec.
//!
//! ```text
//! cargo bench -p actor-runtime --bench inprocess
//! ```
//! Prints one `name: value` line per figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actor_runtime::{actor, Broker, Message, Worker};

#[actor(queue_name = "bench")]
async fn noop() {}

#[actor(queue_name = "bench")]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn codec(iterations: u32) {
    let mut message = Message::new("default", "add", vec![1.into(), 2.into()]);
    message
        .options
        .insert("redis_message_id".into(), uuid_like().into());
    let bytes = message.encode();
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(black_box(&message).encode());
    }
    let encode = start.elapsed();
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(Message::decode(black_box(&bytes)).unwrap());
    }
    let decode = start.elapsed();
    println!("message_bytes: {}", bytes.len());
    println!(
        "encode_ns_per_msg: {:.0}",
        encode.as_nanos() as f64 / iterations as f64
    );
    println!(
        "decode_ns_per_msg: {:.0}",
        decode.as_nanos() as f64 / iterations as f64
    );
}

fn uuid_like() -> String {
    "1fa04827-f011-43c8-bc3f-cf21c6235c23".to_owned()
}

async fn end_to_end(n: usize, threads: usize) {
    let broker = Broker::stub();
    broker.declare_queue("bench").await.unwrap();
    let start = Instant::now();
    for i in 0..n {
        add::message(i as i64, 1)
            .broker(broker.clone())
            .send()
            .await
            .unwrap();
    }
    let enqueue = start.elapsed();
    let start = Instant::now();
    let worker = Worker::new(broker.clone())
        .threads(threads)
        .queues(["bench"])
        .start()
        .await
        .unwrap();
    broker
        .join("bench", Some(Duration::from_secs(120)), true)
        .await
        .unwrap();
    let drain = start.elapsed();
    let report = worker.stop().await.unwrap();
    assert_eq!(report.succeeded as usize, n);
    println!(
        "stub_enqueue_msgs_per_s: {:.0}",
        n as f64 / enqueue.as_secs_f64()
    );
    println!(
        "stub_e2e_threads_{threads}_msgs_per_s: {:.0}",
        n as f64 / drain.as_secs_f64()
    );
}

fn main() {
    // `cargo test` runs benches in test mode with --bench absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 1_000 } else { 200_000 };
    codec(if quick { 1_000 } else { 200_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        end_to_end(n, 1).await;
        end_to_end(n, 8).await;
    });
    let _ = noop::message();
}
