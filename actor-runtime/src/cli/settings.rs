//! Worker settings: flags, then environment variables, then defaults; every bad value is
//! reported at once, naming the flag or variable it came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::args::{CommonArgs, LogFormat, WorkerArgs};
use crate::duration::{parse_duration, GRAMMAR};
use crate::message::is_valid_queue_name;

/// Sized for a 512 MB container: two single-threaded processes.
pub(crate) const DEFAULT_PROCESSES: usize = 2;
pub(crate) const DEFAULT_THREADS: usize = 1;
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The worker's settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkerSettings {
    pub(crate) processes: usize,
    pub(crate) threads: usize,
    pub(crate) queues: Option<Vec<String>>,
    pub(crate) prefetch: Option<usize>,
    /// `None`: the worker's default.
    pub(crate) prefetch_mb: Option<usize>,
    pub(crate) shutdown_timeout: Duration,
    /// `None`: the worker's default.
    pub(crate) max_abandoned_threads: Option<usize>,
    pub(crate) max_memory_mb: Option<u64>,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) pid_file: Option<PathBuf>,
}

impl WorkerSettings {
    /// Whether a supervisor process runs the workers (several processes, or memory
    /// recycling, which needs someone outside the process to start the next one).
    pub(crate) fn supervised(&self) -> bool {
        self.processes > 1 || self.max_memory_mb.is_some()
    }
}

/// One or more settings that do not parse.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SettingsError(pub(crate) Vec<String>);

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid setting: {one}"),
            many => {
                write!(f, "{} invalid settings:", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

/// Collects problems while reading settings.
struct Reader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// The variable's trimmed value; empty counts as unset.
    fn var(&self, key: &str) -> Option<String> {
        (self.env)(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A whole number ≥ `min` from `key`.
    fn number(&mut self, key: &str, min: u64) -> Option<u64> {
        let raw = self.var(key)?;
        match raw.parse::<u64>() {
            Ok(n) if n >= min => Some(n),
            _ => {
                self.problems
                    .push(format!("{key} must be a whole number ≥ {min}, got `{raw}`"));
                None
            }
        }
    }
}

/// Resolves the worker's settings from its flags and `env` (`std::env::var` in production).
pub(crate) fn resolve(
    args: &WorkerArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WorkerSettings, SettingsError> {
    let mut r = Reader {
        env,
        problems: Vec::new(),
    };
    let processes = args
        .processes
        .map(u64::from)
        .or_else(|| r.number("WORKER_PROCESSES", 1))
        .map_or(DEFAULT_PROCESSES, |n| n as usize);
    let threads = args
        .threads
        .map(u64::from)
        .or_else(|| r.number("WORKER_THREADS", 1))
        .map_or(DEFAULT_THREADS, |n| n as usize);
    let prefetch = args
        .prefetch
        .map(u64::from)
        .or_else(|| r.number("WORKER_PREFETCH", 1))
        .map(|n| n as usize);
    let prefetch_mb = args
        .prefetch_mb
        .map(u64::from)
        .or_else(|| r.number("WORKER_PREFETCH_MB", 1))
        .map(|n| n as usize);
    let max_abandoned_threads = args
        .max_abandoned_threads
        .map(u64::from)
        .or_else(|| r.number("WORKER_MAX_ABANDONED_THREADS", 0))
        .map(|n| n as usize);
    let max_memory_mb = args
        .max_memory
        .or_else(|| r.number("WORKER_MAX_MEMORY_MB", 1));

    let queues = match &args.queues {
        Some(queues) => Some(check_queues("--queues", queues, &mut r.problems)),
        None => r.var("WORKER_QUEUES").map(|raw| {
            let list: Vec<String> = raw.split(',').map(|q| q.trim().to_owned()).collect();
            check_queues("WORKER_QUEUES", &list, &mut r.problems)
        }),
    };

    let shutdown_timeout = match &args.shutdown_timeout {
        Some(raw) => Some((raw.clone(), "--shutdown-timeout")),
        None => r
            .var("WORKER_SHUTDOWN_TIMEOUT")
            .map(|raw| (raw, "WORKER_SHUTDOWN_TIMEOUT")),
    }
    .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |(raw, source)| {
        parse_duration(&raw).unwrap_or_else(|why| {
            r.problems.push(format!(
                "{source} must be a duration ({GRAMMAR}), got `{raw}`: {why}"
            ));
            DEFAULT_SHUTDOWN_TIMEOUT
        })
    });

    let metrics_addr = args.metrics_addr.or_else(|| {
        let raw = r.var("METRICS_ADDR")?;
        raw.parse::<SocketAddr>()
            .map_err(|_| {
                r.problems.push(format!(
                    "METRICS_ADDR must be an IP address and port such as 0.0.0.0:9191, got `{raw}`"
                ))
            })
            .ok()
    });

    if r.problems.is_empty() {
        Ok(WorkerSettings {
            processes,
            threads,
            queues,
            prefetch,
            prefetch_mb,
            shutdown_timeout,
            max_abandoned_threads,
            max_memory_mb,
            metrics_addr,
            pid_file: args.pid_file.clone(),
        })
    } else {
        Err(SettingsError(r.problems))
    }
}

fn check_queues(source: &str, queues: &[String], problems: &mut Vec<String>) -> Vec<String> {
    for queue in queues {
        if !is_valid_queue_name(queue) {
            problems.push(format!(
                "{source}: `{queue}` is not a queue name (use [a-zA-Z_][a-zA-Z0-9._-]*, without .DQ/.XQ)"
            ));
        }
    }
    queues.to_vec()
}

/// The log format: `--log-format`, else `LOG_FORMAT`, else text.
pub(crate) fn log_format(
    common: &CommonArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LogFormat, SettingsError> {
    if let Some(format) = common.log_format {
        return Ok(format);
    }
    match env("LOG_FORMAT").map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(LogFormat::Text),
        Some(v) if v.is_empty() || v == "text" => Ok(LogFormat::Text),
        Some(v) if v == "json" => Ok(LogFormat::Json),
        Some(v) => Err(SettingsError(vec![format!(
            "LOG_FORMAT must be `text` or `json`, got `{v}`"
        )])),
    }
}

/// The worker's settings and the broker's, checked in one pass: every problem at once.
pub(crate) fn resolve_all(
    args: &WorkerArgs,
    env: &dyn Fn(&str) -> Option<String>,
    mut problems: Vec<String>,
) -> Result<WorkerSettings, SettingsError> {
    let settings = resolve(args, env);
    if let Err(SettingsError(more)) = &settings {
        problems.extend(more.iter().cloned());
    }
    if let Err(SettingsError(more)) = check_broker_env(env) {
        problems.extend(more);
    }
    match settings {
        Ok(settings) if problems.is_empty() => Ok(settings),
        _ => Err(SettingsError(problems)),
    }
}

/// Checks the broker settings in the environment, so a supervisor fails at once rather
/// than its workers one by one.
pub(crate) fn check_broker_env(env: &dyn Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
    use crate::broker::Choice;
    let mut problems = Vec::new();
    match crate::broker::choose(env) {
        Err(err) => problems.push(match err {
            crate::Error::Config(text) => text,
            other => other.to_string(),
        }),
        #[cfg(feature = "redis")]
        Ok(Choice::Redis(_)) => {
            // The Redis broker's own reading of REDIS_URL, DRAMATIQ_NAMESPACE, REDIS_*...
            if let Err(all) = crate::broker::RedisConfig::read_lookup(env) {
                problems.extend(all);
            }
        }
        #[cfg(not(feature = "redis"))]
        Ok(Choice::Redis(_)) => problems.push(
            "REDIS_URL is set but actor-runtime was built without its `redis` feature".into(),
        ),
        #[cfg(feature = "rabbitmq")]
        Ok(Choice::Rabbitmq(_)) => {
            if let Err(all) = crate::broker::RabbitmqConfig::read_lookup(env) {
                problems.extend(all);
            }
        }
        #[cfg(not(feature = "rabbitmq"))]
        Ok(Choice::Rabbitmq(_)) => problems.push(
            "RABBITMQ_URL is set but actor-runtime was built without its `rabbitmq` feature".into(),
        ),
        Ok(Choice::Stub(_)) => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SettingsError(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn defaults_fit_a_small_container() {
        let s = resolve(&WorkerArgs::default(), &env(&[])).unwrap();
        assert_eq!(s.processes, 2);
        assert_eq!(s.threads, 1);
        assert_eq!(s.queues, None);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.max_abandoned_threads, None);
        assert!(s.supervised());
    }

    #[test]
    fn flags_win_over_environment() {
        let args = WorkerArgs {
            processes: Some(1),
            threads: Some(8),
            queues: Some(vec!["a".into(), "b".into()]),
            ..WorkerArgs::default()
        };
        let s = resolve(
            &args,
            &env(&[
                ("WORKER_PROCESSES", "4"),
                ("WORKER_THREADS", "2"),
                ("WORKER_QUEUES", "c"),
            ]),
        )
        .unwrap();
        assert_eq!((s.processes, s.threads), (1, 8));
        assert!(!s.supervised());
        assert_eq!(s.queues.unwrap(), ["a", "b"]);
    }

    #[test]
    fn environment_fills_what_flags_leave_out() {
        let s = resolve(
            &WorkerArgs::default(),
            &env(&[
                ("WORKER_PROCESSES", " 3 "),
                ("WORKER_THREADS", "4"),
                ("WORKER_QUEUES", "emails, reports"),
                ("WORKER_PREFETCH", "10"),
                ("WORKER_PREFETCH_MB", "32"),
                ("WORKER_SHUTDOWN_TIMEOUT", "2m"),
                ("WORKER_MAX_MEMORY_MB", "300"),
                ("WORKER_MAX_ABANDONED_THREADS", "0"),
                ("METRICS_ADDR", "127.0.0.1:9191"),
            ]),
        )
        .unwrap();
        assert_eq!(s.processes, 3);
        assert_eq!(s.threads, 4);
        assert_eq!(s.queues.unwrap(), ["emails", "reports"]);
        assert_eq!(s.prefetch, Some(10));
        assert_eq!(s.prefetch_mb, Some(32));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(120));
        assert_eq!(s.max_memory_mb, Some(300));
        assert_eq!(s.max_abandoned_threads, Some(0));
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9191".parse().unwrap()));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let s = resolve(&WorkerArgs::default(), &env(&[("WORKER_THREADS", "  ")])).unwrap();
        assert_eq!(s.threads, 1);
    }

    #[test]
    fn every_bad_value_is_reported_by_name() {
        let err = resolve(
            &WorkerArgs::default(),
            &env(&[
                ("WORKER_PROCESSES", "two"),
                ("WORKER_THREADS", "0"),
                ("WORKER_QUEUES", "ok,9bad"),
                ("WORKER_SHUTDOWN_TIMEOUT", "soon"),
                ("METRICS_ADDR", "localhost"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("5 invalid settings:"), "{text}");
        for needle in [
            "WORKER_PROCESSES must be a whole number ≥ 1, got `two`",
            "WORKER_THREADS must be a whole number ≥ 1, got `0`",
            "WORKER_QUEUES: `9bad` is not a queue name",
            "WORKER_SHUTDOWN_TIMEOUT must be a duration",
            "METRICS_ADDR must be an IP address and port",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn a_single_problem_reads_as_one_line() {
        let err = resolve(&WorkerArgs::default(), &env(&[("WORKER_THREADS", "x")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid setting: WORKER_THREADS must be a whole number ≥ 1, got `x`"
        );
    }

    #[test]
    fn max_memory_alone_implies_a_supervisor() {
        let args = WorkerArgs {
            processes: Some(1),
            max_memory: Some(256),
            ..WorkerArgs::default()
        };
        assert!(resolve(&args, &env(&[])).unwrap().supervised());
    }

    #[test]
    fn the_shutdown_timeout_takes_the_duration_grammar() {
        let args = WorkerArgs {
            shutdown_timeout: Some("1h30m".into()),
            ..WorkerArgs::default()
        };
        let s = resolve(&args, &env(&[("WORKER_SHUTDOWN_TIMEOUT", "x")])).unwrap();
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5400));
        for (raw, expected) in [("1500", 1500), ("2m 30s", 150_000), ("1.5s", 1500)] {
            let s = resolve(
                &WorkerArgs::default(),
                &env(&[("WORKER_SHUTDOWN_TIMEOUT", raw)]),
            )
            .unwrap();
            assert_eq!(s.shutdown_timeout, Duration::from_millis(expected), "{raw}");
        }
        let args = WorkerArgs {
            shutdown_timeout: Some("1h30".into()),
            ..WorkerArgs::default()
        };
        let err = resolve(&args, &env(&[])).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid setting: --shutdown-timeout must be a duration (ms, or"),
            "{err}"
        );
        assert!(err.contains("got `1h30`: time unit needed"), "{err}");
    }

    #[test]
    fn log_format_from_flag_or_environment() {
        let common = CommonArgs::default();
        assert_eq!(log_format(&common, &env(&[])).unwrap(), LogFormat::Text);
        assert_eq!(
            log_format(&common, &env(&[("LOG_FORMAT", "JSON")])).unwrap(),
            LogFormat::Json
        );
        assert!(log_format(&common, &env(&[("LOG_FORMAT", "xml")]))
            .unwrap_err()
            .to_string()
            .contains("LOG_FORMAT must be `text` or `json`, got `xml`"));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn broker_settings_are_checked_and_the_password_never_shown() {
        let err = check_broker_env(&env(&[("REDIS_URL", "http://u:hunter2@h:1")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("is not a Redis URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let err = check_broker_env(&env(&[
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("REDIS_MAX_CONNECTIONS", "lots"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("REDIS_MAX_CONNECTIONS"), "{err}");
        assert!(check_broker_env(&env(&[("REDIS_URL", "redis://127.0.0.1:6379/0")])).is_ok());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn worker_and_broker_settings_are_reported_together() {
        let err = resolve_all(
            &WorkerArgs::default(),
            &env(&[
                ("WORKER_PROCESSES", "two"),
                ("WORKER_THREADS", "0"),
                ("WORKER_SHUTDOWN_TIMEOUT", "soon"),
                ("METRICS_ADDR", "localhost"),
                ("REDIS_URL", "redis://127.0.0.1:6379/0"),
                ("REDIS_MAX_CONNECTIONS", "lots"),
            ]),
            vec!["LOG_FORMAT must be `text` or `json`, got `xml`".into()],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("6 invalid settings:"), "{text}");
        assert!(text.contains("LOG_FORMAT"), "{text}");
        assert!(text.contains("REDIS_MAX_CONNECTIONS"), "{text}");
        let err = check_broker_env(&env(&[("REDIS_URL", "localhost:6379")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid setting: REDIS_URL: `localhost:6379` is not a Redis URL \
             (redis://, rediss:// or unix://)"
        );
    }

    #[test]
    fn production_without_redis_is_refused() {
        let err = check_broker_env(&env(&[("APP_ENV", "Production")])).unwrap_err();
        assert!(err.to_string().contains("REDIS_URL is not set"), "{err}");
        assert!(check_broker_env(&env(&[("APP_ENV", "development")])).is_ok());
    }
}
