//! Helpers for the results, composition and rate-limit tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::redis_url;

/// Values recorded by actors, by test key.
pub fn record(key: &str, value: Value) {
    log()
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push(value);
}

/// What actors recorded under `key`.
pub fn recorded(key: &str) -> Vec<Value> {
    log().lock().unwrap().get(key).cloned().unwrap_or_default()
}

fn log() -> &'static Mutex<HashMap<String, Vec<Value>>> {
    static LOG: OnceLock<Mutex<HashMap<String, Vec<Value>>>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

/// A fresh key for one test.
pub fn key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A Redis connection for checks and cleanup.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the tests need Redis on 127.0.0.1:6379 (or TEST_REDIS_URL)")
}

/// Deletes every key starting with `prefix`.
pub async fn delete_keys(prefix: &str) {
    let mut conn = redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// The Python with Dramatiq 2.2.1: `$DRAMATIQ_PYTHON`, else the workspace's `.venv`.
pub fn python() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("DRAMATIQ_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide a Python with dramatiq[redis]==2.2.1 (DRAMATIQ_PYTHON)"
    );
    eprintln!("skipping: no Python with Dramatiq (set DRAMATIQ_PYTHON or create .venv)");
    None
}

/// Runs `tests/python/<script>` with `args`; returns its stdout as JSON.
pub async fn run_python(python: &PathBuf, script: &str, args: &[&str]) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let output = tokio::process::Command::new(python)
        .arg(path)
        .args(args)
        .env("REDIS_URL", redis_url())
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "python {script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "python printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
