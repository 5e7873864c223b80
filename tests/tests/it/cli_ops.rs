//! The operator commands through the real binary, on Redis: how they choose, check and
//! report. Each test has its own namespace.

use std::time::Duration;

use actor_runtime::Message;
use serde_json::json;

use crate::support::cli::Fixture;

/// Dead-letters one message per argument of `cli_fail`; returns their message ids.
async fn dead_letters(f: &Fixture, keys: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for key in keys {
        let message = Message::new("cli", "cli_fail", vec![json!(key)]);
        ids.push(f.broker.enqueue(message, None).await.unwrap().message_id);
    }
    let consumer = f.broker.consume("cli", keys.len()).await.unwrap();
    let batch = consumer
        .fetch(keys.len(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(batch.len(), keys.len());
    for delivery in &batch {
        consumer.nack(&delivery.tag, "always fails").await.unwrap();
    }
    consumer.close().await.unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_chosen_by_the_message_id_of_the_logs_and_an_unknown_id_fails() {
    let f = Fixture::new();
    let ids = dead_letters(&f, &["a", "b"]).await;

    for command in ["requeue", "purge"] {
        let (code, stdout, stderr) = f
            .cli(&["dead-letters", command, "cli", "--id", "no-such-id"])
            .await;
        assert_eq!(code, 2, "{command}: {stdout}{stderr}");
        assert!(stderr.contains("`no-such-id`"), "{stderr}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        // One good id beside the bad one changes nothing either.
        let (code, _, stderr) = f
            .cli(&["dead-letters", command, "cli", "--id", &ids[0], "--id", "x"])
            .await;
        assert_eq!(code, 2, "{stderr}");
    }
    assert_eq!(f.stats("cli").await.dead, 2);

    let requeued = f
        .cli_json(&["dead-letters", "requeue", "cli", "--id", &ids[0], "--json"])
        .await;
    assert_eq!(requeued["requeued"], 1);
    let (code, text, stderr) = f
        .cli(&["dead-letters", "purge", "cli", "--id", &ids[1]])
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(text, "purged 1 dead letter of cli\n");
    let stats = f.stats("cli").await;
    assert_eq!((stats.ready, stats.dead), (1, 0));
    // Gone now: asking again is an error, not a silent 0.
    let (code, _, _) = f
        .cli(&["dead-letters", "purge", "cli", "--id", &ids[1]])
        .await;
    assert_eq!(code, 2);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_refuses_arguments_that_do_not_fit_the_actors_signature() {
    let f = Fixture::new();
    for (actor, args, needle) in [
        (
            "cli_record",
            "[1]",
            "argument `key` of `cli_record` has the wrong type",
        ),
        (
            "cli_sleep",
            r#"["k"]"#,
            "`cli_sleep` is missing argument `ms`",
        ),
        ("cli_record", r#"["k", 2]"#, "takes 1 argument(s)"),
        (
            "cli_stuck",
            r#"["k", "long"]"#,
            "argument `ms` of `cli_stuck`",
        ),
    ] {
        let (code, stdout, stderr) = f.cli(&["enqueue", actor, "--args", args]).await;
        assert_eq!(code, 2, "{actor} {args}: {stdout}{stderr}");
        assert!(stderr.contains(needle), "{actor} {args}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
    let (code, _, stderr) = f
        .cli(&[
            "enqueue",
            "cli_record",
            "--kwargs",
            r#"{"key": "k", "extra": 1}"#,
        ])
        .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("has no parameter `extra`"), "{stderr}");
    assert_eq!(f.stats("cli").await.ready, 0);

    // Arguments that fit are enqueued; checking them runs nothing, a plain `fn` included.
    for (actor, args) in [("cli_record", r#"["k"]"#), ("cli_stuck", r#"["k", 1]"#)] {
        let (code, _, stderr) = f.cli(&["enqueue", actor, "--args", args]).await;
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, _, stderr) = f
        .cli(&["enqueue", "cli_record", "--kwargs", r#"{"key": "k"}"#])
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(f.stats("cli").await.ready, 3);
    assert!(f.records().is_empty(), "{:?}", f.records());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_id_only_prints_just_the_message_id() {
    let f = Fixture::new();
    let mut printed = Vec::new();
    for flag in ["--id-only", "--quiet", "-q"] {
        let (code, stdout, stderr) = f
            .cli(&["enqueue", "cli_record", "--args", r#"["k"]"#, flag])
            .await;
        assert_eq!(code, 0, "{stderr}");
        let id = stdout.strip_suffix('\n').expect("one line");
        assert!(!id.contains(char::is_whitespace), "{stdout:?}");
        printed.push(id.to_owned());
    }
    // They are the ids of the messages enqueued.
    let consumer = f.broker.consume("cli", 3).await.unwrap();
    let batch = consumer.fetch(3, Duration::from_secs(5)).await.unwrap();
    let mut enqueued: Vec<String> = batch
        .iter()
        .map(|d| d.message.as_ref().unwrap().message_id.clone())
        .collect();
    enqueued.sort();
    printed.sort();
    assert_eq!(enqueued, printed);
    consumer.close().await.unwrap();

    let (code, _, stderr) = f
        .cli(&[
            "enqueue",
            "cli_record",
            "--args",
            r#"["k"]"#,
            "--id-only",
            "--json",
        ])
        .await;
    assert_eq!(code, 2, "{stderr}");
    f.cleanup().await;
}
