//! When a failed Redis call is tried again: only transient failures, within a time bound,
//! with backoff, and never a call that may have run when it must run at most once.

use std::time::Duration;

use redis::{RedisError, RetryMethod};
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};

/// Whether a failed call may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Running it twice does no harm: retry timeouts and dropped connections too.
    Safe,
    /// Retry only failures where it certainly did not run (a refused connection, a server
    /// that is loading or busy): a lost reply must not count twice.
    AtMostOnce,
}

/// Whether a failed call may succeed if tried again: timeouts, dropped or refused
/// connections, and transient server states (loading, busy, failover).
pub(crate) fn is_transient(err: &RedisError) -> bool {
    if err.kind() == redis::ErrorKind::AuthenticationFailed {
        return false;
    }
    err.is_timeout() || err.is_io_error() || !matches!(err.retry_method(), RetryMethod::NoRetry)
}

/// Backoff between attempts, within a total time bound.
pub(crate) struct Retry {
    start: Instant,
    bound: Duration,
    replay: Replay,
    /// 20-40 ms, doubling up to 1-2 s.
    backoff: Backoff,
    /// The last retry was the immediate one after a dropped connection.
    just_reconnected: bool,
}

impl Retry {
    pub(crate) fn new(bound: Duration, replay: Replay) -> Retry {
        Retry {
            start: Instant::now(),
            bound,
            replay,
            backoff: Backoff::new(
                Duration::from_millis(40),
                Duration::from_secs(2),
                Jitter::Equal,
            ),
            just_reconnected: false,
        }
    }

    /// Sleeps before the next attempt, or gives the error back when it is permanent, when
    /// the call may have run and must not run twice, or when the bound is spent.
    pub(crate) async fn after<'e>(&mut self, err: &'e RedisError) -> Result<(), &'e RedisError> {
        if !is_transient(err) || (self.replay == Replay::AtMostOnce && !surely_not_run(err)) {
            return Err(err);
        }
        // A connection is only found dead on use, and its replacement is already on the way:
        // retry at once, on the same pooled slot.
        if err.is_unrecoverable_error() && !std::mem::replace(&mut self.just_reconnected, true) {
            tracing::debug!(error = %err, "redis connection dropped; retrying on its replacement");
            return Ok(());
        }
        self.just_reconnected = false;
        let wait = self.backoff.next_delay();
        if self.start.elapsed() + wait > self.bound {
            return Err(err);
        }
        tracing::debug!(error = %err, wait_ms = wait.as_millis() as u64, "redis call failed; retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Whether the next attempt should reuse the connection that just failed.
    pub(crate) fn same_connection(&self) -> bool {
        self.just_reconnected
    }
}

/// Whether a failed call certainly did not run: the connection was refused, or the server
/// rejected it whole (loading, busy, failing over).
fn surely_not_run(err: &RedisError) -> bool {
    err.is_connection_refusal() || matches!(err.kind(), redis::ErrorKind::Server(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_may_have_run_is_not_sent_again_when_it_must_run_at_most_once() {
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let bound = Duration::from_secs(5);
        assert!(Retry::new(bound, Replay::Safe)
            .after(&timeout)
            .await
            .is_ok());
        let mut once = Retry::new(bound, Replay::AtMostOnce);
        assert!(once.after(&timeout).await.is_err());
        assert!(once.after(&refused).await.is_ok());
    }
}
