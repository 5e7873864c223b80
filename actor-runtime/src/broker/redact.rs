//! Broker URLs without their secrets, for logs, errors and `Debug`: one implementation for
//! every broker that takes a URL.

/// What stands for a URL that does not parse.
const UNPARSED: &str = "<unparsable URL, not shown>";

/// `url` without its secrets: the password in the user info becomes `***`, and every query
/// value but those of the keys in `shown` is hidden too (`***`). A URL that does not parse
/// is not shown at all: where its secret ends cannot be known (`redis://:pa/ss@host` has a
/// `/` in it).
pub(crate) fn redact_url(url: &str, shown: &[&str]) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return UNPARSED.to_owned();
    };
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
        return UNPARSED.to_owned();
    }
    let query: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(key, value)| {
            let value = if shown.contains(&key.as_ref()) {
                value.into_owned()
            } else {
                "***".to_owned()
            };
            (key.into_owned(), value)
        })
        .collect();
    if query.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(query);
    }
    parsed.set_fragment(None);
    // The query's `***` is written percent-encoded; show it as typed.
    parsed.to_string().replace("%2A%2A%2A", "***")
}
