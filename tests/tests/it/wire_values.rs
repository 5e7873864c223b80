//! Values cross the wire intact both ways with Python Dramatiq's own encoder: a message Python
//! encodes decodes here to the same values, and one we encode decodes in Python to the same
//! values, for generated values of every kind Python's `json` writes (big ints, floats,
//! `inf`/`nan`, unicode strings, nested lists and dicts, `None`).
//!
//! What JSON in Rust cannot hold exactly is pinned too: an int beyond 64 bits arrives as the
//! nearest float, `inf`/`-inf` as the largest finite floats and `nan` as null, and goes back
//! to Python as such. Runs `tests/python/wire_values.py` once per case; no Redis.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use actor_runtime::Message;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use crate::support::results::python;

/// A value as Python holds it.
#[derive(Clone, Debug)]
enum Py {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Dict(BTreeMap<String, Py>),
}

impl Py {
    /// Python source for the value, on one line.
    fn literal(&self) -> String {
        let join = |items: Vec<String>| items.join(", ");
        match self {
            Py::None => "None".into(),
            Py::Bool(true) => "True".into(),
            Py::Bool(false) => "False".into(),
            Py::Int(i) => i.to_string(),
            Py::Float(f) if f.is_nan() => "float('nan')".into(),
            Py::Float(f) if f.is_infinite() => {
                format!("float('{}inf')", if *f < 0.0 { "-" } else { "" })
            }
            // Rust prints the shortest decimal that reads back as the same float.
            Py::Float(f) => format!("float('{f:?}')"),
            Py::Str(s) => str_literal(s),
            Py::List(items) => format!("[{}]", join(items.iter().map(Py::literal).collect())),
            Py::Dict(entries) => {
                let entries = entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", str_literal(k), v.literal()));
                format!("{{{}}}", join(entries.collect()))
            }
        }
    }

    /// The JSON value our decoder reads from Python's encoding of this value.
    fn held(&self) -> Value {
        match self {
            Py::None => Value::Null,
            Py::Bool(b) => Value::Bool(*b),
            Py::Int(i) => i64::try_from(*i)
                .map(Value::from)
                .or_else(|_| u64::try_from(*i).map(Value::from))
                // Beyond 64 bits: the nearest float (serde_json's `float_roundtrip` rounds as `as` does).
                .unwrap_or_else(|_| Value::from(*i as f64)),
            Py::Float(f) if f.is_nan() => Value::Null,
            Py::Float(f) if f.is_infinite() => {
                Value::from(if *f > 0.0 { f64::MAX } else { f64::MIN })
            }
            Py::Float(f) => Value::from(*f),
            Py::Str(s) => Value::from(s.as_str()),
            Py::List(items) => items.iter().map(Py::held).collect(),
            Py::Dict(entries) => entries.iter().map(|(k, v)| (k.clone(), v.held())).collect(),
        }
    }

    /// The Python value of a JSON value as we hold it.
    fn of(value: &Value) -> Py {
        match value {
            Value::Null => Py::None,
            Value::Bool(b) => Py::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Py::Int(i.into()),
                (None, Some(u), _) => Py::Int(u.into()),
                (None, None, f) => Py::Float(f.unwrap_or(f64::NAN)),
            },
            Value::String(s) => Py::Str(s.clone()),
            Value::Array(items) => Py::List(items.iter().map(Py::of).collect()),
            Value::Object(entries) => Py::Dict(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), Py::of(v)))
                    .collect(),
            ),
        }
    }
}

/// A Python string literal: printable ASCII as is, everything else escaped.
fn str_literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            ' '..='~' if c != '"' && c != '\\' => out.push(c),
            _ => out += &format!("\\U{:08x}", u32::from(c)),
        }
    }
    out + "\""
}

fn py_value() -> impl Strategy<Value = Py> {
    let int = prop_oneof![
        any::<i64>().prop_map(i128::from),
        any::<u64>().prop_map(i128::from),
        any::<i128>(),
        select(vec![
            0,
            -1,
            1 << 53,
            (1 << 53) + 1,
            i128::from(i64::MIN) - 1,
            i128::from(u64::MAX) + 1,
            i128::MAX,
            i128::MIN,
        ]),
    ];
    let float = prop_oneof![
        8 => any::<f64>(),
        1 => select(vec![-0.0, 5e-324, f64::MAX, f64::MIN, 0.1, 1e16, 1e-7]),
        1 => select(vec![f64::INFINITY, f64::NEG_INFINITY, f64::NAN]),
    ];
    let text = prop_oneof![
        any::<String>(),
        vec(any::<char>(), 0..8).prop_map(String::from_iter),
        "(NaN|Infinity|\"|\\\\|é|😀|\u{2028}){0,6}",
    ];
    let leaf = prop_oneof![
        Just(Py::None),
        any::<bool>().prop_map(Py::Bool),
        int.prop_map(Py::Int),
        float.prop_map(Py::Float),
        text.clone().prop_map(Py::Str),
    ];
    leaf.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Py::List),
            btree_map(text.clone(), inner, 0..4).prop_map(Py::Dict),
        ]
    })
}

/// A message with `value` as args[0], kwargs["v"] and options["o"], as the script builds it.
fn message(value: Value) -> Message {
    let mut message = Message::new("wire", "wire_values", vec![value.clone()]);
    message.kwargs.insert("v".into(), value.clone());
    message.options.insert("o".into(), value);
    message.message_id = "m".into();
    message.message_timestamp = 1;
    message
}

/// Runs the script on `values`; per value, the message Python encoded and its verdict on ours.
fn run_python(python: &std::path::Path, values: &[Py]) -> Vec<(String, String)> {
    let mut input = String::new();
    for value in values {
        let held = value.held();
        let ours = String::from_utf8(message(held.clone()).encode()).expect("JSON is UTF-8");
        input += &format!("{}\n{}\n{ours}\n", value.literal(), Py::of(&held).literal());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/wire_values.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write cases");
    drop(stdin);
    let output = child.wait_with_output().expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wire_values.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 * values.len(), "{stdout}");
    lines
        .chunks(2)
        .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
        .collect()
}

proptest! {
    // Each case starts one Python; a few dozen values per case keep this to a few seconds.
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn python_and_rust_read_each_others_values(values in vec(py_value(), 1..40)) {
        let Some(python) = python() else { return Ok(()) };
        for (value, (theirs, verdict)) in values.iter().zip(run_python(&python, &values)) {
            let decoded = Message::decode(theirs.as_bytes());
            prop_assert!(decoded.is_ok(), "{:?} on Python's {}", decoded, theirs);
            // Compared as text, so that -0.0 is not 0.0 and 1.0 is not 1.
            let expected = serde_json::to_string(&message(value.held())).unwrap();
            prop_assert_eq!(serde_json::to_string(&decoded.unwrap()).unwrap(), expected, "Python's {}", theirs);
            prop_assert_eq!(verdict, "ok", "Python on ours, for {}", value.literal());
        }
    }
}

/// Two values Python encodes that a message here cannot carry at all: an int beyond any f64
/// and a string with a lone surrogate (exact bytes from Dramatiq's encoder). The message is
/// malformed (a `DecodeError`, as for any bytes we cannot read), not misread.
#[test]
fn python_values_json_here_cannot_hold_make_the_message_malformed() {
    let huge = format!(
        r#"{{"queue_name":"q","actor_name":"a","args":[1{}],"kwargs":{{}},"options":{{}},"message_id":"m","message_timestamp":1}}"#,
        "0".repeat(400)
    );
    let lone_surrogate = r#"{"queue_name":"q","actor_name":"a","args":["\ud800"],"kwargs":{},"options":{},"message_id":"m","message_timestamp":1}"#;
    for raw in [huge.as_str(), lone_surrogate] {
        assert!(Message::decode(raw.as_bytes()).is_err(), "{raw}");
    }
}
