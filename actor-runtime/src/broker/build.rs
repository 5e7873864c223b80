//! Building a broker: a backend plus Dramatiq's default middleware, or one chosen from the
//! environment.

use super::{Backend, Broker, StubBackend};
use crate::error::{Error, Result};
use crate::middleware::default_middleware;

impl Broker {
    /// A broker over `backend` with Dramatiq's default middleware: [`AgeLimit`],
    /// [`TimeLimit`], [`ShutdownNotifications`], [`Callbacks`], [`Pipelines`], [`Retries`],
    /// then [`UniqueJobs`](crate::unique::UniqueJobs) (see [`Broker::with_middleware`] for another stack).
    ///
    /// [`AgeLimit`]: crate::middleware::AgeLimit
    /// [`TimeLimit`]: crate::middleware::TimeLimit
    /// [`ShutdownNotifications`]: crate::middleware::ShutdownNotifications
    /// [`Callbacks`]: crate::middleware::Callbacks
    /// [`Pipelines`]: crate::middleware::Pipelines
    /// [`Retries`]: crate::middleware::Retries
    ///
    /// ```
    /// use actor_runtime::Broker;
    /// use actor_runtime::broker::StubBackend;
    /// use actor_runtime::middleware::Retries;
    ///
    /// let broker = Broker::new(StubBackend::new());
    /// assert!(broker.find::<Retries>().is_some());
    /// ```
    pub fn new(backend: impl Backend) -> Broker {
        Broker::with_middleware(backend, default_middleware())
    }

    /// An in-memory broker ([`StubBackend`]) with the default middleware: the zero-setup
    /// default and the test double. Its messages live only in this process.
    ///
    /// ```
    /// assert_eq!(actor_runtime::Broker::stub().kind(), "stub");
    /// ```
    pub fn stub() -> Broker {
        Broker::new(StubBackend::new())
    }

    /// A Redis broker ([`RedisBackend`](super::RedisBackend)) with the default middleware.
    /// Does not connect yet: the first command does (see [`Broker::ping`]).
    ///
    /// ```
    /// use actor_runtime::Broker;
    /// use actor_runtime::broker::RedisConfig;
    ///
    /// let broker = Broker::redis(RedisConfig::new("redis://127.0.0.1:6379/0").namespace("app")).unwrap();
    /// assert_eq!(broker.kind(), "redis");
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(config: super::RedisConfig) -> Result<Broker> {
        Ok(Broker::new(super::RedisBackend::new(config)?))
    }

    /// A RabbitMQ broker ([`RabbitmqBackend`](super::RabbitmqBackend)) with the default
    /// middleware. Does not connect yet: the first command does (see [`Broker::ping`]).
    ///
    /// ```
    /// use actor_runtime::Broker;
    /// use actor_runtime::broker::RabbitmqConfig;
    ///
    /// let broker = Broker::rabbitmq(RabbitmqConfig::new("amqp://127.0.0.1:5672/%2f")).unwrap();
    /// assert_eq!(broker.kind(), "rabbitmq");
    /// ```
    #[cfg(feature = "rabbitmq")]
    pub fn rabbitmq(config: super::RabbitmqConfig) -> Result<Broker> {
        Ok(Broker::new(super::RabbitmqBackend::new(config)?))
    }

    /// A broker chosen from the environment, the choice and its reason logged:
    ///
    /// - `BROKER=redis|rabbitmq|stub` chooses explicitly;
    /// - else `RABBITMQ_URL` set means RabbitMQ (its other settings from `RABBITMQ_*`, see
    ///   `RabbitmqConfig`, feature `rabbitmq`), even with `REDIS_URL` beside it: Redis
    ///   then serves results and rate limits, as with Dramatiq;
    /// - else `REDIS_URL` set means Redis (its other settings from `REDIS_*`, see
    ///   `RedisConfig::from_env`, feature `redis`);
    /// - else the in-memory stub with a warning, or an error when the environment says
    ///   production ([`environment_is_production`](super::environment_is_production)):
    ///   never a silent in-memory broker in production.
    pub fn from_env() -> Result<Broker> {
        let choice = choose(&|key| std::env::var(key).ok())?;
        match choice {
            Choice::Redis(why) => {
                tracing::info!(broker = "redis", why, "broker chosen");
                let url = std::env::var("REDIS_URL").unwrap_or_default();
                redis_from_env(url.trim())
            }
            Choice::Rabbitmq(why) => {
                tracing::info!(broker = "rabbitmq", why, "broker chosen");
                rabbitmq_from_env()
            }
            Choice::Stub(why) => {
                tracing::warn!(
                    broker = "stub",
                    why,
                    "using the in-memory stub broker; messages live only in this process"
                );
                Ok(Broker::stub())
            }
        }
    }
}

/// Which broker the environment asks for, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    Redis(&'static str),
    Rabbitmq(&'static str),
    Stub(&'static str),
}

/// The broker the environment `env` asks for: `BROKER`, else `RABBITMQ_URL`, else
/// `REDIS_URL`, else the stub (an error in production).
pub(crate) fn choose(env: &dyn Fn(&str) -> Option<String>) -> Result<Choice> {
    let set = |key: &str| env(key).is_some_and(|v| !v.trim().is_empty());
    match env("BROKER")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("redis") => return Ok(Choice::Redis("BROKER=redis")),
        Some("rabbitmq") => return Ok(Choice::Rabbitmq("BROKER=rabbitmq")),
        Some("stub") => return Ok(Choice::Stub("BROKER=stub")),
        Some("") | None => {}
        Some(other) => {
            return Err(Error::Config(format!(
                "BROKER must be `redis`, `rabbitmq` or `stub`, got `{other}`"
            )))
        }
    }
    if set("RABBITMQ_URL") {
        Ok(Choice::Rabbitmq(if set("REDIS_URL") {
            "RABBITMQ_URL is set (REDIS_URL beside it serves results and rate limits)"
        } else {
            "RABBITMQ_URL is set"
        }))
    } else if set("REDIS_URL") {
        Ok(Choice::Redis("REDIS_URL is set"))
    } else if super::is_production(env) {
        Err(Error::Config(
            "REDIS_URL is not set (nor RABBITMQ_URL) but the environment is production; \
             refusing to use the in-memory stub broker (messages would be lost on exit)"
                .into(),
        ))
    } else {
        Ok(Choice::Stub("neither RABBITMQ_URL nor REDIS_URL is set"))
    }
}

/// The RabbitMQ broker of `RABBITMQ_URL` and the `RABBITMQ_*` settings.
fn rabbitmq_from_env() -> Result<Broker> {
    #[cfg(feature = "rabbitmq")]
    {
        Broker::rabbitmq(super::RabbitmqConfig::from_env()?)
    }
    #[cfg(not(feature = "rabbitmq"))]
    {
        Err(Error::Config(
            "RabbitMQ is chosen but actor-runtime was built without its `rabbitmq` feature".into(),
        ))
    }
}

/// The Redis broker for `url` (from `REDIS_URL`), with the other settings from the
/// environment.
fn redis_from_env(url: &str) -> Result<Broker> {
    #[cfg(feature = "redis")]
    {
        Broker::redis(super::RedisConfig::from_env()?.url(url))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err(Error::Config(
            "Redis is chosen but actor-runtime was built without its `redis` feature".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn rabbitmq_wins_over_redis_and_broker_overrides_both() {
        let both = [("RABBITMQ_URL", "amqp://h"), ("REDIS_URL", "redis://h")];
        assert!(
            matches!(choose(&env(&both)).unwrap(), Choice::Rabbitmq(why) if why.contains("REDIS_URL"))
        );
        let forced = [both[0], both[1], ("BROKER", "redis")];
        assert_eq!(
            choose(&env(&forced)).unwrap(),
            Choice::Redis("BROKER=redis")
        );
        assert_eq!(
            choose(&env(&[("REDIS_URL", "redis://h")])).unwrap(),
            Choice::Redis("REDIS_URL is set")
        );
        assert!(matches!(choose(&env(&[])).unwrap(), Choice::Stub(_)));
        assert!(choose(&env(&[("BROKER", "kafka")])).is_err());
    }

    #[test]
    fn production_without_a_broker_url_is_an_error() {
        let err = choose(&env(&[("APP_ENV", "production")])).unwrap_err();
        assert!(err.to_string().contains("production"), "{err}");
        assert!(choose(&env(&[
            ("APP_ENV", "production"),
            ("RABBITMQ_URL", "amqp://h")
        ]))
        .is_ok());
    }
}
