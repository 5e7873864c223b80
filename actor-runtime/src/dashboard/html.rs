//! HTML by hand: every value that comes from a message, the broker or the database goes
//! through [`esc`] (or [`attr`]); the page frame is [`page`].

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `text` safe inside an element or a quoted attribute.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a URL query or path component, percent-encoded.
pub(crate) fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `text`, at most `max` characters, with an ellipsis when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// ms since the epoch as `2026-12-04 15:20:29Z`.
pub(crate) fn time_ms(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
}

/// How long ago (or ahead) `ms` is, as people say it: `3s ago`, `in 2m`.
pub(crate) fn relative_ms(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (span, ahead) = if ms >= now {
        (ms - now, true)
    } else {
        (now - ms, false)
    };
    let secs = span / 1000;
    let amount = match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if ahead {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A whole page: `title` (escaped here), the navigation, `body` (already HTML); `base` is
/// where the dashboard is mounted (`/`, `/ops/`).
pub(crate) fn page(base: &str, title: &str, current: &str, jobs: bool, body: &str) -> String {
    let link = |href: String, name: &str| {
        let here = if name == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{}\"{here}>{name}</a>", esc(&href))
    };
    let jobs_link = if jobs {
        link(format!("{base}jobs"), "Jobs")
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · actor-runtime</title>\
         <link rel=\"stylesheet\" href=\"{css}\"></head><body>\
         <header><nav aria-label=\"main\"><strong>actor-runtime</strong> {overview} {jobs_link}</nav></header>\
         <main id=\"main\">{body}</main></body></html>\n",
        title = esc(title),
        css = esc(&format!("{base}assets/style.css")),
        overview = link(home(base), "Overview"),
    )
}

/// The overview's URL: `base` without its trailing `/` (`Router::nest("/ops", ..)` serves
/// the nested `/` at `/ops`), `/` at the root.
pub(crate) fn home(base: &str) -> String {
    match base.trim_end_matches('/') {
        "" => "/".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// A hidden form field.
pub(crate) fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(url("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(time_ms(0), "1970-01-01 00:00:00Z");
    }
}
