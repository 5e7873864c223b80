//! Bounding text that carries a producer's data (an argument serde quotes in its error, an
//! actor name) before it is copied into a dead-letter reason or a log line.

use std::borrow::Cow;

/// How much of a text is kept, in bytes.
pub(crate) const KEPT: usize = 1024;

/// Texts up to this long pass unchanged, so truncating twice cuts once.
const PASS: usize = KEPT + 64;

/// `text` cut to about 1 KB on a character boundary, saying how many bytes were cut
/// (`"xxx… (5241856 bytes cut)"`); shorter text is returned as it is.
pub(crate) fn truncate(text: &str) -> Cow<'_, str> {
    if text.len() <= PASS {
        return Cow::Borrowed(text);
    }
    let mut end = KEPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} bytes cut)",
        &text[..end],
        text.len() - end
    ))
}

/// [`truncate`] for an owned string.
pub(crate) fn truncated(text: String) -> String {
    match truncate(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(truncate("bad arguments"), "bad arguments");
        let edge = "y".repeat(PASS);
        assert!(matches!(truncate(&edge), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_saying_how_much() {
        let text = format!("x{}", "é".repeat(5 << 20));
        let cut = truncate(&text);
        assert!(cut.len() < 1100, "{}", cut.len());
        let kept = cut.split('…').next().unwrap();
        assert_eq!(
            kept.len(),
            KEPT - 1,
            "1 + 2k bytes: the last é would straddle"
        );
        assert!(cut.ends_with(&format!("… ({} bytes cut)", text.len() - kept.len())));
    }

    #[test]
    fn cutting_twice_cuts_once() {
        let once = truncated("z".repeat(50_000));
        assert_eq!(truncate(&once), once);
    }
}
