//! The worker binary the CLI tests run: `actor_runtime::cli::main()` over a few actors that
//! append one JSON line per run to the file named by `CLI_TEST_OUT`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use actor_runtime::actor;
use actor_runtime::cli::App;
use actor_runtime::results::{RedisResultBackend, Results};
use serde_json::{json, Value};

fn record(event: Value) {
    let Ok(path) = std::env::var("CLI_TEST_OUT") else {
        return;
    };
    let mut line = event.to_string();
    line.push('\n');
    // One write per line with O_APPEND: lines from several processes do not interleave.
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Records that it ran.
#[actor(queue_name = "cli")]
async fn cli_record(key: String) {
    record(json!({"actor": "cli_record", "key": key, "pid": std::process::id()}));
}

/// Sleeps, then records that it ran.
#[actor(queue_name = "cli")]
async fn cli_sleep(key: String, ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    record(json!({"actor": "cli_sleep", "key": key, "pid": std::process::id()}));
}

/// Blocks its runtime thread (the mistake of calling a blocking client from async code),
/// then records that it ran. No retries: a second run could only be a duplicate delivery.
#[actor(queue_name = "cli", max_retries = 0)]
async fn cli_block(key: String, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    record(json!({"actor": "cli_block", "key": key, "pid": std::process::id()}));
}

/// Writes `bytes` to stdout as they are (invalid UTF-8, a forged readiness report...),
/// then a line of its own, then records that it ran.
#[actor(queue_name = "cli", max_retries = 0)]
async fn cli_print(key: String, bytes: Vec<u8>) {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes).expect("write to stdout");
    writeln!(stdout, "printed {key}").expect("write to stdout");
    stdout.flush().expect("flush stdout");
    drop(stdout);
    record(json!({"actor": "cli_print", "key": key, "pid": std::process::id()}));
}

/// Records the size of a (large) payload it received.
#[actor(queue_name = "cli")]
async fn cli_blob(key: String, blob: String) {
    record(json!({"actor": "cli_blob", "key": key, "len": blob.len(), "pid": std::process::id()}));
}

/// Always fails, without retries: its messages are dead-lettered.
#[actor(queue_name = "cli", max_retries = 0)]
async fn cli_fail(key: String) -> Result<(), String> {
    Err(format!("{key} always fails"))
}

/// A plain `fn` that overruns its 200 ms time limit: it sleeps `ms` on its thread, which the
/// worker abandons.
#[actor(queue_name = "cli", time_limit = 200, max_retries = 0)]
fn cli_stuck(key: String, ms: u64) {
    record(json!({"actor": "cli_stuck", "key": key, "pid": std::process::id()}));
    std::thread::sleep(Duration::from_millis(ms));
}

/// Logs a line of its own, which the worker's `message` span gives the message's context.
#[actor(queue_name = "cli")]
async fn cli_log(key: String) {
    tracing::info!(key, "cli_log says hello");
}

/// `cli_log` as a plain `fn`, which runs on the worker's thread pool.
#[actor(queue_name = "cli")]
fn cli_log_fn(key: String) {
    tracing::info!(key, "cli_log_fn says hello");
}

/// Always fails; retried twice, quickly, then dead-lettered.
#[actor(
    queue_name = "cli",
    max_retries = 2,
    min_backoff = 10,
    max_backoff = 20
)]
async fn cli_fail_retried(key: String) -> Result<(), String> {
    record(json!({"actor": "cli_fail_retried", "key": key, "pid": std::process::id()}));
    Err(format!("{key} always fails"))
}

/// Squares `x`; its result is stored when the worker runs with `CLI_TEST_RESULTS`.
#[actor(queue_name = "cli", store_results = true)]
async fn cli_square(x: i64) -> i64 {
    x * x
}

fn main() -> ExitCode {
    App::new()
        .version(env!("CARGO_PKG_VERSION"))
        .configure(|broker| {
            // Results in Redis, in the namespace `CLI_TEST_RESULTS` names: the documented
            // way to add middleware to a CLI worker.
            if let Ok(namespace) = std::env::var("CLI_TEST_RESULTS") {
                let url = std::env::var("REDIS_URL")?;
                let backend = RedisResultBackend::new(url)?.namespace(namespace);
                broker.add_middleware(Results::new(backend));
            }
            if std::env::var("CLI_TEST_BAD_CONFIGURE").is_ok() {
                return Err("no results store at the given address".into());
            }
            Ok(())
        })
        .run()
}

// Every second: the periodic jobs' CLI tests run `scheduler` replicas and count the ticks
// in the `cli` queue (no worker consumes it there).
actor_runtime::schedule!(
    name = "cli-every-second",
    every = "1s",
    send = cli_record::message("tick".into()),
);
