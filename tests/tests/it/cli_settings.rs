//! The CLI's settings through the real binary: one validation pass, one error style,
//! `--help`, `--version`, and an unreachable broker at start-up.

use super::cli::{Proc, WORKER};

#[tokio::test]
async fn worker_and_broker_settings_are_checked_in_one_pass() {
    let mut worker = Proc::spawn(
        WORKER,
        &[],
        &[
            ("WORKER_THREADS", "lots"),
            ("WORKER_PROCESSES", "0"),
            ("WORKER_SHUTDOWN_TIMEOUT", "soon"),
            ("METRICS_ADDR", "localhost"),
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("REDIS_MAX_CONNECTIONS", "many"),
        ],
    );
    assert_eq!(worker.exit().await.code(), Some(2));
    let logs = worker.dump();
    assert!(logs.contains("5 invalid settings:"), "{logs}");
    for name in [
        "WORKER_THREADS",
        "WORKER_PROCESSES",
        "WORKER_SHUTDOWN_TIMEOUT",
        "METRICS_ADDR",
        "REDIS_MAX_CONNECTIONS must be a whole number ≥ 1, got `many`",
    ] {
        assert!(logs.contains(name), "{name} missing:\n{logs}");
    }
}

#[tokio::test]
async fn a_bad_redis_url_is_named_once_by_the_worker_and_the_operator_commands() {
    for args in [&["-p", "1"][..], &["queues"], &["enqueue", "cli_record"]] {
        let mut proc = Proc::spawn(WORKER, args, &[("REDIS_URL", "localhost:6379")]);
        assert_eq!(proc.exit().await.code(), Some(2), "{args:?}");
        let logs = proc.dump();
        assert!(
            logs.contains(
                "invalid setting: REDIS_URL: `localhost:6379` is not a Redis URL (redis://, \
                 rediss:// or unix://)"
            ),
            "{args:?}: {logs}"
        );
        assert!(!logs.contains("configuration error"), "{args:?}: {logs}");
    }
}
