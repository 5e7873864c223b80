//! The one duration grammar of settings (flags and environment), the same `#[actor]` reads at
//! compile time: a bare number is milliseconds, anything else is `humantime`'s amounts with
//! units (`500ms`, `30s`, `10m`, `1h30m`, `7d`, `2h 5min`).

use std::time::Duration;

/// `raw` as a duration, or why it is not one (`humantime`'s words).
#[cfg_attr(not(any(feature = "redis", feature = "cli")), allow(dead_code))]
pub(crate) fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| "the number is too large".to_owned());
    }
    humantime::parse_duration(raw).map_err(|err| err.to_string())
}

/// What a setting that takes a duration accepts, for its error message.
#[cfg_attr(not(any(feature = "redis", feature = "cli")), allow(dead_code))]
pub(crate) const GRAMMAR: &str = "ms, or amounts with units such as 500ms, 30s, 10m, 1h30m, 7d";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_is_milliseconds_and_units_combine() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1500"), Ok(ms(1500)));
        assert_eq!(parse_duration(" 250ms "), Ok(ms(250)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("10m"), Ok(ms(600_000)));
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("2h 5min"), Ok(ms(7_500_000)));
        assert_eq!(parse_duration("7d"), Ok(ms(604_800_000)));
    }

    #[test]
    fn malformed_durations_say_why() {
        for raw in [
            "",
            "s",
            "soon",
            "-1",
            "1x",
            "1h30",
            "99999999999999999999999",
        ] {
            assert!(parse_duration(raw).is_err(), "{raw:?}");
        }
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown time unit"));
    }
}
