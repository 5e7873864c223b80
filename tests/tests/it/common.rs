//! Helpers shared by the integration tests.

/// The Redis the tests use (`TEST_REDIS_URL`, default the local server).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A namespace no other test uses, so tests run in parallel on one Redis.
pub fn namespace() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}
