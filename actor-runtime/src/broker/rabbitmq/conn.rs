//! The one AMQP connection of a backend, and our own reconnect loop (lapin's automatic
//! recovery is not used): every user asks [`Conn::live`] for the current connection, which
//! reconnects with backoff, within the configured bound, when it was lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::{redact, RabbitmqConfig};
use crate::backoff::{Backoff, Jitter};
use crate::error::{Error, Result};

/// A connection and its publishing channel (confirms on when configured).
pub(crate) struct Live {
    pub(crate) conn: Arc<Connection>,
    pub(crate) publish: Channel,
    /// Counts connections made: a consumer's deliveries from an older one cannot be acked.
    pub(crate) generation: u64,
}

impl Live {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.publish.status().connected()
    }
}

pub(crate) struct Conn {
    config: Arc<RabbitmqConfig>,
    live: Mutex<Option<Arc<Live>>>,
    generation: AtomicU64,
}

impl Conn {
    pub(crate) fn new(config: Arc<RabbitmqConfig>) -> Conn {
        Conn {
            config,
            live: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The current connection, reconnecting (with backoff, for at most the reconnect
    /// timeout) when there is none or it was lost.
    pub(crate) async fn live(&self) -> Result<Arc<Live>> {
        let mut live = self.live.lock().await;
        if let Some(current) = live.as_ref().filter(|l| l.usable()) {
            return Ok(current.clone());
        }
        if let Some(old) = live.take() {
            if old.conn.status().connected() {
                // Only the publishing channel was closed (a refused publish): keep the
                // connection, so consumers on it go on.
                match self.publish_channel(&old.conn).await {
                    Ok(publish) => {
                        let fresh = Arc::new(Live {
                            conn: old.conn.clone(),
                            publish,
                            generation: old.generation,
                        });
                        *live = Some(fresh.clone());
                        return Ok(fresh);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "reopening the publishing channel failed; reconnecting")
                    }
                }
            }
            let _ = old.conn.close(320, "reconnecting".into()).await;
        }
        let deadline = Instant::now() + self.config.reconnect_timeout;
        let mut backoff = Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
            Jitter::Equal,
        );
        loop {
            match self.connect().await {
                Ok(conn) => {
                    let publish = self.publish_channel(&conn).await?;
                    let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                    if generation > 1 {
                        tracing::info!(url = %redact(&self.config.url), generation, "reconnected to RabbitMQ");
                    }
                    let fresh = Arc::new(Live {
                        conn: Arc::new(conn),
                        publish,
                        generation,
                    });
                    *live = Some(fresh.clone());
                    return Ok(fresh);
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    if Instant::now() + delay >= deadline {
                        return Err(err);
                    }
                    tracing::warn!(error = %err, attempt = backoff.failures(), "cannot reach RabbitMQ; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// After a failure on the connection of `generation`: forgets it if it is no longer
    /// usable, so the next [`live`](Self::live) reconnects (or reopens its publishing
    /// channel).
    pub(crate) async fn lost(&self, generation: u64) {
        let mut live = self.live.lock().await;
        if live
            .as_ref()
            .is_some_and(|l| l.generation == generation && !l.conn.status().connected())
        {
            if let Some(old) = live.take() {
                let _ = old.conn.close(320, "connection lost".into()).await;
            }
        }
    }

    /// A new channel on the current connection.
    pub(crate) async fn channel(&self) -> Result<(Channel, u64)> {
        let live = self.live().await?;
        match live.conn.create_channel().await {
            Ok(channel) => Ok((channel, live.generation)),
            Err(err) => {
                self.lost(live.generation).await;
                Err(self.error("open a channel", err))
            }
        }
    }

    /// One connection attempt, no retry.
    pub(crate) async fn connect(&self) -> Result<Connection> {
        let mut uri: AMQPUri = self.config.url.parse().map_err(|err: String| {
            Error::Config(format!("RabbitMQ URL {}: {err}", redact(&self.config.url)))
        })?;
        if let Some(heartbeat) = self.config.heartbeat {
            uri.query.heartbeat = Some(heartbeat.as_secs().clamp(1, u64::from(u16::MAX)) as u16);
        }
        let properties = ConnectionProperties::default()
            .with_connection_name(self.config.connection_name.clone().into());
        let connect = Connection::connect_uri(uri, properties);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(err)) => Err(self.error("connect", err)),
            Err(_) => Err(Error::connection(format!(
                "connect to {} timed out",
                redact(&self.config.url)
            ))),
        }
    }

    async fn publish_channel(&self, conn: &Connection) -> Result<Channel> {
        let channel = conn
            .create_channel()
            .await
            .map_err(|err| self.error("open a channel", err))?;
        if self.config.confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|err| self.error("enable publisher confirms", err))?;
        }
        Ok(channel)
    }

    /// `err` while doing `what`, as our error: a connection error, or a refusal by the
    /// server.
    pub(crate) fn error(&self, what: &str, err: lapin::Error) -> Error {
        let context = format!("rabbitmq {what} on {}", redact(&self.config.url));
        if err.is_amqp_soft_error() {
            Error::Broker {
                context,
                source: Some(Box::new(err)),
            }
        } else {
            Error::Connection {
                context,
                source: Some(Box::new(err)),
            }
        }
    }

    pub(crate) async fn close(&self) {
        if let Some(live) = self.live.lock().await.take() {
            let _ = live.conn.close(200, "closing".into()).await;
        }
    }
}
