//! Generators of messages, JSON values and calls for the property tests.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use crate::message::Message;

/// Keys the generators favour, so that kwargs and struct fields often name a real parameter.
const KEYS: &[&str] = &[
    "x", "s", "n", "v", "flag", "p", "label", "tags", "retries", "eta",
];

/// The envelope's keys.
pub(super) const ENVELOPE_KEYS: &[&str] = &[
    "queue_name",
    "actor_name",
    "args",
    "kwargs",
    "options",
    "message_id",
    "message_timestamp",
];

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()),
        -1e3..1e3f64,
        select(vec![
            0.0,
            -0.0,
            1.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324
        ]),
    ]
}

/// Any text, often with what the decoder treats specially: Python's non-finite tokens,
/// quotes, backslashes and escapes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        r#"(NaN|-?Infinity|\\|"|\\u0000|\\"|[a-z ]|é|😀){0,8}"#,
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(KEYS).prop_map(str::to_owned), 1 => text()]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-300i64..300).prop_map(Value::from),
        finite_f64().prop_map(Value::from),
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            btree_map(key(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

pub(super) fn object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(key(), json(), 0..4).prop_map(|m| m.into_iter().collect())
}

/// A call of a test actor: its `args` and `kwargs`.
pub(super) type Call = (Vec<Value>, Map<String, Value>);

/// Calls of an actor with these parameters: mostly well formed, each argument by position or
/// by keyword and usually of (nearly) the right type, now and then one missing or one too
/// many; a quarter of them arbitrary JSON.
pub(super) fn call(params: &'static [&'static str]) -> impl Strategy<Value = Call> {
    let n = params.len();
    let values: Vec<_> = params.iter().map(|param| typed(param)).collect();
    let shaped = (
        values,
        0..=n,
        vec(prop::bool::weighted(0.9), n),
        prop::option::weighted(0.1, json()),
        prop::option::weighted(0.1, (key(), json())),
    )
        .prop_map(move |(values, positional, keep, extra_arg, extra_kwarg)| {
            let mut args = values[..positional].to_vec();
            args.extend(extra_arg);
            let mut kwargs: Map<String, Value> = (positional..n)
                .filter(|&i| keep[i])
                .map(|i| (params[i].to_owned(), values[i].clone()))
                .collect();
            kwargs.extend(extra_kwarg);
            (args, kwargs)
        });
    let arbitrary = (vec(json(), 0..4), object());
    prop_oneof![3 => shaped, 1 => arbitrary]
}

/// A value for the test actors' parameter `param`, usually of its type.
fn typed(param: &str) -> BoxedStrategy<Value> {
    let fitting = match param {
        "x" => any::<i64>().prop_map(Value::from).boxed(),
        "s" => text().prop_map(Value::from).boxed(),
        "n" => prop_oneof![
            any::<u32>().prop_map(Value::from),
            Just(Value::Null),
            number()
        ]
        .boxed(),
        "v" => vec(number(), 0..4).prop_map(Value::from).boxed(),
        "flag" => any::<bool>().prop_map(Value::from).boxed(),
        "p" => point().boxed(),
        _ => json().boxed(),
    };
    prop_oneof![4 => fitting, 1 => json()].boxed()
}

/// An object shaped like [`Point`], sometimes with a field missing or of the wrong type.
fn point() -> impl Strategy<Value = Value> {
    let field = |value: BoxedStrategy<Value>| prop::option::weighted(0.9, value);
    (
        field(prop_oneof![3 => any::<i32>().prop_map(Value::from), 1 => number()].boxed()),
        field(
            prop_oneof![3 => text().prop_map(Value::from), 1 => Just(Value::Null), 1 => json()]
                .boxed(),
        ),
        field(prop_oneof![3 => vec(text(), 0..3).prop_map(Value::from), 1 => json()].boxed()),
        btree_map(key(), json(), 0..2).prop_map(|m| m.into_iter().collect::<Map<_, _>>()),
    )
        .prop_map(|(x, label, tags, mut extra)| {
            for (name, value) in [("x", x), ("label", label), ("tags", tags)] {
                match value {
                    Some(value) => extra.insert(name.to_owned(), value),
                    None => extra.remove(name),
                };
            }
            Value::Object(extra)
        })
}

/// Any JSON; objects with the envelope's keys (and one Dramatiq refuses) holding any JSON;
/// valid envelopes, each optional key sometimes left out.
pub(super) fn envelope_like() -> impl Strategy<Value = Value> {
    let key = prop_oneof![select(ENVELOPE_KEYS), Just("extra")].prop_map(str::to_owned);
    prop_oneof![
        json(),
        btree_map(key, json(), 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        (message(), any::<bool>(), any::<bool>()).prop_map(|(message, id, timestamp)| {
            let mut value = serde_json::to_value(&message).unwrap_or_default();
            if let Some(fields) = value.as_object_mut() {
                if !id {
                    fields.remove("message_id");
                }
                if !timestamp {
                    fields.remove("message_timestamp");
                }
            }
            value
        }),
    ]
}

pub(super) fn message() -> impl Strategy<Value = Message> {
    (
        text(),
        text(),
        vec(json(), 0..4),
        object(),
        object(),
        text(),
        any::<u64>(),
    )
        .prop_map(
            |(queue_name, actor_name, args, kwargs, options, message_id, message_timestamp)| {
                Message {
                    queue_name,
                    actor_name,
                    args,
                    kwargs,
                    options,
                    message_id,
                    message_timestamp,
                }
            },
        )
}

const PUNCTUATION: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u",
    "\\ud83d",
    "NaN",
    "Infinity",
    "-Infinity",
    "-",
    "null",
    "true",
    "1",
    "1e999",
    "-0.5",
    " ",
    "\n",
];

/// Byte soup made of JSON's and Python's tokens, to reach deeper into the parser (and the
/// `NaN`/`Infinity` rewrite) than random bytes do.
pub(super) fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        select(PUNCTUATION).prop_map(|t| t.as_bytes().to_vec()),
        select(ENVELOPE_KEYS).prop_map(|k| format!("{k:?}").into_bytes()),
        vec(any::<u8>(), 1..3),
    ];
    vec(token, 0..48).prop_map(|parts| parts.concat())
}
