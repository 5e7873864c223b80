//! Per-actor options, as set by `#[actor(...)]`.

use crate::failure::ActorFailure;

/// The options of one actor, as written in its `#[actor(...)]` attribute.
///
/// `None` means "not set on the actor": the middleware default applies. Durations are in
/// milliseconds, as on Dramatiq's wire. Per-message options (see
/// [`MessageBuilder`](crate::MessageBuilder)) override these, which override the defaults.
///
/// ```
/// use actor_runtime::registry::ActorOptions;
///
/// const OPTIONS: ActorOptions = ActorOptions { max_retries: Some(3), ..ActorOptions::DEFAULT };
/// assert_eq!(OPTIONS.priority, 0);
/// assert_eq!(OPTIONS.max_retries, Some(3));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ActorOptions {
    /// Order of this actor's messages among those a worker has prefetched: lower runs first.
    pub priority: i32,
    /// Retries before the message is dead-lettered (default 20).
    pub max_retries: Option<u32>,
    /// Smallest retry backoff in ms (default 15 s).
    pub min_backoff: Option<u64>,
    /// Largest retry backoff in ms (default 7 days).
    pub max_backoff: Option<u64>,
    /// Time after which a running message is cancelled and counts as failed, in ms (default 10 min).
    pub time_limit: Option<u64>,
    /// Messages older than this (ms since they were first sent) are dead-lettered unrun.
    pub max_age: Option<u64>,
    /// Store the return value in the results backend.
    pub store_results: Option<bool>,
    /// How long a stored result lives, in ms (default 10 min).
    pub result_ttl: Option<u64>,
    /// The actor wants to observe shutdown through its cancellation token.
    pub notify_shutdown: Option<bool>,
    /// Actor sent `(message, result)` when this one succeeds.
    pub on_success: Option<&'static str>,
    /// Actor sent `(message, {"type", "message"})` when this one fails.
    pub on_failure: Option<&'static str>,
    /// Actor sent `(message, {"retries", "max_retries"})` when retries are exhausted.
    pub on_retry_exhausted: Option<&'static str>,
    /// Decides whether a failure is retried: `(retries so far, failure) -> retry?`.
    pub retry_when: Option<fn(u32, &ActorFailure) -> bool>,
    /// Error types that are never retried (their `std::any::type_name`).
    pub throws: &'static [fn() -> &'static str],
    /// In a pipeline, do not append this actor's result to the next message's arguments.
    pub pipe_ignore: Option<bool>,
    /// How long a message's uniqueness key is held at most, in ms (default 1 hour; see
    /// [`unique`](crate::unique)).
    pub unique_ttl: Option<u64>,
}

impl ActorOptions {
    /// Every option unset: the middleware defaults apply.
    pub const DEFAULT: ActorOptions = ActorOptions {
        priority: 0,
        max_retries: None,
        min_backoff: None,
        max_backoff: None,
        time_limit: None,
        max_age: None,
        store_results: None,
        result_ttl: None,
        notify_shutdown: None,
        on_success: None,
        on_failure: None,
        on_retry_exhausted: None,
        retry_when: None,
        throws: &[],
        pipe_ignore: None,
        unique_ttl: None,
    };

    /// Whether `failure` is of one of the `throws` types.
    pub fn throws_matches(&self, failure: &ActorFailure) -> bool {
        self.throws.iter().any(|name| name() == failure.type_name)
    }
}

impl Default for ActorOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}
