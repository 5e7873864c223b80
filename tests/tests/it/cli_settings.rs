//! The CLI's settings through the real binary: one validation pass, one error style,
//! `--help`, `--version`, and an unreachable broker at start-up.

use crate::support::cli::{Proc, WORKER};

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

#[tokio::test]
async fn help_lists_the_broker_variables_and_version_is_the_apps() {
    let run = |bin: &'static str, arg: &'static str| async move {
        let output = tokio::process::Command::new(bin)
            .arg(arg)
            .output()
            .await
            .expect("run the CLI");
        assert!(output.status.success(), "{bin} {arg}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let help = run(WORKER, "--help").await;
    for name in [
        "REDIS_URL",
        "DRAMATIQ_NAMESPACE",
        "REDIS_MAX_CONNECTIONS",
        "REDIS_CONNECT_TIMEOUT_MS",
        "REDIS_READ_TIMEOUT_MS",
        "REDIS_DELAY_PREFETCH",
        "HEARTBEAT_TIMEOUT_MS",
        "DEAD_MESSAGE_TTL_MS",
        "WORKER_PROCESSES",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(name), "{name} missing from --help:\n{help}");
    }
    // `cli_worker` passes its crate's version; `cli_no_actors` calls `cli::main()`.
    assert_eq!(
        run(WORKER, "--version").await,
        format!("cli_worker {}\n", env!("CARGO_PKG_VERSION"))
    );
    let library = run(env!("CARGO_BIN_EXE_cli_no_actors"), "--version").await;
    assert!(
        library.starts_with("cli_no_actors (actor-runtime "),
        "{library}"
    );
}

#[tokio::test]
async fn a_closed_redis_port_is_exit_3_at_once_without_heartbeat_warnings() {
    // Port 1: nothing listens there.
    let env = [("REDIS_URL", "redis://127.0.0.1:1/0")];
    for args in [
        &["-p", "1"][..],
        &["-p", "2"],
        &["queues"],
        &["enqueue", "cli_record", "--args", r#"["k"]"#],
    ] {
        let started = std::time::Instant::now();
        let mut proc = Proc::spawn(WORKER, args, &env);
        let status = proc.exit().await;
        let took = started.elapsed();
        let logs = proc.dump();
        assert_eq!(status.code(), Some(3), "{args:?}: {logs}");
        // The broker's own retry bound is 5 s; a refused connection is not worth waiting for.
        assert!(
            took < std::time::Duration::from_secs(4),
            "{args:?} took {took:?}: {logs}"
        );
        assert!(!logs.contains("heartbeat"), "{args:?}: {logs}");
        assert!(
            logs.contains("Connection refused") || logs.contains("connection"),
            "{args:?}: {logs}"
        );
    }
}

/// Runs the worker binary without a broker in the environment; returns (code, stdout, stderr).
async fn run_without_broker(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = tokio::process::Command::new(WORKER)
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("APP_ENV")
        .env_remove("WORKER_SHUTDOWN_TIMEOUT")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn durations_take_one_grammar_in_flags_and_environment() {
    let shutdown_timeout = |args: &'static [&'static str], env: &'static [(&str, &str)]| async move {
        let (code, stdout, stderr) = run_without_broker(args, env).await;
        assert_eq!(code, 0, "{args:?}: {stdout}\n{stderr}");
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        report["worker"]["shutdown_timeout"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let flag = shutdown_timeout(&["check", "--json", "--shutdown-timeout", "1h30m"], &[]).await;
    assert_eq!(flag, "90m");
    let variable = shutdown_timeout(
        &["check", "--json"],
        &[("WORKER_SHUTDOWN_TIMEOUT", "2m 30s")],
    )
    .await;
    assert_eq!(variable, "150s");
    let ms = shutdown_timeout(&["check", "--json", "--shutdown-timeout", "1500"], &[]).await;
    assert_eq!(ms, "1500ms");

    // `enqueue --delay` reads the same grammar (and then wants a broker, which is not set).
    let enqueue = |delay: &'static str| async move {
        run_without_broker(
            &[
                "enqueue",
                "cli_record",
                "--args",
                r#"["k"]"#,
                "--delay",
                delay,
            ],
            &[],
        )
        .await
    };
    let (code, _, stderr) = enqueue("1h30m").await;
    assert_eq!(code, 2, "{stderr}");
    assert!(!stderr.contains("invalid value"), "{stderr}");
    assert!(stderr.contains("set REDIS_URL"), "{stderr}");
    let (code, _, stderr) = enqueue("soon").await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid value 'soon' for '--delay <DURATION>'"),
        "{stderr}"
    );

    let (code, _, stderr) = run_without_broker(&["check", "--shutdown-timeout", "1h30"], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--shutdown-timeout must be a duration (ms, or amounts with units"),
        "{stderr}"
    );
    assert!(stderr.contains("got `1h30`: time unit needed"), "{stderr}");
}
