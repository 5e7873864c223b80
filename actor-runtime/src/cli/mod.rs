//! The worker entrypoint: a one-line `main` that turns an app's binary into a
//! Dramatiq-style worker command, with operator commands beside it.
//!
//! ```no_run
//! // src/bin/worker.rs of your app: link the actors in, hand over to the CLI.
//! use my_app as _; // the crate whose `#[actor]` fns this worker runs
//! # mod my_app {}
//!
//! fn main() -> std::process::ExitCode {
//!     // `cli::main()` does the same; this also gives `--version` your app's version.
//!     actor_runtime::cli::run_with_version(env!("CARGO_PKG_VERSION"))
//! }
//! ```
//!
//! ```text
//! my-app-worker                       # 2 processes × 1 thread (WORKER_PROCESSES, WORKER_THREADS)
//! my-app-worker -p 4 -t 8 -Q emails   # 4 processes × 8 concurrent messages, one queue
//! my-app-worker enqueue send_email --args '["ada@example.com"]'
//! my-app-worker queues --json
//! my-app-worker check                 # the broker, namespace and settings; is Redis there?
//! my-app-worker dead-letters requeue emails --id 0c7e…
//! ```
//!
//! Rust has no import at run time: the actors are the ones linked into the binary (found
//! through `#[actor]`'s registrations), and a worker with none is refused. Settings come from
//! flags, then the environment, then defaults; a bad value is one error naming every setting
//! at fault. Exit codes are Dramatiq's: 0 ok, 1 killed, 2 bad argument or setting, 3 broker
//! connection failed at start-up, 4 pid file in use.
//!
//! **Processes.** With `--processes 1` (and no `--max-memory`) the worker runs in the
//! process itself: SIGTERM or SIGINT stop it gracefully, a second one cancels running
//! messages, SIGHUP stops it gracefully and re-executes the binary (same pid). With more,
//! this process becomes a supervisor that re-executes its own binary once per worker,
//! restarts a worker that dies (with exponential backoff) and requeues its messages at once,
//! forwards SIGTERM/SIGINT for a graceful stop (a second signal too: workers cancel and
//! requeue their running messages, and are killed if still running 3 s later), restarts
//! workers one by one on SIGHUP, and recycles a worker whose resident memory exceeds
//! `--max-memory`. Unix only.

mod args;
#[cfg(feature = "redis")]
mod cancel;
mod child;
#[cfg(feature = "dashboard")]
mod dashboard;
mod logging;
mod metrics;
mod ops;
mod pidfile;
#[cfg(feature = "postgres")]
mod records;
mod run;
mod settings;
mod supervisor;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches};

use crate::broker::{get_broker, Broker};
use crate::error::Error;
use crate::registry::Registry;

use args::Cli;

/// Marks a process started by the supervisor: the value is its worker index.
const WORKER_ENV: &str = "ACTOR_RUNTIME_WORKER_INDEX";

/// Runs the command line of this process: the worker by default, or an operator command.
/// Returns Dramatiq's exit code; make it your binary's `main`.
///
/// `--version` cannot know your app's version from here, so it names this library's; pass
/// yours with [`run_with_version`].
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     actor_runtime::cli::main()
/// }
/// ```
pub fn main() -> ExitCode {
    App::new().run()
}

/// [`main`], with your app's version for `--version` (`my-app-worker 1.4.2`); `env!` reads
/// it from your crate's Cargo.toml.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     actor_runtime::cli::run_with_version(env!("CARGO_PKG_VERSION"))
/// }
/// ```
pub fn run_with_version(version: &'static str) -> ExitCode {
    App::new().version(version).run()
}

/// [`main`] with explicit arguments (the first is the program name), for programs that wrap
/// the CLI or choose arguments themselves.
///
/// ```
/// use std::process::ExitCode;
///
/// #[actor_runtime::actor]
/// async fn noop() {}
///
/// // `--help` prints the usage and succeeds without starting anything.
/// assert_eq!(actor_runtime::cli::run_from(["my-worker", "--help"]), ExitCode::SUCCESS);
/// ```
pub fn run_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(args, None)
}

/// A change to the broker the CLI builds from the environment: add middleware (results,
/// your own), before any worker or operator command uses it. An error stops the program
/// with exit 2 and the error's text.
pub type Configure = Box<
    dyn Fn(&Broker) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync,
>;

/// The worker command of your app, configured: its version and what to add to the broker.
/// [`main`] is `App::new().run()`.
///
/// The CLI builds the broker from the environment itself (in every worker process it starts),
/// so middleware is added here, not with [`set_broker`](crate::set_broker) before `main`:
///
/// ```no_run
/// use actor_runtime::cli::App;
/// use actor_runtime::results::{RedisResultBackend, Results};
///
/// #[actor_runtime::actor(store_results = true)]
/// async fn word_count(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// fn main() -> std::process::ExitCode {
///     App::new()
///         .version(env!("CARGO_PKG_VERSION"))
///         .configure(|broker| {
///             // Results next to the queues; connects on first use.
///             let url = std::env::var("REDIS_URL")?;
///             broker.add_middleware(Results::new(RedisResultBackend::new(url)?));
///             Ok(())
///         })
///         .run()
/// }
/// ```
#[derive(Default)]
pub struct App {
    version: Option<&'static str>,
    configure: Vec<Configure>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("version", &self.version)
            .field("configure", &self.configure.len())
            .finish()
    }
}

impl App {
    /// The worker command with the library's version and the default broker.
    pub fn new() -> App {
        App::default()
    }

    /// What `--version` prints (`my-app-worker 1.4.2`): give `env!("CARGO_PKG_VERSION")`.
    pub fn version(mut self, version: &'static str) -> App {
        self.version = Some(version);
        self
    }

    /// Runs `configure` on the broker once it is built from the environment, before it is
    /// used (after earlier `configure` calls, in order).
    pub fn configure<F>(mut self, configure: F) -> App
    where
        F: Fn(&Broker) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>
            + Send
            + Sync
            + 'static,
    {
        self.configure.push(Box::new(configure));
        self
    }

    /// Runs the command line of this process (see [`main`]).
    pub fn run(self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// [`run`](Self::run) with explicit arguments (the first is the program name).
    pub fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let _ = CONFIGURE.set(self.configure);
        run(args, self.version)
    }
}

/// The app's broker configuration, set once by [`App::run`].
static CONFIGURE: OnceLock<Vec<Configure>> = OnceLock::new();

/// The broker from the environment with the app's configuration applied (once per process):
/// what every command of the CLI uses.
pub(crate) fn broker() -> Result<Broker, Failure> {
    static APPLIED: OnceLock<Result<(), String>> = OnceLock::new();
    let broker = get_broker().map_err(Failure::from)?;
    let applied = APPLIED.get_or_init(|| {
        for configure in CONFIGURE.get().into_iter().flatten() {
            configure(&broker).map_err(|err| format!("configuring the broker failed: {err}"))?;
        }
        Ok(())
    });
    match applied {
        Ok(()) => Ok(broker),
        Err(message) => Err(Failure::usage(message.clone())),
    }
}

/// What `--version` says when the app did not give its own.
const LIBRARY_VERSION: &str = concat!("(actor-runtime ", env!("CARGO_PKG_VERSION"), ")");

fn run<I, T>(args: I, version: Option<&'static str>) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // `--version` names the program as it was run, not this library's crate.
    let program = args
        .first()
        .map(std::path::Path::new)
        .and_then(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned());
    let mut command = Cli::command().version(version.unwrap_or(LIBRARY_VERSION));
    if let Some(program) = program {
        command = command.display_name(program);
    }
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = err.print();
            return ExitCode::from(err.exit_code().clamp(0, 255) as u8);
        }
    };
    ExitCode::from(dispatch(cli) as u8)
}

/// Dramatiq's exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Ok = 0,
    Killed = 1,
    Usage = 2,
    Connection = 3,
    PidFile = 4,
    BrokerFull = 5,
    /// `cancel`: some messages were not found (finished, unknown) or dead-lettered already.
    NothingToCancel = 6,
}

impl Exit {
    /// The exit of a child process with this code, if it is one of ours.
    pub(crate) fn from_code(code: i32) -> Option<Exit> {
        Some(match code {
            0 => Exit::Ok,
            1 => Exit::Killed,
            2 => Exit::Usage,
            3 => Exit::Connection,
            4 => Exit::PidFile,
            5 => Exit::BrokerFull,
            6 => Exit::NothingToCancel,
            _ => return None,
        })
    }
}

/// A reason to stop early, with the exit code it means.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Usage,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        let exit = match &err {
            Error::Connection { .. } => Exit::Connection,
            Error::OutOfMemory { .. } => Exit::BrokerFull,
            Error::Config(_)
            | Error::DuplicateActor { .. }
            | Error::UnknownActor(_)
            | Error::QueueNotFound(_)
            | Error::InvalidQueueName(_)
            | Error::Encode { .. }
            | Error::MessageTooLarge { .. }
            | Error::MissingMiddleware { .. }
            | Error::Unsupported { .. } => Exit::Usage,
            _ => Exit::Killed,
        };
        Failure {
            exit,
            message: err.to_string(),
        }
    }
}

/// Why a program without actors cannot run a worker.
pub(crate) const NO_ACTORS: &str = "no actor is registered in this program: declare actors \
    with #[actor] in a crate this binary links (a library crate needs at least one item of it \
    used, e.g. `use my_app as _;` in main.rs, or the linker may drop it)";

pub(crate) fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn dispatch(cli: Cli) -> Exit {
    let worker_index = env_var(WORKER_ENV).and_then(|v| v.parse::<usize>().ok());
    // A bad LOG_FORMAT is reported with every other bad setting, in text.
    let (format, mut problems) = match settings::log_format(&cli.common, &env_var) {
        Ok(format) => (format, Vec::new()),
        Err(settings::SettingsError(problems)) => (args::LogFormat::Text, problems),
    };
    // The scheduler is a service, not a one-shot command: it logs what it sends.
    #[cfg(feature = "periodic")]
    let service = matches!(cli.command, Some(args::Command::Scheduler));
    #[cfg(not(feature = "periodic"))]
    let service = false;
    // A server logs what it does (who requeued what), at info.
    #[cfg(feature = "dashboard")]
    let service = service || matches!(cli.command, Some(args::Command::Dashboard(_)));
    let operator = cli.command.is_some() && !service;
    let role = match (operator, worker_index) {
        (true, _) => None,
        (false, Some(index)) => Some(format!("worker {index}")),
        (false, None) => None,
    };
    if let Err(message) = logging::init(
        format,
        cli.common.verbose,
        if operator { "warn" } else { "info" },
        cli.common.log_file.as_deref(),
        role,
    ) {
        return report_early(Failure::usage(message));
    }
    if let Some(url) = &cli.common.redis_url {
        // Before any thread exists: the broker, and worker processes, read it from here.
        std::env::set_var("REDIS_URL", url);
    }
    let result = match cli.command {
        Some(command) => {
            if !matches!(command, args::Command::Actors(_)) {
                if let Err(settings::SettingsError(more)) = settings::check_broker_env(&env_var) {
                    problems.extend(more);
                }
            }
            if problems.is_empty() {
                ops::run(command)
            } else {
                Err(Failure::usage(
                    settings::SettingsError(problems).to_string(),
                ))
            }
        }
        None => run_worker(&cli.worker, worker_index, problems),
    };
    match result {
        Ok(exit) => exit,
        Err(failure) => {
            tracing::error!("{}", failure.message);
            failure.exit
        }
    }
}

/// Before logging is set up, errors go straight to stderr.
fn report_early(failure: Failure) -> Exit {
    eprintln!("error: {}", failure.message);
    failure.exit
}

fn run_worker(
    args: &args::WorkerArgs,
    worker_index: Option<usize>,
    problems: Vec<String>,
) -> Result<Exit, Failure> {
    let settings = settings::resolve_all(args, &env_var, problems)
        .map_err(|err| Failure::usage(err.to_string()))?;
    let registry = Registry::global().map_err(Failure::from)?;
    if registry.is_empty() {
        return Err(Failure::usage(NO_ACTORS));
    }
    if let Some(index) = worker_index {
        return Ok(run::run(&settings, run::Role::Child { index }));
    }
    let _pid_file = match &settings.pid_file {
        Some(path) => Some(pidfile::PidFile::create(path).map_err(|message| Failure {
            exit: Exit::PidFile,
            message,
        })?),
        None => None,
    };
    if settings.supervised() {
        Ok(supervisor::run(&settings))
    } else {
        Ok(run::run(&settings, run::Role::Alone))
    }
}

/// The queues a worker with `settings` consumes (besides any only its broker knows of), and
/// the actors of those queues, sorted.
pub(crate) fn consumed(
    settings: &settings::WorkerSettings,
    registry: &Registry,
) -> (Vec<String>, Vec<&'static str>) {
    let mut queues: Vec<String> = match &settings.queues {
        Some(queues) => queues.clone(),
        None => registry.queues().into_iter().map(str::to_owned).collect(),
    };
    queues.sort();
    queues.dedup();
    let actors = registry
        .actors()
        .into_iter()
        .filter(|a| queues.iter().any(|q| q == a.queue))
        .map(|a| a.name)
        .collect();
    (queues, actors)
}
