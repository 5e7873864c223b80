//! The one backoff of every retry loop (a failed fetch, ack, dead-lettering or Redis call,
//! a lost notification connection, a crashed worker process): exponential, factor 2, capped,
//! optionally jittered.
//!
//! Not the Retries middleware's delay between runs of a failed message: that is Dramatiq's
//! formula, part of the wire behaviour (see `middleware/retries.rs`).

use std::time::Duration;

/// How much of each delay is left to chance, so that many processes failing together do
/// not all retry in the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Jitter {
    /// The delay as computed (when one process retries alone, or tests need exact delays).
    #[cfg_attr(not(all(feature = "cli", unix)), allow(dead_code))]
    // The supervisor's restarts.
    None,
    /// Between half the delay and the delay: spread, yet never much sooner than planned
    /// ("equal jitter"; "full jitter", from zero, would let a retry storm start at once).
    Equal,
}

/// Delays that start at `initial` and double after each failure up to `max`, until
/// [`reset`](Self::reset) after a success.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    /// The next delay before jitter.
    next: Duration,
    /// Delays handed out since the last reset.
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, jitter: Jitter) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            jitter,
            next: initial,
            failures: 0,
        }
    }

    /// The delay before the next attempt; counts a failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        match self.jitter {
            Jitter::None => base,
            Jitter::Equal => base / 2 + (base / 2).mul_f64(fastrand::f64()),
        }
    }

    /// After a success: the next failure waits `initial` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
        self.failures = 0;
    }

    /// Failures (delays handed out) since the last reset.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn delays(backoff: &mut Backoff, n: usize) -> Vec<Duration> {
        (0..n).map(|_| backoff.next_delay()).collect()
    }

    #[test]
    fn doubles_from_initial_up_to_max() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS, Jitter::None);
        let ms: Vec<u128> = delays(&mut backoff, 6)
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.failures(), 6);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(100 * MS, 5000 * MS, Jitter::None);
        delays(&mut backoff, 4);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn never_overflows() {
        let mut backoff = Backoff::new(100 * MS, Duration::MAX, Jitter::None);
        let last = delays(&mut backoff, 200).pop();
        assert_eq!(last, Some(Duration::MAX));
        let mut backoff = Backoff::new(100 * MS, 50 * MS, Jitter::None);
        assert_eq!(
            backoff.next_delay(),
            50 * MS,
            "initial is capped by max too"
        );
    }

    #[test]
    fn equal_jitter_stays_between_half_and_the_whole_delay() {
        let mut backoff = Backoff::new(100 * MS, 800 * MS, Jitter::Equal);
        let mut plain = Backoff::new(100 * MS, 800 * MS, Jitter::None);
        for _ in 0..50 {
            let (delay, base) = (backoff.next_delay(), plain.next_delay());
            assert!(delay >= base / 2 && delay <= base, "{delay:?} for {base:?}");
        }
    }
}
