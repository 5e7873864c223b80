//! The RabbitMQ broker, wire-compatible with Python Dramatiq's `RabbitmqBroker`: the same
//! queues (`q`, `q.DQ`, `q.XQ`) declared with the same arguments, the same message JSON,
//! delayed messages and retries through `q.DQ`, failures dead-lettered by RabbitMQ to
//! `q.XQ`.
//!
//! One AMQP connection per backend ([`conn`]), reconnected by our own loop; publishing with
//! confirms ([`publish`]); a consumer ([`consumer`]) over a session task ([`session`])
//! holding due-later messages ([`delayed`]); dead letters, counts and joins ([`admin`]).

mod admin;
mod config;
mod conn;
mod consumer;
mod declare;
mod delayed;
mod publish;
mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

pub use config::{QueueType, RabbitmqConfig};

use self::conn::Conn;
use self::consumer::RabbitConsumer;
use self::publish::{properties, publish, Failed};
use super::{human_duration, Backend, BrokerInfo, Consumer, DeadLetters, QueueStats};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, is_valid_queue_name, Message};

/// What the backend and its consumers share.
pub(crate) struct Shared {
    pub(crate) config: Arc<RabbitmqConfig>,
    pub(crate) conn: Conn,
    /// Queues declared by this process.
    declared: Mutex<BTreeSet<String>>,
    /// Per queue, deliveries handed to this process's workers and not yet settled.
    in_flight: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Per queue, delayed messages this process's consumers hold unacked.
    held: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Shared {
    pub(crate) fn in_flight(&self, queue: &str) -> Arc<AtomicU64> {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn held(&self, queue: &str) -> Arc<AtomicU64> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    fn is_declared(&self, queue: &str) -> bool {
        self.declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(queue)
    }

    fn forget(&self, queue: &str) {
        self.declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(queue);
    }

    pub(crate) async fn declare(&self, queue: &str) -> Result<()> {
        if !is_valid_queue_name(queue) {
            return Err(Error::InvalidQueueName(queue.to_owned()));
        }
        if self.is_declared(queue) {
            return Ok(());
        }
        declare::declare(self, queue).await?;
        self.declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(queue.to_owned());
        Ok(())
    }
}

/// Storage on RabbitMQ, wire-compatible with Python Dramatiq's `RabbitmqBroker` (see
/// [`RabbitmqConfig`] for its settings). Build a broker with
/// [`Broker::rabbitmq`](crate::Broker::rabbitmq).
///
/// ```no_run
/// use actor_runtime::Broker;
/// use actor_runtime::broker::RabbitmqConfig;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::rabbitmq(RabbitmqConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f"))?;
/// broker.ping().await?;
/// broker.declare_queue("emails").await?;
/// # Ok::<(), actor_runtime::Error>(())
/// # });
/// ```
pub struct RabbitmqBackend {
    shared: Arc<Shared>,
}

impl RabbitmqBackend {
    /// A backend for `config`. Does not connect yet: the first command does.
    pub fn new(config: RabbitmqConfig) -> Result<RabbitmqBackend> {
        let url = config.url.trim();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(Error::Config(format!(
                "`{}` is not an amqp:// URL",
                config::redact(url)
            )));
        }
        config
            .limits
            .validate()
            .map_err(|why| Error::Config(format!("RabbitMQ broker: {why}")))?;
        let config = Arc::new(config);
        Ok(RabbitmqBackend {
            shared: Arc::new(Shared {
                conn: Conn::new(config.clone()),
                config,
                declared: Mutex::new(BTreeSet::new()),
                in_flight: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings this backend was built with.
    pub fn config(&self) -> &RabbitmqConfig {
        &self.shared.config
    }
}

#[async_trait]
impl Backend for RabbitmqBackend {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn describe(&self) -> BrokerInfo {
        let config = &self.shared.config;
        let mut info = BrokerInfo::new("rabbitmq");
        info.url = Some(config::redact(&config.url));
        info.settings = vec![
            ("confirms", config.confirms.to_string()),
            (
                "max_priority",
                config.max_priority.map_or("none".into(), |p| p.to_string()),
            ),
            (
                "queue_type",
                format!("{:?}", config.queue_type).to_lowercase(),
            ),
            ("dead_message_ttl", human_duration(config.dead_message_ttl)),
            ("max_hold", human_duration(config.max_hold)),
        ];
        info
    }

    async fn ping(&self) -> Result<()> {
        let conn = self.shared.conn.connect().await?;
        let _ = conn.close(200, "ping".into()).await;
        Ok(())
    }

    async fn declare_queue(&self, queue: &str) -> Result<()> {
        self.shared.declare(canonical_queue(queue)).await
    }

    fn queues(&self) -> Vec<String> {
        self.shared
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    async fn enqueue(&self, messages: Vec<Message>) -> Result<Vec<Message>> {
        let mut batch = Vec::with_capacity(messages.len());
        for message in &messages {
            self.shared
                .declare(canonical_queue(&message.queue_name))
                .await?;
            let payload = message.encode();
            self.shared
                .config
                .limits
                .check_enqueue(message, payload.len())?;
            batch.push((message.queue_name.clone(), payload, properties(message)));
        }
        let mut redeclared = false;
        loop {
            match publish(&self.shared, &batch).await {
                Ok(()) => return Ok(messages),
                Err(Failed::Unroutable(queue)) if !redeclared => {
                    // Deleted since we declared it: declare again and publish the batch
                    // again (a message that did arrive may arrive twice: at-least-once).
                    redeclared = true;
                    let queue = canonical_queue(&queue).to_owned();
                    self.shared.forget(&queue);
                    self.shared.declare(&queue).await?;
                }
                Err(Failed::Unroutable(queue)) => return Err(Error::QueueNotFound(queue)),
                Err(Failed::Lost(err)) | Err(Failed::Refused(err)) => return Err(err),
            }
        }
    }

    async fn consume(&self, queue: &str, prefetch: usize) -> Result<Box<dyn Consumer>> {
        let queue = canonical_queue(queue);
        self.shared.declare(queue).await?;
        Ok(Box::new(
            RabbitConsumer::start(self.shared.clone(), queue, prefetch).await?,
        ))
    }

    async fn flush(&self, queue: &str) -> Result<()> {
        admin::flush(&self.shared, canonical_queue(queue)).await
    }

    async fn join(&self, queue: &str, timeout: Option<Duration>, fail_fast: bool) -> Result<()> {
        admin::join(&self.shared, canonical_queue(queue), timeout, fail_fast).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        admin::stats(&self.shared, canonical_queue(queue)).await
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    async fn close(&self) {
        self.shared.conn.close().await;
    }
}
