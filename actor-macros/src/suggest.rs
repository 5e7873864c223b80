//! The hint for a misspelt option: "did you mean `max_retries`?".

/// Names other libraries use for an option, so the hint names ours.
const ALIASES: &[(&str, &str)] = &[
    ("name", "actor_name"),
    ("queue", "queue_name"),
    ("retries", "max_retries"),
    ("timeout", "time_limit"),
    ("ttl", "result_ttl"),
];

/// The option of `options` a misspelt `name` most likely meant: a known alias, the same
/// letters in another case or separator, or a name within a few typos.
pub(crate) fn suggest(name: &str, options: &[&'static str]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, option)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Some(option);
    }
    let squash = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    if let Some(option) = options.iter().find(|o| squash(o) == squash(name)) {
        return Some(option);
    }
    let budget = (name.chars().count() / 3).clamp(1, 3);
    options
        .iter()
        .map(|option| (edit_distance(&lower, option), *option))
        .filter(|(distance, _)| *distance <= budget)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, option)| option)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    /// Options of the attribute, as `args.rs` lists them (the ones these cases need).
    const OPTIONS: &[&str] = &[
        "actor_name",
        "queue_name",
        "priority",
        "max_retries",
        "time_limit",
        "on_success",
        "result_ttl",
    ];
    use super::*;

    #[test]
    fn near_misses_suggest_the_option() {
        assert_eq!(suggest("max_retry", OPTIONS), Some("max_retries"));
        assert_eq!(suggest("max_retires", OPTIONS), Some("max_retries"));
        assert_eq!(suggest("maxRetries", OPTIONS), Some("max_retries"));
        assert_eq!(suggest("queue", OPTIONS), Some("queue_name"));
        assert_eq!(suggest("timeout", OPTIONS), Some("time_limit"));
        assert_eq!(suggest("priorty", OPTIONS), Some("priority"));
        assert_eq!(suggest("on_sucess", OPTIONS), Some("on_success"));
    }

    #[test]
    fn far_misses_suggest_nothing() {
        assert_eq!(suggest("color", OPTIONS), None);
        assert_eq!(suggest("x", OPTIONS), None);
        assert_eq!(suggest("delay", OPTIONS), None);
    }
}
