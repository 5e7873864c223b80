//! When a schedule fires: a cron expression in a time zone, or a fixed interval; and the pure
//! function from one tick to the next, with the daylight-saving rule.

use std::time::Duration;

use chrono::{LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::error::{Error, Result};

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When a schedule fires.
#[derive(Clone, Debug)]
pub(crate) enum When {
    /// Local wall-clock times matching `cron` in `tz`.
    Cron {
        expr: String,
        cron: Box<Cron>,
        tz: Tz,
    },
    /// Every `ms` milliseconds since the Unix epoch (so every replica agrees on the ticks).
    Every { ms: u64 },
}

impl When {
    /// A cron expression (5 fields, or 6 with seconds first) in time zone `tz` (an IANA
    /// name such as `Europe/Paris`, or `UTC`).
    pub(crate) fn cron(expr: &str, tz: &str) -> Result<When> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|err| Error::Config(format!("invalid cron expression `{expr}`: {err}")))?;
        let tz: Tz = tz.parse().map_err(|_| {
            Error::Config(format!(
                "unknown time zone `{tz}`: use an IANA name such as `Europe/Paris` or `UTC`"
            ))
        })?;
        Ok(When::Cron {
            expr: expr.to_owned(),
            cron: Box::new(cron),
            tz,
        })
    }

    /// Every `interval`, aligned on the Unix epoch; at least [`MIN_INTERVAL`] and whole
    /// milliseconds.
    pub(crate) fn every(interval: Duration) -> Result<When> {
        if interval < MIN_INTERVAL {
            return Err(Error::Config(format!(
                "interval {interval:?} is shorter than {MIN_INTERVAL:?}"
            )));
        }
        Ok(When::Every {
            ms: interval.as_millis() as u64,
        })
    }

    /// How people read it: ``cron `0 30 2 * * *` in Europe/Paris``, `every 30s`.
    pub(crate) fn describe(&self) -> String {
        match self {
            When::Cron { expr, tz, .. } => format!("cron `{expr}` in {tz}"),
            When::Every { ms } => format!(
                "every {}",
                crate::broker::human_duration(Duration::from_millis(*ms))
            ),
        }
    }

    /// The first tick strictly after `after` (ms since the epoch), or `None` when there is
    /// none (a cron expression that never matches again).
    ///
    /// Cron times are local wall-clock times of the time zone. Where daylight saving time
    /// changes the clock:
    /// - **spring forward** (a gap: 02:00 -> 03:00): a time inside the gap does not exist;
    ///   it fires once at the first instant after the gap (03:00 local), together with any
    ///   other time of the gap (they all fire as one tick);
    /// - **fall back** (02:00 -> 01:00, 01:00-02:00 twice): a repeated time fires once, at
    ///   its first occurrence; the second pass of the repeated hour fires nothing.
    pub(crate) fn next_after(&self, after: u64) -> Option<u64> {
        match self {
            When::Every { ms } => (after / ms).checked_add(1)?.checked_mul(*ms),
            When::Cron { cron, tz, .. } => cron_next(cron, *tz, after),
        }
    }
}

/// The local wall-clock time at instant `ms` in `tz`, truncated to the second.
fn local_at(tz: Tz, ms: u64) -> Option<NaiveDateTime> {
    let utc = Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
    let local = utc.with_timezone(&tz).naive_local();
    local.with_nanosecond(0)
}

/// The instant local time `naive` names in `tz` by the rule of [`When::next_after`]: the
/// first occurrence of a repeated time; the end of the gap for a time that does not exist.
fn instant_of(tz: Tz, naive: NaiveDateTime) -> Option<u64> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => u64::try_from(t.timestamp_millis()).ok(),
        LocalResult::Ambiguous(first, _) => u64::try_from(first.timestamp_millis()).ok(),
        LocalResult::None => {
            // The first instant whose local time is at or after `naive`: the transition.
            // Offsets stay within a day, so the transition lies within a day either side.
            let as_utc = naive.and_utc().timestamp_millis();
            let (mut lo, mut hi) = (as_utc - 86_400_000, as_utc + 86_400_000);
            let reached = |t: i64| -> Option<bool> {
                let local = Utc.timestamp_millis_opt(t).single()?.with_timezone(&tz);
                Some(local.naive_local() >= naive)
            };
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if reached(mid)? {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            u64::try_from(hi).ok()
        }
    }
}

fn cron_next(cron: &Cron, tz: Tz, after: u64) -> Option<u64> {
    let mut local = local_at(tz, after)?;
    // Each step moves the local time forward; a few steps suffice except in the second pass
    // of a repeated hour (one per matching time in it), so this bound is never reached by
    // a valid expression.
    for _ in 0..100_000 {
        let next = cron.find_next_occurrence(&local, false).ok()?;
        let instant = instant_of(tz, next)?;
        if instant > after {
            return Some(instant);
        }
        local = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, local: &str) -> u64 {
        let tz: Tz = tz.parse().unwrap();
        let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S").unwrap();
        instant_of(tz, naive).unwrap()
    }

    fn utc(s: &str) -> u64 {
        at("UTC", s)
    }

    fn ticks(when: &When, from: u64, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = when.next_after(t).unwrap();
            out.push(t);
        }
        out
    }

    #[test]
    fn intervals_are_aligned_on_the_epoch() {
        let every = When::every(Duration::from_secs(30)).unwrap();
        assert_eq!(every.next_after(0), Some(30_000));
        assert_eq!(every.next_after(29_999), Some(30_000));
        assert_eq!(every.next_after(30_000), Some(60_000));
        assert!(When::every(Duration::from_millis(999)).is_err());
    }

    #[test]
    fn seconds_are_optional() {
        let five = When::cron("*/15 * * * *", "UTC").unwrap();
        let six = When::cron("30 */15 * * * *", "UTC").unwrap();
        let from = utc("2026-03-01 10:01:00");
        assert_eq!(five.next_after(from), Some(utc("2026-03-01 10:15:00")));
        assert_eq!(six.next_after(from), Some(utc("2026-03-01 10:15:30")));
        assert!(When::cron("61 * * * *", "UTC").is_err());
        assert!(When::cron("* * * * *", "Mars/Olympus").is_err());
    }

    #[test]
    fn a_daily_time_in_the_spring_gap_fires_at_the_end_of_the_gap() {
        // Europe/Paris, 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC).
        let daily = When::cron("0 30 2 * * *", "Europe/Paris").unwrap();
        let ticks = ticks(&daily, at("Europe/Paris", "2026-03-27 12:00:00"), 4);
        assert_eq!(
            ticks,
            vec![
                utc("2026-03-28 01:30:00"), // 02:30 CET
                utc("2026-03-29 01:00:00"), // 02:30 does not exist: 03:00 CEST, the gap's end
                utc("2026-03-30 00:30:00"), // 02:30 CEST
                utc("2026-03-31 00:30:00"),
            ]
        );
    }

    #[test]
    fn times_in_the_gap_fire_once_together() {
        // Every 20 minutes across the gap: 02:00, 02:20, 02:40 do not exist and fire as one
        // tick at 03:00 CEST, which is also a time of the schedule.
        let every20 = When::cron("0 */20 * * * *", "Europe/Paris").unwrap();
        let ticks = ticks(&every20, at("Europe/Paris", "2026-03-29 01:30:00"), 4);
        assert_eq!(
            ticks,
            vec![
                utc("2026-03-29 00:40:00"), // 01:40 CET
                utc("2026-03-29 01:00:00"), // the gap, and 03:00 CEST
                utc("2026-03-29 01:20:00"), // 03:20 CEST
                utc("2026-03-29 01:40:00"),
            ]
        );
    }

    #[test]
    fn a_repeated_time_fires_once_at_its_first_occurrence() {
        // Europe/Paris, 2026-10-25: 03:00 CEST -> 02:00 CET (01:00 UTC); 02:00-03:00 twice.
        let daily = When::cron("0 30 2 * * *", "Europe/Paris").unwrap();
        let ticks_ = ticks(&daily, at("Europe/Paris", "2026-10-24 12:00:00"), 2);
        assert_eq!(
            ticks_,
            vec![
                utc("2026-10-25 00:30:00"), // 02:30 CEST, the first 02:30
                utc("2026-10-26 01:30:00"), // the next day, 02:30 CET
            ]
        );
        // Every 30 minutes: the second pass of the repeated hour fires nothing.
        let half = When::cron("0 0,30 * * * *", "Europe/Paris").unwrap();
        let ticks_ = ticks(&half, utc("2026-10-24 23:45:00"), 5);
        assert_eq!(
            ticks_,
            vec![
                utc("2026-10-25 00:00:00"), // 02:00 CEST
                utc("2026-10-25 00:30:00"), // 02:30 CEST
                // 02:00 and 02:30 CET (01:00, 01:30 UTC) are repeats: skipped.
                utc("2026-10-25 02:00:00"), // 03:00 CET
                utc("2026-10-25 02:30:00"),
                utc("2026-10-25 03:00:00"),
            ]
        );
        // Starting inside the second pass, the next tick is after it.
        assert_eq!(
            half.next_after(utc("2026-10-25 01:10:00")),
            Some(utc("2026-10-25 02:00:00"))
        );
    }

    #[test]
    fn describe_names_the_rule() {
        assert_eq!(
            When::cron("0 30 2 * * *", "Europe/Paris")
                .unwrap()
                .describe(),
            "cron `0 30 2 * * *` in Europe/Paris"
        );
        assert_eq!(
            When::every(Duration::from_secs(90)).unwrap().describe(),
            "every 90s"
        );
    }
}
