//! The test RabbitMQ: a broker per test on queues of its own, raw AMQP access, clean-up.

use actor_runtime::broker::RabbitmqConfig;
use actor_runtime::Broker;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// The RabbitMQ the tests use (`TEST_RABBITMQ_URL`, default the local server).
pub(crate) fn rabbitmq_url() -> String {
    std::env::var("TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A queue name no other test uses.
pub(crate) fn queue(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Settings for the test server.
pub(crate) fn config() -> RabbitmqConfig {
    RabbitmqConfig::new(rabbitmq_url())
}

/// A RabbitMQ broker on `config`.
pub(crate) fn broker(config: RabbitmqConfig) -> Broker {
    Broker::rabbitmq(config).expect("valid config")
}

/// A raw connection to the test server.
pub(crate) async fn raw() -> Connection {
    Connection::connect(&rabbitmq_url(), ConnectionProperties::default())
        .await
        .expect("the tests need RabbitMQ at TEST_RABBITMQ_URL or 127.0.0.1:5672")
}

/// Ready messages in `name` (a passive declaration; 0 when it does not exist).
pub(crate) async fn count(name: &str) -> u32 {
    counts(name).await.0
}

/// Consumers of `name` (0 when it does not exist).
pub(crate) async fn consumers(name: &str) -> u32 {
    counts(name).await.1
}

async fn counts(name: &str) -> (u32, u32) {
    let conn = raw().await;
    let channel = conn.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let n = match channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        Ok(queue) => (queue.message_count(), queue.consumer_count()),
        Err(_) => (0, 0),
    };
    let _ = conn.close(200, "".into()).await;
    n
}

/// Deletes `q`, `q.DQ` and `q.XQ`, and closes the broker.
pub(crate) async fn cleanup(broker: &Broker, q: &str) {
    broker.close().await;
    let conn = raw().await;
    for name in [q.to_owned(), format!("{q}.DQ"), format!("{q}.XQ")] {
        let channel = conn.create_channel().await.expect("channel");
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "".into()).await;
}

/// Closes this server's connections named `name` (`rabbitmqctl close_connection`), as a
/// network cut would; returns how many were closed.
pub(crate) async fn close_connections_named(name: &str) -> usize {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(&format!("\"{name}\""))) {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let status = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: connection cut"])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("rabbitmqctl");
        if status.success() {
            closed += 1;
        }
    }
    closed
}
