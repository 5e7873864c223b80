//! Log fields that hold lists (a worker's queues, its actors, ack sets): logged as JSON text, which
//! the CLI's JSON log format emits as real arrays and any other subscriber shows as it is
//! (`queues=["default","emails"]`). tracing has no stable way to record a list.

/// The names of the fields logged with [`list`].
#[cfg_attr(not(all(feature = "cli", unix)), allow(dead_code))]
pub(crate) const LIST_FIELDS: &[&str] = &["queues", "actors", "ack_sets"];

/// `items` as a JSON array of strings.
pub(crate) fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    serde_json::Value::from(items).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_list_is_a_json_array_of_strings() {
        assert_eq!(super::list(["a", "b\"c"]), r#"["a","b\"c"]"#);
        assert_eq!(super::list(Vec::<String>::new()), "[]");
    }
}
