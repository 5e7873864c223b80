//! The command line, as clap parses it. Values stay optional here: [`super::settings`]
//! merges them with the environment and the defaults, and names the setting at fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs the actors linked into this program as Dramatiq-style workers, or manages their
/// queues.
// `--version` is set at run time: the app's, when it passes one (`cli::run_with_version`).
#[derive(Debug, Parser)]
#[command(
    about = "Runs the actors linked into this program (a Dramatiq-compatible worker), or \
             manages their queues.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The settings that have no flag, after the options; those with one name their variable
/// in their own help.
const AFTER_HELP: &str = "\
Settings come from flags, then the environment, then defaults; every bad one is reported at
once (exit 2). Run without a command to start workers; see `--help` of each command.

Environment without a flag:
  DRAMATIQ_NAMESPACE        Redis key namespace, shared with Python workers [default: dramatiq]
  REDIS_MAX_CONNECTIONS     Redis connections per process [default: 10]
  REDIS_CONNECT_TIMEOUT_MS  Redis connection timeout [default: 5s]
  REDIS_READ_TIMEOUT_MS     Redis reply timeout [default: 5s]
  REDIS_DELAY_PREFETCH      delayed messages a process holds per queue [default: 10000]
  HEARTBEAT_TIMEOUT_MS      a worker silent this long counts as dead [default: 60s]
  DEAD_MESSAGE_TTL_MS       how long dead letters are kept [default: 24h]
  MAX_MESSAGE_SIZE          largest message sent or decoded, bytes or 512k/8M/1G; larger
                            sends fail, larger fetched ones are dead-lettered unread [default: 8M]
  MESSAGE_SIZE_WARNING      sends larger than this are logged as warnings [default: 1M]
  CANCELLATION              `1` adds the Cancellation middleware: workers skip cancelled messages
                            and stop running ones (see the `cancel` command) [default: off]
  CANCELLATION_NAMESPACE    key prefix of cancel events, dramatiq-abort's [default: dramatiq:aborts:]
  APP_ENV, ENVIRONMENT, ENV `production` refuses to run without REDIS_URL
  RUST_LOG                  log filter; wins over -v

Durations, in flags and variables: ms (`1500`, as the `_MS` names say), or amounts with units
(`500ms`, `30s`, `10m`, `1h30m`, `7d`).

Exit codes: 0 ok, 1 killed, 2 bad argument or setting, 3 broker connection failed at
start-up, 4 pid file in use, 5 broker out of memory, 6 `cancel`: a message was not found or
dead-lettered already.";

/// Options of the worker (the default command).
#[derive(Debug, Default, Args)]
pub(crate) struct WorkerArgs {
    /// Worker processes [env: WORKER_PROCESSES] [default: 2]. With more than one, this
    /// process supervises them (restarts, rolling SIGHUP restarts, --max-memory); with 1 the
    /// worker runs in this process.
    #[arg(short = 'p', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) processes: Option<u32>,

    /// Messages run at once per process [env: WORKER_THREADS] [default: 1].
    #[arg(short = 't', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub(crate) threads: Option<u32>,

    /// Consume only these queues [env: WORKER_QUEUES, comma-separated] [default: every
    /// queue of a registered actor].
    #[arg(short = 'Q', long, value_name = "QUEUE", num_args = 1.., value_delimiter = ',')]
    pub(crate) queues: Option<Vec<String>>,

    /// Messages a worker process holds fetched, running ones included, across its queues
    /// [env: WORKER_PREFETCH] [default: adaptive, from the thread count (slow messages) up
    /// to 1000 (quick ones)].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) prefetch: Option<u32>,

    /// Payload megabytes a worker process holds fetched, running ones included, across its
    /// queues; a larger message is still fetched, alone [env: WORKER_PREFETCH_MB] [default:
    /// 64].
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) prefetch_mb: Option<u32>,

    /// Grace period for running messages at shutdown: ms, or amounts with units (`30s`,
    /// `10m`, `1h30m`) [env: WORKER_SHUTDOWN_TIMEOUT] [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub(crate) shutdown_timeout: Option<String>,

    /// Stop a worker process gracefully (for its supervisor to replace it) once more than
    /// this many threads are stuck in plain `fn` actors past their time limit [env:
    /// WORKER_MAX_ABANDONED_THREADS] [default: max(threads, 4)].
    #[arg(long, value_name = "N")]
    pub(crate) max_abandoned_threads: Option<u32>,

    /// Recycle a worker process (graceful stop, then a fresh one) once its resident memory
    /// exceeds this many MB [env: WORKER_MAX_MEMORY_MB]; implies a supervisor.
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_memory: Option<u64>,

    /// Serve Prometheus metrics on this address, e.g. `0.0.0.0:9191` [env: METRICS_ADDR].
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,

    /// Write the main process's pid here; refuse to start if the pid in it is alive.
    #[arg(long, value_name = "PATH")]
    pub(crate) pid_file: Option<PathBuf>,
}

/// Options every command takes.
#[derive(Debug, Default, Args)]
pub(crate) struct CommonArgs {
    /// The broker: `redis://[user[:password]@]host[:port][/db]` [env: REDIS_URL] [default:
    /// an in-memory stub broker, refused when APP_ENV is production].
    #[arg(long, value_name = "URL", global = true)]
    pub(crate) redis_url: Option<String>,

    /// Append logs to this file instead of stderr.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) log_file: Option<PathBuf>,

    /// Log format [env: LOG_FORMAT] [default: text].
    #[arg(long, value_name = "FORMAT", global = true)]
    pub(crate) log_format: Option<LogFormat>,

    /// More logs: -v for debug, -vv for trace (RUST_LOG, when set, wins).
    #[arg(short = 'v', long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// `[time] [PID n] [LEVEL] target: message key=value`, as Dramatiq's.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Operator commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Enqueue one message.
    Enqueue(EnqueueArgs),
    /// Messages per queue (ready, delayed, in flight, dead) and live workers.
    Queues(QueuesArgs),
    /// List, requeue or purge dead-lettered messages.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// The actors linked into this program.
    Actors(OutputArgs),
    /// Print the broker (password hidden), namespace and settings workers would use, and
    /// test the connection: exit 0 if the broker answers, 3 if not, 2 for a bad setting.
    Check(CheckArgs),
    /// Create or update the job records' table (`job_executions`) in DATABASE_URL;
    /// idempotent.
    #[cfg(feature = "postgres")]
    Migrate(super::ops::records::DatabaseArgs),
    /// Look up job records: one job, recent jobs by actor, state, time or error; pruning.
    #[cfg(feature = "postgres")]
    #[command(subcommand)]
    Jobs(super::ops::records::JobsCommand),
    /// Cancel messages by id: a waiting or delayed one is skipped when its turn comes, a
    /// running one is stopped (needs the Cancellation middleware on the workers: CANCELLATION=1
    /// or in code). Exit 0 if every message was still to run or running, 6 if any was not
    /// found (finished already, or unknown: the broker cannot tell) or dead-lettered.
    #[cfg(feature = "redis")]
    Cancel(super::cancel::CancelArgs),
    /// Run the periodic jobs' scheduler until SIGTERM/SIGINT: sends each tick of every
    /// declared schedule once, however many replicas run (Redis only).
    #[cfg(feature = "periodic")]
    Scheduler,
    /// The declared periodic schedules, with their last and next run.
    #[cfg(feature = "periodic")]
    Schedules(OutputArgs),
    /// Serve the web dashboard: queues, workers, dead letters, and job history with
    /// DATABASE_URL (feature `postgres`). Access: DASHBOARD_TOKEN, or DASHBOARD_USER and
    /// DASHBOARD_PASSWORD; without them only on a loopback address.
    #[cfg(feature = "dashboard")]
    Dashboard(super::dashboard::DashboardArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// `--json` for machines.
#[derive(Debug, Default, Args)]
pub(crate) struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// The actor's name. One this program does not know needs --queue (e.g. a Python actor).
    pub(crate) actor: String,
    /// Positional arguments, a JSON array.
    #[arg(long, value_name = "JSON", default_value = "[]")]
    pub(crate) args: String,
    /// Keyword arguments, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub(crate) kwargs: Option<String>,
    /// The queue [default: the actor's].
    #[arg(long, value_name = "QUEUE")]
    pub(crate) queue: Option<String>,
    /// Run no earlier than this long from now: ms, or amounts with units (`90s`, `1h30m`).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub(crate) delay: Option<Duration>,
    /// Print only the message id, for scripts: `id=$(my-worker enqueue ... --id-only)`.
    #[arg(long, short = 'q', visible_alias = "quiet", conflicts_with = "json")]
    pub(crate) id_only: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct QueuesArgs {
    /// Queues to show [default: those of the registered actors and any declared].
    pub(crate) queues: Vec<String>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// Show dead-lettered messages, oldest first.
    List {
        /// The queue.
        queue: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Move dead-lettered messages back to their queue.
    Requeue(DeadLetterSelection),
    /// Delete dead-lettered messages.
    Purge(DeadLetterSelection),
}

#[derive(Debug, Args)]
pub(crate) struct DeadLetterSelection {
    /// The queue.
    pub(crate) queue: String,
    /// Only these dead letters: the id `list` shows, or the message id of the logs (one
    /// that matches none is an error, and nothing changes) [default: all].
    #[arg(long = "id", value_name = "ID")]
    pub(crate) ids: Vec<String>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}
