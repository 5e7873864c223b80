//! What the worker CLI tells: its start-up lines (broker, redacted URL, database, namespace,
//! queues and actors, once per process), `check`, and per-message lines that carry the
//! message's context, actors' own lines included. On Redis, a namespace per test.

use serde_json::{json, Value};

use actor_runtime::Message;

use crate::support::cli::{kill, ready_workers, Fixture, Proc, WORKER};

const SECRET: &str = "S3cretPw";

/// The test Redis's URL with a password in it (Redis accepts any for its `nopass` default
/// user), and that URL redacted; `None` if the URL already has credentials.
fn url_with_password(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("redis://").filter(|r| !r.contains('@'))?;
    Some((
        format!("redis://default:{SECRET}@{rest}"),
        format!("redis://default:***@{rest}"),
    ))
}

/// Runs the CLI to its end with exactly `env` (and no inherited broker settings).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = tokio::process::Command::new(WORKER)
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("DRAMATIQ_NAMESPACE")
        .env_remove("RUST_LOG")
        .env_remove("APP_ENV")
        .env_remove("WORKER_PROCESSES")
        .env_remove("WORKER_THREADS")
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

fn lines_with<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_logs_the_broker_namespace_queues_and_actors_once() {
    let fx = Fixture::new();
    let (url, shown) = url_with_password(&fx.url).unwrap_or((fx.url.clone(), fx.url.clone()));
    let mut env = fx.env();
    env.retain(|(k, _)| *k != "REDIS_URL");
    env.push(("REDIS_URL", &url));
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2"], &env);
    ready_workers(&mut supervisor, 2).await;
    kill("TERM", supervisor.pid());
    assert_eq!(
        supervisor.exit().await.code(),
        Some(0),
        "{}",
        supervisor.dump()
    );
    let lines = supervisor.seen.clone();

    let started = lines_with(&lines, "worker started");
    let starting = lines_with(&lines, "starting worker processes");
    assert_eq!(
        (started.len(), starting.len()),
        (2, 1),
        "{}",
        supervisor.dump()
    );
    for line in started.iter().chain(&starting) {
        assert_eq!(line["broker"], "redis", "{line}");
        assert_eq!(line["url"], shown.as_str(), "{line}");
        assert_eq!(line["db"], 0, "{line}");
        assert_eq!(line["namespace"], fx.ns.as_str(), "{line}");
        // Real JSON arrays, not Debug text.
        let queues = line["queues"].as_array().expect("queues is an array");
        assert!(queues.contains(&json!("cli")), "{line}");
        let actors = line["actors"].as_array().expect("actors is an array");
        assert!(actors.contains(&json!("cli_record")), "{line}");
        assert!(actors.contains(&json!("cli_log_fn")), "{line}");
    }
    // One listing of the actors per process, not one line per actor and process.
    let listings = lines.iter().filter(|l| l.get("actors").is_some()).count();
    assert_eq!(listings, 3, "{}", supervisor.dump());
    assert!(lines_with(&lines, "actor registered").is_empty());
    assert!(!supervisor.dump().contains(SECRET), "{}", supervisor.dump());
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_resolved_broker_and_settings_and_tests_the_connection() {
    let fx = Fixture::new();
    let (url, shown) = url_with_password(&fx.url).unwrap_or((fx.url.clone(), fx.url.clone()));
    let env = [
        ("REDIS_URL", url.as_str()),
        ("DRAMATIQ_NAMESPACE", fx.ns.as_str()),
    ];

    let (code, stdout, stderr) = run(&["check", "-t", "3", "-Q", "cli"], &env).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for needle in [
        "kind ",
        "redis",
        shown.as_str(),
        fx.ns.as_str(),
        "connection: ok",
        "threads ",
        "queues: cli\n",
        "cli_record",
    ] {
        assert!(stdout.contains(needle), "no `{needle}` in:\n{stdout}");
    }

    let (code, stdout, stderr) = run(&["check", "--json"], &env).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["broker"]["kind"], "redis");
    assert_eq!(report["broker"]["url"], shown.as_str());
    assert_eq!(report["broker"]["db"], 0);
    assert_eq!(report["broker"]["namespace"], fx.ns.as_str());
    assert_eq!(report["broker"]["settings"]["max_connections"], "10");
    assert_eq!(report["connection"]["ok"], true);
    assert_eq!(report["worker"]["processes"], 2);
    assert_eq!(report["worker"]["prefetch"], Value::Null);
    assert!(report["queues"].as_array().unwrap().contains(&json!("cli")));

    // Nothing answers on port 1: exit 3, and still no password anywhere.
    let down = url.replace(":6379", ":1");
    let down_env = [("REDIS_URL", down.as_str())];
    for json_flag in [false, true] {
        let args: &[&str] = if json_flag {
            &["check", "--json"]
        } else {
            &["check"]
        };
        let (code, stdout, stderr) = run(args, &down_env).await;
        assert_eq!(code, 3, "{stdout}\n{stderr}");
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "{stdout}\n{stderr}"
        );
        if json_flag {
            let report: Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(report["connection"]["ok"], false, "{stdout}");
        } else {
            assert!(stdout.contains("connection: FAILED"), "{stdout}");
        }
    }

    // A bad setting is exit 2, as for the worker.
    let (code, _, stderr) = run(&["check"], &[("WORKER_THREADS", "many")]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("WORKER_THREADS"), "{stderr}");

    // Without REDIS_URL: the stub, said plainly.
    let (code, stdout, stderr) = run(&["check", "--json"], &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["broker"]["kind"], "stub");
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_verbose_each_message_is_logged_in_its_context_actor_lines_included() {
    let fx = Fixture::new();
    let mut worker = fx.spawn(&["-p", "1", "-t", "2", "-Q", "cli", "-v"]);
    worker.wait_message("worker started").await;
    for actor in ["cli_log", "cli_log_fn"] {
        let message = Message::new("cli", actor, vec![json!("k1")]);
        let sent = fx.broker.enqueue(message, None).await.unwrap();
        let id = sent.message_id.as_str();
        let mine = |l: &Value| l["message_id"] == id;
        let said = format!("{actor} says hello");
        let received = worker
            .wait_for("message received", |l| {
                mine(l) && l["message"] == "message received"
            })
            .await;
        assert_eq!(received["level"], "DEBUG");
        let own = worker
            .wait_for(&said, |l| l["message"] == said.as_str())
            .await;
        assert_eq!(own["message_id"], id, "{own}");
        assert_eq!(own["actor"], actor, "{own}");
        assert_eq!(own["queue"], "cli", "{own}");
        assert_eq!(own["retries"], 0, "{own}");
        assert_eq!(own["key"], "k1", "{own}");
        let finished = worker
            .wait_for("message finished", |l| {
                mine(l) && l["message"] == "message finished"
            })
            .await;
        assert_eq!(finished["actor"], actor, "{finished}");
        assert_eq!(finished["outcome"], "succeeded", "{finished}");
        assert!(finished["duration_ms"].is_f64(), "{finished}");
    }
    kill("TERM", worker.pid());
    assert!(worker.exit().await.success(), "{}", worker.dump());
    // Numbers, not a struct's Debug text.
    let stopped = lines_with(&worker.seen, "worker stopped");
    assert_eq!(stopped.len(), 1, "{}", worker.dump());
    assert_eq!(stopped[0]["succeeded"], 2, "{}", stopped[0]);
    assert_eq!(stopped[0]["failed"], 0, "{}", stopped[0]);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_level_an_actors_own_lines_carry_its_message() {
    let fx = Fixture::new();
    let mut worker = fx.spawn(&["-p", "1", "-t", "2", "-Q", "cli"]);
    worker.wait_message("worker started").await;
    for actor in ["cli_log", "cli_log_fn"] {
        let message = Message::new("cli", actor, vec![json!("k2")]);
        let sent = fx.broker.enqueue(message, None).await.unwrap();
        let said = format!("{actor} says hello");
        let own = worker
            .wait_for(&said, |l| l["message"] == said.as_str())
            .await;
        assert_eq!(own["level"], "INFO", "{own}");
        assert_eq!(own["message_id"], sent.message_id.as_str(), "{own}");
        assert_eq!(own["actor"], actor, "{own}");
        assert_eq!(own["queue"], "cli", "{own}");
        assert_eq!(own["retries"], 0, "{own}");
        assert_eq!(own["key"], "k2", "{own}");
    }
    kill("TERM", worker.pid());
    assert!(worker.exit().await.success(), "{}", worker.dump());
    // The per-message lines stay at debug level.
    assert!(
        lines_with(&worker.seen, "message received").is_empty(),
        "{}",
        worker.dump()
    );
    // The worker's own lines outside an actor carry no message.
    let stopped = lines_with(&worker.seen, "worker stopped");
    assert!(stopped[0].get("message_id").is_none(), "{}", stopped[0]);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_failure_is_one_error_line_with_one_retry_count() {
    let fx = Fixture::new();
    let mut worker = fx.spawn(&["-p", "1", "-Q", "cli"]);
    worker.wait_message("worker started").await;
    let message = Message::new("cli", "cli_fail_retried", vec![json!("f1")]);
    let sent = fx.broker.enqueue(message, None).await.unwrap();
    let id = sent.message_id.clone();
    let failed = worker
        .wait_for("the final failure", |l| l["level"] == "ERROR")
        .await;
    assert_eq!(
        failed["message"],
        "actor failed; dead-lettering the message"
    );
    assert_eq!(failed["message_id"], id.as_str(), "{failed}");
    assert_eq!(failed["actor"], "cli_fail_retried", "{failed}");
    assert_eq!(failed["retries"], 2, "{failed}");
    assert_eq!(failed["error"], "String: f1 always fails", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("retries exhausted after 2 retries"),
        "{failed}"
    );
    fx.wait_stats("cli", "the dead letter", |s| s.dead == 1)
        .await;
    kill("TERM", worker.pid());
    assert!(worker.exit().await.success(), "{}", worker.dump());
    assert_eq!(fx.recorded()["f1"], 3, "two retries: three runs");
    let about = |l: &&Value| l["message_id"] == id.as_str();
    let errors = worker
        .seen
        .iter()
        .filter(about)
        .filter(|l| l["level"] == "ERROR");
    assert_eq!(errors.count(), 1, "{}", worker.dump());
    let retrying: Vec<_> = worker
        .seen
        .iter()
        .filter(about)
        .filter(|l| l["level"] == "WARN")
        .map(|l| (l["message"].clone(), l["retry"].clone()))
        .collect();
    assert_eq!(
        retrying,
        [
            (json!("actor failed; retrying"), json!(1)),
            (json!("actor failed; retrying"), json!(2)),
        ],
        "{}",
        worker.dump()
    );
    fx.cleanup().await;
}
