//! Helpers shared by the integration tests: the test Redis, namespaces and waiting here; the
//! rest by what they drive.

use std::time::{Duration, Instant};

pub(crate) mod cli;
pub(crate) mod fault_worker;
pub(crate) mod http;
pub(crate) mod postgres;
pub(crate) mod proxy;
pub(crate) mod python;
pub(crate) mod rabbit_node;
pub(crate) mod rabbitmq;
pub(crate) mod redis;
pub(crate) mod results;

/// The Redis the tests use (`TEST_REDIS_URL`, default the local server).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A namespace no other test uses, so tests run in parallel on one Redis.
pub fn namespace() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// Resident memory of `pid` in MB (`VmRSS` of /proc/PID/status), as the supervisor reads it.
pub fn resident_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    kb / 1024
}

/// A random number in `range`.
pub(crate) fn random(range: std::ops::Range<u64>) -> u64 {
    range.start + (uuid::Uuid::new_v4().as_u128() % u128::from(range.end - range.start)) as u64
}

/// Polls `check` every 10 ms until it holds, failing after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Milliseconds since the epoch, as the broker stamps them.
pub(crate) fn now_ms() -> u64 {
    actor_runtime::message::now_ms()
}
