//! Helpers shared by the integration tests.

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
