//! [`RedisConfig`]: where the Redis broker connects and how it behaves, in code or from the
//! environment.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::duration::{parse_duration, GRAMMAR};
use crate::error::{Error, Result};

/// Settings of a [`RedisBackend`](super::RedisBackend), built in code or read from the
/// environment with [`RedisConfig::from_env`]. The connection settings (URL, pool size,
/// timeouts, retries, keepalive) also serve the
/// [`RedisResultBackend`](crate::results::RedisResultBackend) and the
/// [`RedisRateLimiterBackend`](crate::rate_limits::RedisRateLimiterBackend): built from one
/// config or its clones, they all share one pool of connections.
///
/// | Setting | Default | Environment |
/// |---|---|---|
/// | [`url`](Self::url) | none | `REDIS_URL` |
/// | [`namespace`](Self::namespace) | `dramatiq` | `DRAMATIQ_NAMESPACE` |
/// | [`max_connections`](Self::max_connections) | 10 | `REDIS_MAX_CONNECTIONS` |
/// | [`connect_timeout`](Self::connect_timeout) | 5 s | `REDIS_CONNECT_TIMEOUT_MS` |
/// | [`read_timeout`](Self::read_timeout) | 5 s | `REDIS_READ_TIMEOUT_MS` |
/// | [`heartbeat_timeout`](Self::heartbeat_timeout) | 60 s | `HEARTBEAT_TIMEOUT_MS` |
/// | [`dead_message_ttl`](Self::dead_message_ttl) | 24 h | `DEAD_MESSAGE_TTL_MS` |
/// | [`heartbeat_interval`](Self::heartbeat_interval) | heartbeat timeout / 4 | |
/// | [`maintenance_interval`](Self::maintenance_interval) | heartbeat timeout / 2 | |
/// | [`retry_timeout`](Self::retry_timeout) | 5 s | |
/// | [`tcp_keepalive`](Self::tcp_keepalive) | 30 s | |
/// | [`keyspace_notifications`](Self::keyspace_notifications) | on | |
/// | [`poll_interval`](Self::poll_interval) | 100 ms | |
/// | [`safety_poll_interval`](Self::safety_poll_interval) | 1 s | |
/// | [`delay_prefetch`](Self::delay_prefetch) | 10 000 | `REDIS_DELAY_PREFETCH` |
/// | [`max_message_size`](Self::max_message_size) | 8 MiB | `MAX_MESSAGE_SIZE` |
/// | [`warn_message_size`](Self::warn_message_size) | 1 MiB | `MESSAGE_SIZE_WARNING` |
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::broker::RedisConfig;
///
/// let config = RedisConfig::new("redis://:secret@127.0.0.1:6379/2")
///     .namespace("myapp")
///     .max_connections(4)
///     .heartbeat_timeout(Duration::from_secs(30))
///     .dead_message_ttl(Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(config.heartbeat_interval_or_default(), Duration::from_millis(7500));
/// // The password never shows in logs.
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) max_connections: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) retry_timeout: Duration,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) maintenance_interval: Option<Duration>,
    pub(crate) dead_message_ttl: Duration,
    pub(crate) keyspace_notifications: bool,
    pub(crate) poll_interval: Duration,
    pub(crate) safety_poll_interval: Duration,
    pub(crate) delay_prefetch: usize,
    pub(crate) limits: crate::limits::PayloadLimits,
    /// The connection layer in use by whatever was built from this config or its clones.
    pub(crate) conn: SharedConn,
}

impl RedisConfig {
    /// Defaults for the server at `url`: `redis://[user[:password]@]host[:port][/db]`, or
    /// `rediss://` for TLS (needs this crate's `tls` feature).
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            namespace: "dramatiq".into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            tcp_keepalive: Some(Duration::from_secs(30)),
            retry_timeout: Duration::from_secs(5),
            heartbeat_interval: None,
            heartbeat_timeout: Duration::from_secs(60),
            maintenance_interval: None,
            dead_message_ttl: Duration::from_secs(24 * 3600),
            keyspace_notifications: true,
            poll_interval: Duration::from_millis(100),
            safety_poll_interval: Duration::from_secs(1),
            delay_prefetch: 10_000,
            limits: crate::limits::PayloadLimits::default(),
            conn: SharedConn::default(),
        }
    }

    /// Reads `REDIS_URL` (required), `DRAMATIQ_NAMESPACE`, `REDIS_MAX_CONNECTIONS`,
    /// `REDIS_CONNECT_TIMEOUT_MS`, `REDIS_READ_TIMEOUT_MS`, `HEARTBEAT_TIMEOUT_MS`,
    /// `DEAD_MESSAGE_TTL_MS` and `REDIS_DELAY_PREFETCH`; unset variables keep their defaults.
    /// The `_MS` variables take ms (`5000`) or amounts with units (`5s`, `1h30m`, `7d`).
    /// Values that do not parse are one [`Error::Config`] naming each variable at fault.
    pub fn from_env() -> Result<RedisConfig> {
        RedisConfig::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables; every problem, in one
    /// error.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<RedisConfig> {
        RedisConfig::read_lookup(lookup).map_err(|problems| Error::Config(problems.join("; ")))
    }

    /// Reads the variables, collecting every problem, each naming its variable (the CLI
    /// lists them with its own settings').
    pub(crate) fn read_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<RedisConfig, Vec<String>> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let url = get("REDIS_URL").unwrap_or_default();
        if url.is_empty() {
            problems.push("REDIS_URL is not set".to_owned());
        } else if let Err(why) = check_url(&url) {
            problems.push(format!("REDIS_URL: {why}"));
        }
        let mut config = RedisConfig::new(url);
        if let Some(ns) = get("DRAMATIQ_NAMESPACE") {
            match check_namespace(&ns) {
                Ok(()) => config.namespace = ns,
                Err(why) => problems.push(format!("DRAMATIQ_NAMESPACE: {why}")),
            }
        }
        let positive = |key: &str, problems: &mut Vec<String>| -> Option<u64> {
            let raw = get(key)?;
            match raw.parse::<u64>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    problems.push(format!("{key} must be a whole number ≥ 1, got `{raw}`"));
                    None
                }
            }
        };
        // A bare number is ms, as the names say; `5s` or `1h30m` work too.
        let duration = |key: &str, problems: &mut Vec<String>| -> Option<Duration> {
            let raw = get(key)?;
            match parse_duration(&raw) {
                Ok(d) if d >= Duration::from_millis(1) => Some(d),
                Ok(_) => {
                    problems.push(format!("{key} must be at least 1ms, got `{raw}`"));
                    None
                }
                Err(why) => {
                    problems.push(format!(
                        "{key} must be a duration ({GRAMMAR}), got `{raw}`: {why}"
                    ));
                    None
                }
            }
        };
        let max_connections = positive("REDIS_MAX_CONNECTIONS", &mut problems);
        let connect_timeout = duration("REDIS_CONNECT_TIMEOUT_MS", &mut problems);
        let read_timeout = duration("REDIS_READ_TIMEOUT_MS", &mut problems);
        let heartbeat_timeout = duration("HEARTBEAT_TIMEOUT_MS", &mut problems);
        let dead_message_ttl = duration("DEAD_MESSAGE_TTL_MS", &mut problems);
        let delay_prefetch = positive("REDIS_DELAY_PREFETCH", &mut problems);
        let limits = crate::limits::from_lookup(get, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        if let Some(n) = max_connections {
            config.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(d) = connect_timeout {
            config.connect_timeout = d;
        }
        if let Some(d) = read_timeout {
            config.read_timeout = d;
        }
        if let Some(d) = heartbeat_timeout {
            config.heartbeat_timeout = d;
        }
        if let Some(d) = dead_message_ttl {
            config.dead_message_ttl = d;
        }
        if let Some(n) = delay_prefetch {
            config.delay_prefetch = usize::try_from(n).unwrap_or(usize::MAX);
        }
        config.limits = limits;
        Ok(config)
    }

    /// The server URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self.unshared()
    }

    /// The prefix of every key, as Dramatiq's `namespace` (default `dramatiq`): Python and
    /// Rust workers sharing queues must use the same one.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Multiplexed connections in the pool, used round robin (default 10). Heartbeats,
    /// keyspace notifications and blocking reads (results, barriers) use their own
    /// connections besides these.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self.unshared()
    }

    /// How long one connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.unshared()
    }

    /// How long to wait for a reply before the call counts as a connection failure (default
    /// 5 s; redis-rs' own default of 500 ms is too short for a busy server).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self.unshared()
    }

    /// TCP keepalive idle time, so dead peers are noticed (default 30 s; `None` disables).
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self.unshared()
    }

    /// How long an operation keeps retrying timeouts and dropped connections, with
    /// exponential backoff, before it fails with [`Error::Connection`] (default 5 s).
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = timeout;
        self.unshared()
    }

    /// How often this process records its heartbeat (default a quarter of the heartbeat
    /// timeout, so two missed beats are survivable). A timer of its own: busy actors never
    /// delay it.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// After this long without a heartbeat a worker (Rust or Python) counts as dead and its
    /// fetched messages are requeued (default 60 s, Dramatiq's). Python workers only
    /// heartbeat as a side effect of their Redis commands, so in a mixed fleet keep it above
    /// the longest a busy Python worker goes without one (Dramatiq #692).
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// How often dead workers are looked for and expired dead letters purged (default half
    /// the heartbeat timeout).
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = Some(interval);
        self
    }

    /// Dead letters older than this are deleted, in every queue of the namespace (default
    /// 24 h; Dramatiq's is 7 days).
    pub fn dead_message_ttl(mut self, ttl: Duration) -> Self {
        self.dead_message_ttl = ttl;
        self
    }

    /// Whether idle consumers wait for Redis keyspace notifications (enabling them on the
    /// server with `CONFIG SET` when needed) instead of polling (default on).
    pub fn keyspace_notifications(mut self, enabled: bool) -> Self {
        self.keyspace_notifications = enabled;
        self
    }

    /// How often an idle consumer polls when notifications are unavailable (default 100 ms:
    /// the worst-case pickup latency then).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often an idle consumer re-polls even with notifications working, in case one was
    /// missed (default 1 s).
    pub fn safety_poll_interval(mut self, interval: Duration) -> Self {
        self.safety_poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Most delayed messages one process holds per queue until they are due (default
    /// 10 000); the rest wait in the delay queue, for this or another worker.
    ///
    /// A held message costs about 150 bytes of memory whatever its size: the worker
    /// keeps its id, due time and payload size, and reads the payload from Redis when it is
    /// due (Dramatiq holds whole messages, up to threads × 1000 of them). So 10 000 held
    /// messages take about 1.5 MB, whether they are 1 KB or 1 MB each.
    pub fn delay_prefetch(mut self, n: usize) -> Self {
        self.delay_prefetch = n.max(1);
        self
    }

    /// The largest encoded message, in bytes (default
    /// [8 MiB](crate::limits::DEFAULT_MAX_MESSAGE_SIZE), see [`limits`](crate::limits)):
    /// a larger send fails with [`Error::MessageTooLarge`] and stores nothing, and a worker
    /// dead-letters a larger message another producer stored, without transferring or
    /// decoding it. Lowers the warning threshold to it if that was higher.
    ///
    /// ```
    /// use actor_runtime::broker::RedisConfig;
    ///
    /// let config = RedisConfig::new("redis://127.0.0.1/0").max_message_size(256 << 10);
    /// assert_eq!(config.payload_limits().max_size, 262_144);
    /// assert_eq!(config.payload_limits().warn_size, 262_144);
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits = self.limits.with_max(bytes);
        self
    }

    /// The size past which an enqueued message is logged as a warning (default
    /// [1 MiB](crate::limits::DEFAULT_WARN_MESSAGE_SIZE)); at most the maximum message size.
    pub fn warn_message_size(mut self, bytes: usize) -> Self {
        self.limits.warn_size = bytes;
        self
    }

    /// The payload limits in effect.
    pub fn payload_limits(&self) -> crate::limits::PayloadLimits {
        self.limits
    }

    /// Connection settings changed: what is built from this config from now on gets its own
    /// connections, not those of what was built before.
    fn unshared(mut self) -> Self {
        self.conn = SharedConn::default();
        self
    }

    /// The heartbeat interval in effect.
    pub fn heartbeat_interval_or_default(&self) -> Duration {
        self.heartbeat_interval
            .unwrap_or(self.heartbeat_timeout / 4)
            .max(Duration::from_millis(10))
    }

    /// The maintenance interval in effect.
    pub fn maintenance_interval_or_default(&self) -> Duration {
        self.maintenance_interval
            .unwrap_or(self.heartbeat_timeout / 2)
            .max(Duration::from_millis(10))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_namespace(&self.namespace)
            .map_err(|why| Error::Config(format!("invalid Redis namespace: {why}")))?;
        self.limits
            .validate()
            .map_err(|why| Error::Config(format!("Redis broker: {why}")))?;
        check_url(&self.url).map_err(Error::Config)
    }
}

/// Why `ns` cannot be a key namespace, if it cannot.
fn check_namespace(ns: &str) -> std::result::Result<(), String> {
    if ns.is_empty() || ns.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{ns}` is not a namespace: it must be non-empty, without spaces"
        ));
    }
    Ok(())
}

/// Why `url` cannot reach a Redis server, if it cannot; never shows its secrets.
pub(crate) fn check_url(url: &str) -> std::result::Result<(), String> {
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "redis" | "unix" | "redis+unix" => {}
        "rediss" if cfg!(feature = "tls") => {}
        "rediss" => {
            return Err("a rediss:// (TLS) URL needs actor-runtime's `tls` feature".into());
        }
        _ => {
            return Err(format!(
                "`{}` is not a Redis URL (redis://, rediss:// or unix://)",
                redact(url)
            ))
        }
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(drop)
        .map_err(|err| invalid_url(url, &err))
}

/// The error of a URL redis-rs cannot use, without the URL's secrets.
pub(crate) fn invalid_url(url: &str, err: &redis::RedisError) -> String {
    // redis-rs' error may quote the URL it could not use.
    let why = err.to_string();
    let why = if why.contains(url) {
        "it does not parse".to_owned()
    } else {
        why
    };
    format!("invalid Redis URL `{}`: {why}", redact(url))
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("retry_timeout", &self.retry_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval_or_default())
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field(
                "maintenance_interval",
                &self.maintenance_interval_or_default(),
            )
            .field("dead_message_ttl", &self.dead_message_ttl)
            .field("keyspace_notifications", &self.keyspace_notifications)
            .field("poll_interval", &self.poll_interval)
            .field("safety_poll_interval", &self.safety_poll_interval)
            .field("delay_prefetch", &self.delay_prefetch)
            .field("limits", &self.limits)
            .finish()
    }
}

/// `url` without its secrets, for logs and errors: the password (in the user info, or a
/// `pass`/`password` query parameter of a `unix://` URL) becomes `***`, and every other query
/// value but `db` and `protocol` is hidden too. A URL that does not parse is not shown at
/// all.
pub(crate) fn redact(url: &str) -> String {
    crate::broker::redact_url(url, &["db", "protocol"])
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
    fn reads_every_variable() {
        let config = RedisConfig::from_lookup(env(&[
            ("REDIS_URL", "redis://u:p@h:1/3"),
            ("DRAMATIQ_NAMESPACE", "app"),
            ("REDIS_MAX_CONNECTIONS", "3"),
            ("REDIS_CONNECT_TIMEOUT_MS", "250"),
            ("REDIS_READ_TIMEOUT_MS", "750"),
            ("HEARTBEAT_TIMEOUT_MS", "8000"),
            ("DEAD_MESSAGE_TTL_MS", "1000"),
            ("REDIS_DELAY_PREFETCH", "250"),
        ]))
        .unwrap();
        assert_eq!(config.url, "redis://u:p@h:1/3");
        assert_eq!(config.namespace, "app");
        assert_eq!(config.max_connections, 3);
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.read_timeout, Duration::from_millis(750));
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(8));
        assert_eq!(
            config.heartbeat_interval_or_default(),
            Duration::from_secs(2)
        );
        assert_eq!(
            config.maintenance_interval_or_default(),
            Duration::from_secs(4)
        );
        assert_eq!(config.dead_message_ttl, Duration::from_secs(1));
        assert_eq!(config.delay_prefetch, 250);
    }

    #[test]
    fn durations_take_ms_or_units() {
        let config = RedisConfig::from_lookup(env(&[
            ("REDIS_URL", "redis://h"),
            ("REDIS_CONNECT_TIMEOUT_MS", "1500"),
            ("REDIS_READ_TIMEOUT_MS", "2s"),
            ("HEARTBEAT_TIMEOUT_MS", "1m30s"),
            ("DEAD_MESSAGE_TTL_MS", "7d"),
        ]))
        .unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(1500));
        assert_eq!(config.read_timeout, Duration::from_secs(2));
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(90));
        assert_eq!(config.dead_message_ttl, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = RedisConfig::from_lookup(env(&[("REDIS_URL", "redis://h")])).unwrap();
        assert_eq!(config.namespace, "dramatiq");
        assert_eq!(config.max_connections, 10);
        assert_eq!(config.read_timeout, Duration::from_secs(5));
        assert_eq!(
            config.heartbeat_interval_or_default(),
            Duration::from_secs(15)
        );
        assert_eq!(config.dead_message_ttl, Duration::from_secs(86_400));
        assert_eq!(config.delay_prefetch, 10_000);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = RedisConfig::from_lookup(env(&[
            ("REDIS_URL", "redis://h"),
            ("REDIS_READ_TIMEOUT_MS", "5 parsecs"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "REDIS_READ_TIMEOUT_MS must be a duration (ms, or amounts with units such as \
                 500ms, 30s, 10m, 1h30m, 7d), got `5 parsecs`: unknown time unit"
            ),
            "{err}"
        );
        let err = RedisConfig::from_lookup(env(&[
            ("REDIS_URL", "redis://h"),
            ("REDIS_MAX_CONNECTIONS", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("REDIS_MAX_CONNECTIONS"), "{err}");
        for bad in ["0", "-5", "ten", "1e4"] {
            let err = RedisConfig::from_lookup(env(&[
                ("REDIS_URL", "redis://h"),
                ("REDIS_DELAY_PREFETCH", bad),
            ]))
            .unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err}");
            assert!(err.to_string().contains("REDIS_DELAY_PREFETCH"), "{err}");
        }
        let err = RedisConfig::from_lookup(env(&[])).unwrap_err();
        assert!(err.to_string().contains("REDIS_URL"), "{err}");
    }

    #[test]
    fn every_bad_variable_is_reported_not_just_the_first() {
        let problems = RedisConfig::read_lookup(env(&[
            ("REDIS_URL", "http://u:hunter2@h"),
            ("DRAMATIQ_NAMESPACE", "my app"),
            ("REDIS_MAX_CONNECTIONS", "lots"),
            ("REDIS_CONNECT_TIMEOUT_MS", "0"),
            ("REDIS_READ_TIMEOUT_MS", "soon"),
            ("HEARTBEAT_TIMEOUT_MS", "-1"),
            ("DEAD_MESSAGE_TTL_MS", "1dd"),
            ("REDIS_DELAY_PREFETCH", "1e4"),
        ]))
        .unwrap_err();
        let text = problems.join("\n");
        assert_eq!(problems.len(), 8, "{text}");
        for key in [
            "REDIS_URL: `http://u:***@h/` is not a Redis URL",
            "DRAMATIQ_NAMESPACE: `my app` is not a namespace",
            "REDIS_MAX_CONNECTIONS must be a whole number ≥ 1, got `lots`",
            "REDIS_CONNECT_TIMEOUT_MS",
            "REDIS_READ_TIMEOUT_MS",
            "HEARTBEAT_TIMEOUT_MS",
            "DEAD_MESSAGE_TTL_MS",
            "REDIS_DELAY_PREFETCH",
        ] {
            assert!(text.contains(key), "missing {key:?} in {text}");
        }
        assert!(!text.contains("hunter2"), "{text}");
        let problems =
            RedisConfig::read_lookup(env(&[("REDIS_URL", "redis://h:notaport/0")])).unwrap_err();
        assert!(
            problems[0].starts_with("REDIS_URL: invalid Redis URL"),
            "{problems:?}"
        );
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        assert!(RedisConfig::new("http://h").validate().is_err());
        let tls = RedisConfig::new("rediss://h").validate();
        assert_eq!(tls.is_ok(), cfg!(feature = "tls"));
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn every_url_form_the_broker_accepts_is_shown_without_its_secret() {
        let secret = "Corr3ct-Horse";
        let cases = [
            ("redis://:Corr3ct-Horse@h:6379/2", "redis://:***@h:6379/2"),
            ("redis://app:Corr3ct-Horse@h/0", "redis://app:***@h/0"),
            (
                "rediss://app:Corr3ct-Horse@h:6380",
                "rediss://app:***@h:6380",
            ),
            ("redis://app:Corr3ct-Horse%2Fx@h", "redis://app:***@h"),
            ("redis://h:6379/0#Corr3ct-Horse", "redis://h:6379/0"),
            (
                "redis+unix:///run/redis.sock?db=3&pass=Corr3ct-Horse",
                "redis+unix:///run/redis.sock?db=3&pass=***",
            ),
            (
                "unix:///run/redis.sock?user=app&password=Corr3ct-Horse",
                "unix:///run/redis.sock?user=***&password=***",
            ),
            // An unescaped `/` or `#` in the password: the URL does not parse.
            (
                "redis://:Corr3ct/Horse#Pw@h/0",
                "<unparsable URL, not shown>",
            ),
            (
                "redis://:Corr3ct-Horse@h:notaport",
                "<unparsable URL, not shown>",
            ),
        ];
        for (url, shown) in cases {
            let redacted = redact(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(!redacted.contains(secret), "{url}");
            let debug = format!("{:?}", RedisConfig::new(url));
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn a_bad_url_error_never_shows_the_password() {
        for url in [
            "redis://:Corr3ct/Horse#Pw@host/0",
            "redis://:Corr3ct-Horse@h:notaport/0",
            "ftp://:Corr3ct-Horse@h/0",
        ] {
            let err = match RedisConfig::new(url).validate() {
                Err(err) => err,
                Ok(()) => crate::broker::redis::RedisBackend::new(RedisConfig::new(url))
                    .map(|_| ())
                    .unwrap_err(),
            };
            assert!(!err.to_string().contains("Corr3ct"), "{url}: {err}");
        }
    }
}

/// The connection layer of a [`RedisConfig`], shared by its clones while something uses it: a
/// results backend built from the broker's config rides on the broker's pool. Held weakly
/// (a config alone keeps no connection open) and type-erased: the settings know nothing of
/// the connection layer built from them (`conn.rs` stores and downcasts it).
#[derive(Clone)]
pub(crate) struct SharedConn(pub(crate) Arc<Mutex<Weak<dyn Any + Send + Sync>>>);

impl Default for SharedConn {
    fn default() -> Self {
        let none: Weak<()> = Weak::new();
        SharedConn(Arc::new(Mutex::new(none)))
    }
}
