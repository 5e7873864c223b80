//! Raw access to the test Redis, a broker per test namespace, and a private server to kill.

use std::process::Stdio;
use std::time::{Duration, Instant};

use actor_runtime::broker::Consumer;
use actor_runtime::broker::Delivery;
use actor_runtime::broker::RedisConfig;
use actor_runtime::{Broker, Message};
use redis::AsyncCommands;
use serde_json::Value;
use tokio::process::{Child, Command};

use super::{eventually, redis_url};

/// The test server's URL with database `db`.
pub(crate) fn url_with_db(db: i64) -> String {
    let url = redis_url();
    let base = match url.rsplit_once('/') {
        Some((base, tail))
            if base.contains("://")
                && !base.ends_with('/')
                && tail.chars().all(|c| c.is_ascii_digit()) =>
        {
            base.to_owned()
        }
        _ => url.trim_end_matches('/').to_owned(),
    };
    format!("{base}/{db}")
}

/// A raw connection to the test server's `db`.
pub(crate) async fn raw_db(db: i64) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url_with_db(db))
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("the tests need Redis at TEST_REDIS_URL or 127.0.0.1:6379")
}

/// A raw connection to the test server.
pub(crate) async fn raw() -> redis::aio::MultiplexedConnection {
    raw_db(0).await
}

/// Quick timers, so maintenance and polling tests finish fast.
pub(crate) fn config(ns: &str) -> RedisConfig {
    RedisConfig::new(redis_url()).namespace(ns)
}

/// A Redis broker on `config`.
pub(crate) fn broker(config: RedisConfig) -> Broker {
    Broker::redis(config).expect("valid config")
}

/// Deletes every key of the namespace and closes the broker.
pub(crate) async fn cleanup(broker: &Broker, db: i64) {
    broker.close().await;
    let mut conn = raw_db(db).await;
    let keys: Vec<String> = conn
        .keys(format!("{}:*", broker.describe().namespace.unwrap()))
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: () = conn.del(keys).await.unwrap();
    }
}

/// The payload stored for `id` in `hash`, as JSON.
pub(crate) async fn payload(
    conn: &mut redis::aio::MultiplexedConnection,
    hash: &str,
    id: &str,
) -> Value {
    let raw: Option<String> = conn.hget(hash, id).await.unwrap();
    serde_json::from_str(&raw.unwrap_or_else(|| panic!("no payload for {id} in {hash}"))).unwrap()
}

/// A raw message to `queue` (actor `redis_noop`, no worker runs it) carrying `n`.
pub(crate) fn msg(queue: &str, n: i64) -> Message {
    Message::new(queue, "redis_noop", vec![n.into()])
}

/// The first argument of each delivered message.
pub(crate) fn args(batch: &[Delivery]) -> Vec<Value> {
    batch
        .iter()
        .map(|d| d.message.as_ref().unwrap().args[0].clone())
        .collect()
}

/// Fetches until `n` deliveries arrived, failing after 10 s.
pub(crate) async fn fetch_n(consumer: &dyn Consumer, n: usize) -> Vec<Delivery> {
    let mut all = Vec::new();
    let start = Instant::now();
    while all.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "fetched only {}",
            all.len()
        );
        all.extend(
            consumer
                .fetch(n - all.len(), Duration::from_secs(2))
                .await
                .unwrap(),
        );
    }
    all
}

/// A connection to the server at `url`.
pub(crate) async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A private Redis server (with an append-only file, so a restart keeps the data).
pub(crate) struct PrivateRedis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    /// On a free port, its files in a fresh temporary directory, with `extra` settings.
    pub(crate) async fn fresh(extra: &[&str]) -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("private-redis-{}", uuid::Uuid::new_v4()));
        PrivateRedis::start_with(port, dir, extra).await
    }

    /// On `port`, its files in `dir`.
    pub(crate) async fn start(port: u16, dir: std::path::PathBuf) -> PrivateRedis {
        PrivateRedis::start_with(port, dir, &[]).await
    }

    async fn start_with(port: u16, dir: std::path::PathBuf, extra: &[&str]) -> PrivateRedis {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}/0");
        eventually(Duration::from_secs(10), "redis-server to listen", || {
            let url = url.clone();
            async move {
                match redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                {
                    Ok(mut conn) => redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        PrivateRedis { child, port, dir }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: nothing is saved but what the append-only file has).
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts the server again on its port and files, once it was killed.
    pub(crate) async fn start_again(&self) -> PrivateRedis {
        PrivateRedis::start(self.port, self.dir.clone()).await
    }

    /// Stops the server (SIGTERM) and starts it again on its port and files.
    pub(crate) async fn restart(mut self) -> PrivateRedis {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        PrivateRedis::start(self.port, self.dir.clone()).await
    }
}
