//! Building a broker: a backend plus Dramatiq's default middleware, or one chosen from the
//! environment.

use super::{Backend, Broker, StubBackend};
use crate::error::{Error, Result};
use crate::middleware::default_middleware;

impl Broker {
    /// A broker over `backend` with Dramatiq's default middleware: [`AgeLimit`],
    /// [`TimeLimit`], [`ShutdownNotifications`], [`Callbacks`], [`Pipelines`], [`Retries`]
    /// (see [`Broker::with_middleware`] for another stack).
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

    /// A broker chosen from the environment: `REDIS_URL` set means Redis (its other settings
    /// from `REDIS_*`, see [`RedisConfig::from_env`](super::RedisConfig::from_env)); unset
    /// means the in-memory stub with a warning, or an error when the environment says
    /// production ([`environment_is_production`](super::environment_is_production)): never a
    /// silent in-memory broker in production.
    pub fn from_env() -> Result<Broker> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => redis_from_env(url.trim()),
            _ if super::environment_is_production() => Err(Error::Config(
                "REDIS_URL is not set but the environment is production; refusing to use the \
                 in-memory stub broker (messages would be lost on exit)"
                    .into(),
            )),
            _ => {
                tracing::warn!(
                    "REDIS_URL is not set: using the in-memory stub broker; messages live only \
                     in this process"
                );
                Ok(Broker::stub())
            }
        }
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
            "REDIS_URL is set but actor-runtime was built without its `redis` feature".into(),
        ))
    }
}
