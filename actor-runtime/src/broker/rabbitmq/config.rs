//! [`RabbitmqConfig`]: where the RabbitMQ broker connects and how it declares, publishes and
//! consumes, in code or from the environment.

use std::fmt;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::error::{Error, Result};

/// The kind of queue the broker declares (`x-queue-type`).
///
/// ```
/// use actor_runtime::broker::{QueueType, RabbitmqConfig};
///
/// let config = RabbitmqConfig::new("amqp://127.0.0.1:5672").queue_type(QueueType::Quorum);
/// assert_eq!(config.get_queue_type(), QueueType::Quorum);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Classic queues, what Python Dramatiq declares (no `x-queue-type` argument): the only
    /// kind with per-message priorities.
    #[default]
    Classic,
    /// Replicated quorum queues (`x-queue-type = quorum`); no `x-max-priority`. Every
    /// process on the queues, Python's too, must declare them so.
    Quorum,
}

/// Settings of a [`RabbitmqBackend`](super::RabbitmqBackend).
///
/// | Setting | Default | Environment |
/// |---|---|---|
/// | [`url`](Self::url) | none | `RABBITMQ_URL` |
/// | [`prefetch`](Self::prefetch) | the worker's budget | `RABBITMQ_PREFETCH` |
/// | [`delay_prefetch`](Self::delay_prefetch) | 1000 | `RABBITMQ_DELAY_PREFETCH` |
/// | [`confirms`](Self::confirms) | on | `RABBITMQ_CONFIRMS` (`0`/`1`) |
/// | [`max_priority`](Self::max_priority) | none | `RABBITMQ_MAX_PRIORITY` |
/// | [`heartbeat`](Self::heartbeat) | server's (60 s) | `RABBITMQ_HEARTBEAT` |
/// | [`connection_name`](Self::connection_name) | `actor-runtime` | `RABBITMQ_CONNECTION_NAME` |
/// | [`dead_message_ttl`](Self::dead_message_ttl) | 7 days (Dramatiq's) | `DEAD_MESSAGE_TTL_MS` |
/// | [`queue_type`](Self::queue_type) | classic | `RABBITMQ_QUEUE_TYPE` |
/// | [`reconnect_timeout`](Self::reconnect_timeout) | 30 s | `RABBITMQ_RECONNECT_TIMEOUT` |
/// | [`max_hold`](Self::max_hold) | 20 min | `RABBITMQ_MAX_HOLD` |
/// | [`max_message_size`](Self::max_message_size) | 8 MiB | `MAX_MESSAGE_SIZE` |
/// | [`warn_message_size`](Self::warn_message_size) | 1 MiB | `MESSAGE_SIZE_WARNING` |
///
/// `dead_message_ttl` and `max_priority` are part of the queue declarations: they must be
/// the same in every process (Python's too) that declares the queues, or RabbitMQ refuses
/// the later declarations.
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::broker::RabbitmqConfig;
///
/// let config = RabbitmqConfig::new("amqp://guest:secret@127.0.0.1:5672/%2f")
///     .max_priority(10)
///     .heartbeat(Duration::from_secs(30))
///     .connection_name("billing-worker");
/// assert_eq!(config.get_max_priority(), Some(10));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct RabbitmqConfig {
    pub(crate) url: String,
    pub(crate) prefetch: Option<u16>,
    pub(crate) delay_prefetch: u16,
    pub(crate) confirms: bool,
    pub(crate) max_priority: Option<u8>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) connection_name: String,
    pub(crate) dead_message_ttl: Duration,
    pub(crate) queue_type: QueueType,
    pub(crate) reconnect_timeout: Duration,
    pub(crate) max_hold: Duration,
    pub(crate) limits: crate::limits::PayloadLimits,
}

impl fmt::Debug for RabbitmqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitmqConfig")
            .field("url", &redact(&self.url))
            .field("prefetch", &self.prefetch)
            .field("confirms", &self.confirms)
            .field("max_priority", &self.max_priority)
            .field("queue_type", &self.queue_type)
            .finish_non_exhaustive()
    }
}

impl RabbitmqConfig {
    /// Defaults for the server at `url`: `amqp://[user[:password]@]host[:port][/vhost]`.
    pub fn new(url: impl Into<String>) -> RabbitmqConfig {
        RabbitmqConfig {
            url: url.into(),
            prefetch: None,
            delay_prefetch: 1000,
            confirms: true,
            max_priority: None,
            heartbeat: None,
            connection_name: "actor-runtime".into(),
            dead_message_ttl: Duration::from_secs(7 * 24 * 3600),
            queue_type: QueueType::Classic,
            reconnect_timeout: Duration::from_secs(30),
            max_hold: Duration::from_secs(20 * 60),
            limits: crate::limits::PayloadLimits::default(),
        }
    }

    /// Reads `RABBITMQ_URL` and the other variables of the table above.
    pub fn from_env() -> Result<RabbitmqConfig> {
        RabbitmqConfig::read_lookup(&|key| std::env::var(key).ok())
            .map_err(|problems| Error::Config(problems.join("; ")))
    }

    /// [`from_env`](Self::from_env) over any lookup, every problem at once.
    pub(crate) fn read_lookup(
        env: &dyn Fn(&str) -> Option<String>,
    ) -> std::result::Result<RabbitmqConfig, Vec<String>> {
        let get = |key: &str| {
            env(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let url = get("RABBITMQ_URL").unwrap_or_default();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            problems.push(format!(
                "RABBITMQ_URL: `{}` is not an amqp:// URL",
                redact(&url)
            ));
        }
        let mut config = RabbitmqConfig::new(url);
        let mut number = |key: &str, max: u64| -> Option<u64> {
            let value = get(key)?;
            match value.parse::<u64>() {
                Ok(n) if n <= max => Some(n),
                _ => {
                    problems.push(format!("{key}: `{value}` is not a number up to {max}"));
                    None
                }
            }
        };
        if let Some(n) = number("RABBITMQ_PREFETCH", u64::from(u16::MAX)) {
            config.prefetch = Some(n as u16);
        }
        if let Some(n) = number("RABBITMQ_DELAY_PREFETCH", u64::from(u16::MAX)) {
            config.delay_prefetch = n as u16;
        }
        if let Some(n) = number("RABBITMQ_MAX_PRIORITY", 255) {
            config.max_priority = (n > 0).then_some(n as u8);
        }
        if let Some(n) = number("RABBITMQ_CONFIRMS", 1) {
            config.confirms = n == 1;
        }
        if let Some(n) = number("DEAD_MESSAGE_TTL_MS", i32::MAX as u64) {
            config.dead_message_ttl = Duration::from_millis(n);
        }
        let mut duration = |key: &str| -> Option<Duration> {
            let value = get(key)?;
            match parse_duration(&value) {
                Ok(d) => Some(d),
                Err(err) => {
                    problems.push(format!("{key}: {err}"));
                    None
                }
            }
        };
        if let Some(d) = duration("RABBITMQ_HEARTBEAT") {
            config.heartbeat = Some(d);
        }
        if let Some(d) = duration("RABBITMQ_RECONNECT_TIMEOUT") {
            config.reconnect_timeout = d;
        }
        if let Some(d) = duration("RABBITMQ_MAX_HOLD") {
            config.max_hold = d;
        }
        if let Some(name) = get("RABBITMQ_CONNECTION_NAME") {
            config.connection_name = name;
        }
        match get("RABBITMQ_QUEUE_TYPE").as_deref() {
            None | Some("classic") => {}
            Some("quorum") => config.queue_type = QueueType::Quorum,
            Some(other) => problems.push(format!(
                "RABBITMQ_QUEUE_TYPE must be `classic` or `quorum`, got `{other}`"
            )),
        }
        config.limits = crate::limits::from_lookup(get, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// The server's URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Messages RabbitMQ sends a consumer ahead of its acks (`basic.qos`); by default the
    /// worker's own prefetch budget.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Delayed messages a consumer holds unacked until they are due.
    pub fn delay_prefetch(mut self, prefetch: u16) -> Self {
        self.delay_prefetch = prefetch.max(1);
        self
    }

    /// Publisher confirms (on by default): `send` returns once RabbitMQ has the message.
    /// Off, a send returns once the message is written to the socket.
    pub fn confirms(mut self, on: bool) -> Self {
        self.confirms = on;
        self
    }

    /// Declares queues with `x-max-priority = max` (1 to 255), so RabbitMQ delivers messages
    /// of higher `broker_priority` first. As for Dramatiq, the same in every process.
    pub fn max_priority(mut self, max: u8) -> Self {
        self.max_priority = (max > 0).then_some(max);
        self
    }

    /// The AMQP heartbeat asked of the server (whole seconds).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// The connection's name as `rabbitmqctl list_connections client_properties` shows it.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// How long dead letters stay in `q.XQ` (its `x-message-ttl`; Dramatiq's default is 7
    /// days, the same here, so declarations match).
    pub fn dead_message_ttl(mut self, ttl: Duration) -> Self {
        self.dead_message_ttl = ttl;
        self
    }

    /// Classic (default, as Dramatiq) or quorum queues.
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// How long a send retries a lost connection before failing with
    /// [`Error::Connection`].
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// The longest a consumer holds a delayed message unacked before it puts it back in the
    /// delay queue (republished with a confirm, then the held copy acked): keep it under the
    /// server's `consumer_timeout` (30 min by default), which would otherwise close the
    /// channel and redeliver everything on it.
    pub fn max_hold(mut self, hold: Duration) -> Self {
        self.max_hold = hold.max(Duration::from_millis(100));
        self
    }

    /// The largest encoded message, in bytes (default
    /// [8 MiB](crate::limits::DEFAULT_MAX_MESSAGE_SIZE), see [`limits`](crate::limits)): a
    /// larger send fails with [`Error::MessageTooLarge`] and publishes nothing; a worker
    /// dead-letters a larger delivery without decoding it (RabbitMQ has sent its bytes by
    /// then). Lowers the warning threshold to it if that was higher.
    ///
    /// ```
    /// use actor_runtime::broker::RabbitmqConfig;
    ///
    /// let config = RabbitmqConfig::new("amqp://127.0.0.1:5672/%2f").max_message_size(1 << 20);
    /// assert_eq!(config.payload_limits().max_size, 1 << 20);
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits = self.limits.with_max(bytes);
        self
    }

    /// The size past which an enqueued message is logged as a warning (default
    /// [1 MiB](crate::limits::DEFAULT_WARN_MESSAGE_SIZE)).
    pub fn warn_message_size(mut self, bytes: usize) -> Self {
        self.limits.warn_size = bytes;
        self
    }

    /// The payload limits in effect.
    pub fn payload_limits(&self) -> crate::limits::PayloadLimits {
        self.limits
    }

    /// The configured maximum priority.
    pub fn get_max_priority(&self) -> Option<u8> {
        self.max_priority
    }

    /// The configured queue type.
    pub fn get_queue_type(&self) -> QueueType {
        self.queue_type
    }
}

/// `url` without its secrets, for logs and errors: the password becomes `***`, and so does
/// every query value (`heartbeat`, `auth_mechanism`...); an unparsable URL is not shown.
pub(crate) fn redact(url: &str) -> String {
    crate::broker::redact_url(url, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn reads_every_setting_from_the_environment() {
        let config = RabbitmqConfig::read_lookup(&env(&[
            ("RABBITMQ_URL", "amqp://u:p@h:5672/%2f"),
            ("RABBITMQ_PREFETCH", "7"),
            ("RABBITMQ_MAX_PRIORITY", "10"),
            ("RABBITMQ_CONFIRMS", "0"),
            ("RABBITMQ_HEARTBEAT", "15s"),
            ("RABBITMQ_QUEUE_TYPE", "quorum"),
            ("RABBITMQ_MAX_HOLD", "5m"),
        ]))
        .unwrap();
        assert_eq!(config.prefetch, Some(7));
        assert_eq!(config.max_priority, Some(10));
        assert!(!config.confirms);
        assert_eq!(config.heartbeat, Some(Duration::from_secs(15)));
        assert_eq!(config.queue_type, QueueType::Quorum);
        assert_eq!(config.max_hold, Duration::from_secs(300));
    }

    #[test]
    fn reports_every_problem_and_hides_passwords() {
        let problems = RabbitmqConfig::read_lookup(&env(&[
            ("RABBITMQ_URL", "http://u:hunter2@h"),
            ("RABBITMQ_MAX_PRIORITY", "300"),
            ("RABBITMQ_QUEUE_TYPE", "stream"),
        ]))
        .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(!problems.join(" ").contains("hunter2"));
        assert_eq!(redact("amqp://u:pw@h:5672/v"), "amqp://u:***@h:5672/v");
    }
}
