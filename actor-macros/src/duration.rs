//! Durations in the attribute: `"500ms"`, `"15s"`, `"10m"`, `"1h"`, `"7d"`, or several in a
//! row (`"1h30m"`), read into milliseconds at compile time.

/// Milliseconds in `"500ms"`, `"15s"`, `"10m"`, `"1h"`, `"7d"` or a sequence like `"1h30m"`.
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(amount.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_and_combined() {
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("15s"), Some(15_000));
        assert_eq!(parse_duration("10m"), Some(600_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("7d"), Some(604_800_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("1m1s1ms"), Some(61_001));
        assert_eq!(parse_duration("0s"), Some(0));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "",
            "10",
            "s",
            "1x",
            "1.5s",
            "1 s",
            "-1s",
            "1hm",
            "ms5",
            "99999999999999999d",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }
}
