//! Operator commands: `enqueue`, `queues`, `dead-letters list|requeue|purge`, `actors`,
//! `check`; with feature `periodic`, `scheduler` and `schedules`.
//! Text for people, `--json` for machines; output goes to stdout, logs to stderr.

use std::io::Write;

use serde_json::{json, Map, Value};

use super::args::{Command, DeadLettersCommand, EnqueueArgs};
use super::{Exit, Failure};
use crate::broker::{human_duration, Broker};
use crate::message::{is_valid_queue_name, Message};
use crate::registry::Registry;

mod check;
mod dead_letters;
mod queues;
#[cfg(feature = "postgres")]
pub(crate) mod records;
#[cfg(feature = "periodic")]
mod schedules;

use check::check;
use dead_letters::{list_dead, purge_dead, requeue_dead};
use queues::queues;

/// Runs an operator command against the global broker.
pub(crate) fn run(command: Command) -> Result<Exit, Failure> {
    let registry = Registry::global().map_err(Failure::from)?;
    let command = match command {
        Command::Check(args) => return check(args, registry),
        other => other,
    };
    #[cfg(feature = "postgres")]
    let command = match command {
        Command::Migrate(args) => return records::migrate(args),
        Command::Jobs(jobs) => return records::jobs(jobs),
        other => other,
    };
    #[cfg(feature = "dashboard")]
    let command = match command {
        Command::Dashboard(args) => return super::dashboard::run(args),
        other => other,
    };
    if let Command::Actors(output) = &command {
        let mut out = std::io::stdout().lock();
        print_actors(registry, output.json, &mut out).map_err(io_failure)?;
        return Ok(Exit::Ok);
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let broker = crate::cli::broker()?;
        if broker.kind() == "stub" {
            return Err(Failure::usage(
                "operator commands need the broker your workers use: set REDIS_URL or RABBITMQ_URL (without \
                 it this program would only see its own, empty, in-memory stub broker)",
            ));
        }
        // Fails at once on an unreachable broker, before any heartbeat could warn.
        broker.ping().await.map_err(Failure::from)?;
        let mut out = Vec::new();
        let result = execute(&broker, registry, command, &mut out).await;
        broker.close().await;
        std::io::stdout()
            .lock()
            .write_all(&out)
            .map_err(io_failure)?;
        result.map(|()| Exit::Ok)
    })
}

/// The single-threaded runtime an operator command runs on.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            exit: Exit::Killed,
            message: format!("cannot start the async runtime: {e}"),
        })
}

pub(super) fn io_failure(err: std::io::Error) -> Failure {
    Failure {
        exit: Exit::Killed,
        message: format!("cannot write the output: {err}"),
    }
}

/// Runs `command` on `broker`, writing its output to `out`.
pub(crate) async fn execute(
    broker: &Broker,
    registry: &Registry,
    command: Command,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    match command {
        Command::Enqueue(args) => enqueue(broker, registry, args, out).await,
        Command::Queues(args) => {
            let mut names: Vec<String> = if args.queues.is_empty() {
                let mut all: Vec<String> =
                    registry.queues().into_iter().map(str::to_owned).collect();
                all.extend(broker.queues());
                all
            } else {
                args.queues
            };
            names.sort();
            names.dedup();
            queues(broker, &names, args.output.json, out).await
        }
        Command::DeadLetters(DeadLettersCommand::List {
            queue,
            limit,
            output,
        }) => list_dead(broker, &queue, limit, output.json, out).await,
        Command::DeadLetters(DeadLettersCommand::Requeue(selection)) => {
            requeue_dead(broker, selection, out).await
        }
        Command::DeadLetters(DeadLettersCommand::Purge(selection)) => {
            purge_dead(broker, selection, out).await
        }
        Command::Actors(output) => print_actors(registry, output.json, out).map_err(io_failure),
        Command::Check(_) => Err(Failure::usage("`check` runs on its own")),
        #[cfg(feature = "postgres")]
        Command::Migrate(_) | Command::Jobs(_) => {
            Err(Failure::usage("`migrate` and `jobs` run on their own"))
        }
        #[cfg(feature = "redis")]
        Command::Cancel(args) => super::cancel::cancel(broker, args, out).await,
        #[cfg(feature = "periodic")]
        Command::Scheduler => schedules::run_scheduler(broker).await,
        #[cfg(feature = "periodic")]
        Command::Schedules(output) => schedules::schedules(broker, output.json, out).await,
        #[cfg(feature = "dashboard")]
        Command::Dashboard(_) => Err(Failure::usage("`dashboard` runs on its own")),
    }
}

pub(super) async fn declared(broker: &Broker, queue: &str) -> Result<(), Failure> {
    if !is_valid_queue_name(queue) {
        return Err(Failure::usage(format!(
            "`{queue}` is not a queue name (use [a-zA-Z_][a-zA-Z0-9._-]*, without .DQ/.XQ)"
        )));
    }
    broker.declare_queue(queue).await.map_err(Failure::from)
}

async fn enqueue(
    broker: &Broker,
    registry: &Registry,
    args: EnqueueArgs,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let queue = match (&args.queue, registry.get(&args.actor)) {
        (Some(queue), _) => queue.clone(),
        (None, Some(actor)) => actor.queue.to_owned(),
        (None, None) => {
            let known: Vec<&str> = registry.actors().iter().map(|a| a.name).collect();
            return Err(Failure::usage(format!(
                "no actor named `{}` in this program (known: {}); pass --queue to enqueue for \
                 an actor that lives elsewhere, e.g. in a Python worker",
                args.actor,
                known.join(", ")
            )));
        }
    };
    let positional = match serde_json::from_str::<Value>(&args.args) {
        Ok(Value::Array(items)) => items,
        Ok(_) => {
            return Err(Failure::usage(
                "--args must be a JSON array, e.g. '[1, \"two\"]'",
            ))
        }
        Err(err) => return Err(Failure::usage(format!("--args is not valid JSON: {err}"))),
    };
    let kwargs = match args.kwargs.as_deref().map(serde_json::from_str::<Value>) {
        None => Map::new(),
        Some(Ok(Value::Object(map))) => map,
        Some(Ok(_)) => {
            return Err(Failure::usage(
                "--kwargs must be a JSON object, e.g. '{\"to\": \"ada@example.com\"}'",
            ))
        }
        Some(Err(err)) => return Err(Failure::usage(format!("--kwargs is not valid JSON: {err}"))),
    };
    let mut message = Message::new(&queue, &args.actor, positional);
    message.kwargs = kwargs;
    if let Some(actor) = registry.get(&args.actor) {
        // Binds the arguments as a worker would, without running anything: the handler only
        // builds the call (a future not polled, or a closure not called), dropped here.
        if let Err(err) = actor.handler(&message) {
            return Err(Failure::usage(format!(
                "{err}; a worker would dead-letter this message, so it was not enqueued"
            )));
        }
    }
    declared(broker, &queue).await?;
    let delay = args.delay;
    let message = broker
        .enqueue(message, delay)
        .await
        .map_err(Failure::from)?;
    if args.id_only {
        let _ = writeln!(out, "{}", message.message_id);
    } else if args.output.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&message).unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            out,
            "enqueued {} on {}: message {}{}",
            message.actor_name,
            message.canonical_queue(),
            message.message_id,
            delay.map_or(String::new(), |d| format!(
                " (due in {})",
                human_duration(d)
            ))
        );
    }
    Ok(())
}

fn print_actors(
    registry: &Registry,
    json_output: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let actors = registry.actors();
    if json_output {
        let items: Vec<Value> = actors
            .iter()
            .map(|a| json!({"name": a.name, "queue": a.queue, "path": a.rust_path}))
            .collect();
        return writeln!(out, "{}", Value::Array(items));
    }
    let width = actors
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(out, "{:<width$}  QUEUE", "ACTOR")?;
    for a in actors {
        writeln!(out, "{:<width$}  {}", a.name, a.queue)?;
    }
    Ok(())
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub(super) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::{DeadLetterSelection, OutputArgs, QueuesArgs};
    use super::dead_letters::utc;
    use super::*;
    use std::time::Duration;

    fn handler(_: &Message) -> Result<crate::actor::Handler, crate::args::ArgError> {
        Ok(crate::actor::Handler::Blocking(Box::new(|| {
            Ok(Value::Null)
        })))
    }

    // What `#[actor(queue_name = "ops_test")] fn ops_probe(..)` registers.
    inventory::submit! {
        crate::registry::Registration {
            name: "ops_probe",
            queue: "ops_test",
            options: crate::registry::ActorOptions::DEFAULT,
            rust_path: "actor_runtime::cli::ops::tests::ops_probe",
            handler,
        }
    }

    /// What `#[actor] fn ops_typed(n: u32)` registers: binds its one argument, and panics if
    /// the call is ever run.
    fn typed_handler(message: &Message) -> Result<crate::actor::Handler, crate::args::ArgError> {
        let args = crate::args::ArgReader::new(message, "ops_typed", &["n"])?;
        let _n: u32 = args.take(0, "n")?;
        Ok(crate::actor::Handler::Blocking(Box::new(|| {
            panic!("enqueue ran the actor")
        })))
    }

    inventory::submit! {
        crate::registry::Registration {
            name: "ops_typed",
            queue: "ops_test",
            options: crate::registry::ActorOptions::DEFAULT,
            rust_path: "actor_runtime::cli::ops::tests::ops_typed",
            handler: typed_handler,
        }
    }

    fn stub() -> Broker {
        Broker::stub()
    }

    async fn run_to_string(broker: &Broker, command: Command) -> Result<String, Failure> {
        let mut out = Vec::new();
        execute(broker, Registry::global().unwrap(), command, &mut out).await?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn enqueue_args(actor: &str, args: &str) -> EnqueueArgs {
        EnqueueArgs {
            actor: actor.into(),
            args: args.into(),
            kwargs: None,
            queue: None,
            delay: None,
            id_only: false,
            output: OutputArgs { json: true },
        }
    }

    #[tokio::test]
    async fn enqueue_finds_the_actors_queue_and_refuses_unknown_actors_without_one() {
        let broker = stub();
        let text = run_to_string(&broker, Command::Enqueue(enqueue_args("ops_probe", "[7]")))
            .await
            .unwrap();
        let message: Message = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(message.queue_name, "ops_test");
        assert_eq!(message.args, vec![json!(7)]);
        assert_eq!(broker.stats("ops_test").await.unwrap().ready, 1);

        let err = run_to_string(&broker, Command::Enqueue(enqueue_args("py_actor", "[]")))
            .await
            .unwrap_err();
        assert_eq!(err.exit, Exit::Usage);
        assert!(err.message.contains("pass --queue"), "{}", err.message);

        let mut args = enqueue_args("py_actor", "[1]");
        args.queue = Some("python".into());
        args.kwargs = Some(r#"{"k": true}"#.into());
        args.delay = Some(Duration::from_secs(60));
        run_to_string(&broker, Command::Enqueue(args))
            .await
            .unwrap();
        assert_eq!(broker.stats("python").await.unwrap().delayed, 1);
    }

    #[tokio::test]
    async fn enqueue_rejects_malformed_arguments() {
        let broker = stub();
        for (args, needle) in [("{}", "JSON array"), ("[1,", "not valid JSON")] {
            let err = run_to_string(&broker, Command::Enqueue(enqueue_args("ops_probe", args)))
                .await
                .unwrap_err();
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }

    #[tokio::test]
    async fn enqueue_checks_the_arguments_against_a_known_actors_signature() {
        let broker = stub();
        for (args, needle) in [
            (
                r#"["seven"]"#,
                "argument `n` of `ops_typed` has the wrong type",
            ),
            ("[1, 2]", "takes 1 argument(s)"),
            ("[]", "missing argument `n`"),
        ] {
            let err = run_to_string(&broker, Command::Enqueue(enqueue_args("ops_typed", args)))
                .await
                .unwrap_err();
            assert_eq!(err.exit, Exit::Usage);
            assert!(err.message.contains(needle), "{}", err.message);
        }
        let mut args = enqueue_args("ops_typed", "[]");
        args.kwargs = Some(r#"{"m": 1}"#.into());
        let err = run_to_string(&broker, Command::Enqueue(args))
            .await
            .unwrap_err();
        assert!(err.message.contains("no parameter `m`"), "{}", err.message);
        // Refused before the queue was even declared.
        assert!(broker.stats("ops_test").await.is_err());

        run_to_string(&broker, Command::Enqueue(enqueue_args("ops_typed", "[7]")))
            .await
            .unwrap();
        assert_eq!(broker.stats("ops_test").await.unwrap().ready, 1);
    }

    #[tokio::test]
    async fn queues_and_dead_letters_round_trip() {
        let broker = stub();
        broker
            .enqueue(Message::new("ops_dead", "ops_probe", vec![json!(1)]), None)
            .await
            .unwrap();
        // Fetch and nack it, as a worker would for a failed message.
        let consumer = broker.consume("ops_dead", 1).await.unwrap();
        let batch = consumer.fetch(1, Duration::from_secs(1)).await.unwrap();
        consumer.nack(&batch[0].tag, "boom").await.unwrap();

        let text = run_to_string(
            &broker,
            Command::Queues(QueuesArgs {
                queues: vec!["ops_dead".into()],
                output: OutputArgs { json: false },
            }),
        )
        .await
        .unwrap();
        assert!(text.contains("ops_dead"), "{text}");
        assert!(text.contains("workers: unknown"), "{text}");

        let listed = run_to_string(
            &broker,
            Command::DeadLetters(DeadLettersCommand::List {
                queue: "ops_dead".into(),
                limit: 10,
                output: OutputArgs { json: true },
            }),
        )
        .await
        .unwrap();
        let listed: Value = serde_json::from_str(listed.trim()).unwrap();
        assert_eq!(listed[0]["reason"], "boom");
        let id = listed[0]["id"].as_str().unwrap().to_owned();

        let selection = |ids: Vec<String>| DeadLetterSelection {
            queue: "ops_dead".into(),
            ids,
            output: OutputArgs { json: false },
        };
        let text = run_to_string(
            &broker,
            Command::DeadLetters(DeadLettersCommand::Requeue(selection(vec![id]))),
        )
        .await
        .unwrap();
        assert_eq!(text, "requeued 1 dead letter of ops_dead\n");
        let stats = broker.stats("ops_dead").await.unwrap();
        assert_eq!((stats.ready, stats.dead), (1, 0));

        let text = run_to_string(
            &broker,
            Command::DeadLetters(DeadLettersCommand::Purge(selection(vec![]))),
        )
        .await
        .unwrap();
        assert_eq!(text, "purged 0 dead letters of ops_dead\n");
    }

    /// Dead-letters a message of `ops_probe` on `queue`; returns its message id.
    async fn dead_letter(broker: &Broker, queue: &str, arg: i64) -> String {
        let message = broker
            .enqueue(Message::new(queue, "ops_probe", vec![json!(arg)]), None)
            .await
            .unwrap();
        let consumer = broker.consume(queue, 1).await.unwrap();
        let batch = consumer.fetch(1, Duration::from_secs(1)).await.unwrap();
        consumer.nack(&batch[0].tag, "boom").await.unwrap();
        message.message_id
    }

    #[tokio::test]
    async fn dead_letters_are_chosen_by_message_id_too_and_an_unknown_id_changes_nothing() {
        let broker = stub();
        let first = dead_letter(&broker, "ops_ids", 1).await;
        let second = dead_letter(&broker, "ops_ids", 2).await;
        let selection = |ids: &[&str]| DeadLetterSelection {
            queue: "ops_ids".into(),
            ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            output: OutputArgs { json: false },
        };

        let err = run_to_string(
            &broker,
            Command::DeadLetters(DeadLettersCommand::Requeue(selection(&[&first, "nope"]))),
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit, Exit::Usage);
        assert!(err.message.contains("`nope`"), "{}", err.message);
        assert!(!err.message.contains(&first), "{}", err.message);
        assert_eq!(broker.stats("ops_ids").await.unwrap().dead, 2);
        let err = run_to_string(
            &broker,
            Command::DeadLetters(DeadLettersCommand::Purge(selection(&["nope"]))),
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit, Exit::Usage);

        let text = run_to_string(
            &broker,
            Command::DeadLetters(DeadLettersCommand::Requeue(selection(&[&first]))),
        )
        .await
        .unwrap();
        assert_eq!(text, "requeued 1 dead letter of ops_ids\n");
        let text = run_to_string(
            &broker,
            Command::DeadLetters(DeadLettersCommand::Purge(selection(&[&second]))),
        )
        .await
        .unwrap();
        assert_eq!(text, "purged 1 dead letter of ops_ids\n");
        let stats = broker.stats("ops_ids").await.unwrap();
        assert_eq!((stats.ready, stats.dead), (1, 0));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59Z");
        assert_eq!(utc(951_868_800_000), "2000-03-01 00:00:00Z");
    }
}
