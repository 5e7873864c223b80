//! The app's settings, read from the environment once at start-up and validated as a whole:
//! a missing or malformed setting is one error listing every problem, not a crash later.

use std::fmt;
use std::net::SocketAddr;

/// Which deployment this is (`APP_ENV`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    /// A developer's machine: the in-memory broker and no SMTP are fine.
    Development,
    /// Like production, with test data.
    Staging,
    /// The real thing: Redis and SMTP are required.
    Production,
}

impl AppEnv {
    /// Staging and production need the real services.
    pub fn is_deployed(self) -> bool {
        self != AppEnv::Development
    }
}

/// Who reads creditor details out of an email (`LLM_PROVIDER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmProvider {
    /// The built-in rules of [`extract`](super::extract) (no API call).
    Rules,
    /// OpenAI; needs `LLM_API_KEY`.
    OpenAi,
    /// Anthropic; needs `LLM_API_KEY`.
    Anthropic,
}

/// A value that never shows in logs, `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    ///
    /// ```
    /// let secret = actor_examples::creditor_app::settings::Secret::new("hunter2");
    /// assert_eq!(format!("{secret:?}"), "Secret(***)");
    /// assert_eq!(secret.to_string(), "***");
    /// assert_eq!(secret.expose(), "hunter2");
    /// ```
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where confirmation emails go out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smtp {
    /// `SMTP_HOST`.
    pub host: String,
    /// `SMTP_PORT` (default 587).
    pub port: u16,
    /// `SMTP_USER` and `SMTP_PASSWORD`, set together or not at all.
    pub login: Option<(String, Secret)>,
}

/// The Redis key namespace the app's processes share unless `DRAMATIQ_NAMESPACE` says
/// otherwise (the system this app comes from used it).
pub const DEFAULT_NAMESPACE: &str = "creditor_matcher";

/// Sets `DRAMATIQ_NAMESPACE` to [`DEFAULT_NAMESPACE`] when it is unset, before any broker is
/// built (the worker's child processes inherit it): every binary of the app, operator
/// commands included, then looks at the same keys.
///
/// ```
/// use actor_examples::creditor_app::settings::{use_app_namespace, DEFAULT_NAMESPACE};
///
/// use_app_namespace();
/// assert!(std::env::var("DRAMATIQ_NAMESPACE").is_ok());
/// # let _ = DEFAULT_NAMESPACE;
/// ```
pub fn use_app_namespace() {
    if std::env::var("DRAMATIQ_NAMESPACE").map_or(true, |v| v.trim().is_empty()) {
        std::env::set_var("DRAMATIQ_NAMESPACE", DEFAULT_NAMESPACE);
    }
}

/// Which of the app's programs reads the settings: only the webhook needs its secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The HTTP webhook: `WEBHOOK_SECRET` is required.
    Webhook,
    /// The worker: the webhook's settings are not its business.
    Worker,
}

/// Everything the webhook and the worker need to know about their environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `APP_ENV`: development (default), staging or production.
    pub env: AppEnv,
    /// `WEBHOOK_SECRET`: the shared secret the mail provider sends in `X-Webhook-Secret`.
    pub webhook_secret: Secret,
    /// `WEBHOOK_ADDR`: where the webhook listens (default 127.0.0.1:8080).
    pub webhook_addr: SocketAddr,
    /// `LLM_PROVIDER`: rules (default), openai or anthropic.
    pub llm_provider: LlmProvider,
    /// `LLM_API_KEY`, required by the API providers.
    pub llm_api_key: Option<Secret>,
    /// `SMTP_*`; required when deployed.
    pub smtp: Option<Smtp>,
    /// `REDIS_URL`; required when deployed (else the in-memory stub broker). A secret: it
    /// may carry the Redis password.
    pub redis_url: Option<Secret>,
    /// `WORKER_PROCESSES` (default 2).
    pub worker_processes: usize,
    /// `WORKER_THREADS` (default 1).
    pub worker_threads: usize,
}

/// Every problem found in the settings.
///
/// ```
/// use actor_examples::creditor_app::settings::SettingsError;
///
/// let err = SettingsError { problems: vec!["WEBHOOK_SECRET is not set".into()] };
/// assert_eq!(err.to_string(), "the app's settings have 1 problem:\n  - WEBHOOK_SECRET is not set");
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct SettingsError {
    /// One line per problem, naming the variable.
    pub problems: Vec<String>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the app's settings have {} problem{}:",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

impl Settings {
    /// Reads and validates the settings from the process environment.
    ///
    /// ```no_run
    /// use actor_examples::creditor_app::settings::Settings;
    ///
    /// let settings = Settings::from_env().unwrap_or_else(|err| {
    ///     eprintln!("error: {err}"); // every problem, one per line
    ///     std::process::exit(2);
    /// });
    /// println!("listening on {}", settings.webhook_addr);
    /// ```
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`from_env`](Self::from_env) for one of the app's programs: the worker does not need
    /// the webhook's secret.
    ///
    /// ```
    /// use actor_examples::creditor_app::settings::{Role, Settings};
    ///
    /// // Without WEBHOOK_SECRET: fine for the worker, an error for the webhook.
    /// assert!(Settings::from_lookup_for(Role::Worker, |_| None).is_ok());
    /// assert!(Settings::from_lookup_for(Role::Webhook, |_| None).is_err());
    /// ```
    pub fn from_env_for(role: Role) -> Result<Settings, SettingsError> {
        Settings::from_lookup_for(role, |key| std::env::var(key).ok())
    }

    /// Reads and validates the settings from `lookup` (the environment, or a map in tests).
    ///
    /// ```
    /// use actor_examples::creditor_app::settings::{AppEnv, Settings};
    ///
    /// let settings = Settings::from_lookup(|key| match key {
    ///     "WEBHOOK_SECRET" => Some("a-long-shared-secret".into()),
    ///     _ => None,
    /// })
    /// .unwrap();
    /// assert_eq!(settings.env, AppEnv::Development);
    /// assert_eq!(settings.worker_processes, 2);
    ///
    /// let err = Settings::from_lookup(|key| match key {
    ///     "APP_ENV" => Some("production".into()),
    ///     "WORKER_THREADS" => Some("many".into()),
    ///     _ => None,
    /// })
    /// .unwrap_err();
    /// // WEBHOOK_SECRET, REDIS_URL, SMTP_HOST and WORKER_THREADS, all at once.
    /// assert_eq!(err.problems.len(), 4);
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        Settings::from_lookup_for(Role::Webhook, lookup)
    }

    /// [`from_lookup`](Self::from_lookup) for one of the app's programs (see
    /// [`from_env_for`](Self::from_env_for)).
    pub fn from_lookup_for(
        role: Role,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();

        let env = match get("APP_ENV").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("development" | "dev") => AppEnv::Development,
            Some("staging") => AppEnv::Staging,
            Some("production" | "prod") => AppEnv::Production,
            Some(other) => {
                problems.push(format!(
                    "APP_ENV must be development, staging or production, got `{other}`"
                ));
                AppEnv::Development
            }
        };

        let webhook_secret = match get("WEBHOOK_SECRET") {
            None if role == Role::Worker => Secret(String::new()),
            None => {
                problems
                    .push("WEBHOOK_SECRET is not set (the shared secret of the webhook)".into());
                Secret(String::new())
            }
            Some(secret) if role == Role::Webhook && env.is_deployed() && secret.len() < 16 => {
                problems.push(format!(
                    "WEBHOOK_SECRET must be at least 16 characters when deployed, got {}",
                    secret.len()
                ));
                Secret(secret)
            }
            Some(secret) => Secret(secret),
        };

        let webhook_addr = match get("WEBHOOK_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(raw) => raw.parse().unwrap_or_else(|_| {
                problems.push(format!(
                    "WEBHOOK_ADDR must be an address and port such as 0.0.0.0:8080, got `{raw}`"
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
        };

        let llm_provider = match get("LLM_PROVIDER")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("rules") => LlmProvider::Rules,
            Some("openai") => LlmProvider::OpenAi,
            Some("anthropic") => LlmProvider::Anthropic,
            Some(other) => {
                problems.push(format!(
                    "LLM_PROVIDER must be rules, openai or anthropic, got `{other}`"
                ));
                LlmProvider::Rules
            }
        };
        let llm_api_key = get("LLM_API_KEY").map(Secret);
        if llm_provider != LlmProvider::Rules && llm_api_key.is_none() {
            problems.push(format!(
                "LLM_API_KEY is not set but LLM_PROVIDER is {}",
                get("LLM_PROVIDER").unwrap_or_default()
            ));
        }

        let smtp_port = match get("SMTP_PORT") {
            None => 587,
            Some(raw) => match raw.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    problems.push(format!(
                        "SMTP_PORT must be a port number (1-65535), got `{raw}`"
                    ));
                    587
                }
            },
        };
        let login = match (get("SMTP_USER"), get("SMTP_PASSWORD")) {
            (Some(user), Some(password)) => Some((user, Secret(password))),
            (None, None) => None,
            (Some(_), None) => {
                problems.push("SMTP_PASSWORD is not set but SMTP_USER is".into());
                None
            }
            (None, Some(_)) => {
                problems.push("SMTP_USER is not set but SMTP_PASSWORD is".into());
                None
            }
        };
        let smtp = match get("SMTP_HOST") {
            Some(host) => Some(Smtp {
                host,
                port: smtp_port,
                login,
            }),
            None if env.is_deployed() => {
                problems.push("SMTP_HOST is not set (required when deployed)".into());
                None
            }
            None => None,
        };

        let redis_url = get("REDIS_URL").map(Secret);
        match redis_url.as_ref().map(Secret::expose) {
            Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                problems.push("REDIS_URL must start with redis:// or rediss://".into())
            }
            None if env.is_deployed() => {
                problems.push("REDIS_URL is not set (required when deployed)".into())
            }
            _ => {}
        }

        let mut count = |key: &str, default: usize| match get(key) {
            None => default,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    problems.push(format!("{key} must be a whole number ≥ 1, got `{raw}`"));
                    default
                }
            },
        };
        let worker_processes = count("WORKER_PROCESSES", 2);
        let worker_threads = count("WORKER_THREADS", 1);

        if !problems.is_empty() {
            return Err(SettingsError { problems });
        }
        Ok(Settings {
            env,
            webhook_secret,
            webhook_addr,
            llm_provider,
            llm_api_key,
            smtp,
            redis_url,
            worker_processes,
            worker_threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(move |key| map.get(key).cloned())
    }

    #[test]
    fn development_needs_only_the_webhook_secret() {
        let s = settings(&[("WEBHOOK_SECRET", "dev")]).unwrap();
        assert_eq!(s.env, AppEnv::Development);
        assert_eq!(s.llm_provider, LlmProvider::Rules);
        assert_eq!(s.smtp, None);
        assert_eq!(s.redis_url, None);
        assert_eq!((s.worker_processes, s.worker_threads), (2, 1));
        assert_eq!(s.webhook_addr, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn production_reads_every_setting() {
        let s = settings(&[
            ("APP_ENV", "production"),
            ("WEBHOOK_SECRET", "0123456789abcdef"),
            ("WEBHOOK_ADDR", "0.0.0.0:9000"),
            ("LLM_PROVIDER", "anthropic"),
            ("LLM_API_KEY", "sk-test"),
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_PORT", "2525"),
            ("SMTP_USER", "mailer"),
            ("SMTP_PASSWORD", "hunter2"),
            ("REDIS_URL", "redis://:redis-pw@redis:6379/0"),
            ("WORKER_PROCESSES", "4"),
            ("WORKER_THREADS", "8"),
        ])
        .unwrap();
        assert_eq!(s.env, AppEnv::Production);
        assert_eq!(s.llm_provider, LlmProvider::Anthropic);
        let smtp = s.smtp.clone().unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port), ("smtp.example.com", 2525));
        assert_eq!(smtp.login.unwrap().1.expose(), "hunter2");
        assert_eq!((s.worker_processes, s.worker_threads), (4, 8));
        // Secrets stay out of logs.
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("hunter2")
                && !debug.contains("sk-test")
                && !debug.contains("0123456789abcdef")
                && !debug.contains("redis-pw"),
            "{debug}"
        );
    }

    #[test]
    fn every_problem_is_listed_in_one_error() {
        let err = settings(&[
            ("APP_ENV", "production"),
            ("WEBHOOK_SECRET", "short"),
            ("WEBHOOK_ADDR", "nowhere"),
            ("LLM_PROVIDER", "openai"),
            ("SMTP_PORT", "99999"),
            ("SMTP_USER", "mailer"),
            ("REDIS_URL", "localhost:6379"),
            ("WORKER_PROCESSES", "0"),
            ("WORKER_THREADS", "x"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("the app's settings have 9 problems:"),
            "{text}"
        );
        for needle in [
            "WEBHOOK_SECRET must be at least 16 characters",
            "WEBHOOK_ADDR must be an address and port",
            "LLM_API_KEY is not set but LLM_PROVIDER is openai",
            "SMTP_PORT must be a port number",
            "SMTP_PASSWORD is not set but SMTP_USER is",
            "SMTP_HOST is not set (required when deployed)",
            "REDIS_URL must start with redis://",
            "WORKER_PROCESSES must be a whole number ≥ 1, got `0`",
            "WORKER_THREADS must be a whole number ≥ 1, got `x`",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = settings(&[
            ("WEBHOOK_SECRET", "s"),
            ("APP_ENV", "qa"),
            ("LLM_PROVIDER", "gpt"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }

    #[test]
    fn the_worker_needs_no_webhook_secret() {
        let worker = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Settings::from_lookup_for(Role::Worker, move |key| map.get(key).cloned())
        };
        let s = worker(&[
            ("APP_ENV", "production"),
            ("REDIS_URL", "redis://redis:6379/0"),
            ("SMTP_HOST", "smtp.example.com"),
        ])
        .unwrap();
        assert_eq!((s.worker_processes, s.worker_threads), (2, 1));
        // Its own settings are still checked.
        let err = worker(&[("WORKER_THREADS", "x")]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
    }

    #[test]
    fn missing_secret_is_reported_even_in_development() {
        let err = settings(&[]).unwrap_err();
        assert_eq!(
            err.problems,
            ["WEBHOOK_SECRET is not set (the shared secret of the webhook)"]
        );
    }
}
