//! Durations in the attribute, read into milliseconds at compile time with the grammar the
//! runtime reads its settings with (`humantime`'s): a bare number is milliseconds (`"1500"`),
//! anything else amounts with units (`"500ms"`, `"15s"`, `"10m"`, `"1h30m"`, `"7d"`,
//! `"2h 5min"`).

/// The milliseconds in `text`, or why it is not a duration.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| "the number is too large".to_owned());
    }
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err("options are whole milliseconds".to_owned());
    }
    u64::try_from(duration.as_millis()).map_err(|_| "the duration is too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_and_combined() {
        assert_eq!(parse_duration("1500"), Ok(1500));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("15s"), Ok(15_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500));
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1h 30min"), Ok(5_400_000));
        assert_eq!(parse_duration("1m1s1ms"), Ok(61_001));
        assert_eq!(parse_duration("0s"), Ok(0));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "",
            "s",
            "1x",
            "-1s",
            "1hm",
            "ms5",
            "1h30",
            "500us",
            "99999999999999999999999",
            "99999999999999999d",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
    }
}
