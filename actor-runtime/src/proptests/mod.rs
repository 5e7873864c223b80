//! Property tests of the path every delivery takes: bytes -> [`Message::decode`] -> the
//! handler `#[actor]` generates, which binds `args`/`kwargs` to typed parameters. Whatever a
//! producer writes, that path returns a value or an error, never panics, and agrees with
//! Python's calling convention. (Round trips with Python's own encoder are in the tests crate,
//! `tests/tests/it/wire_values.rs`.)

mod strategies;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::actor::Handler;
use crate::message::Message;
use crate::registry::Registry;
use actor_macros::actor;
use strategies::{call, envelope_like, message, object, token_soup, ENVELOPE_KEYS};

// The actors bound in these tests, one per kind of parameter: scalars, an option, a list
// and a bool, a derived struct. Each returns its arguments so a test can see what it got.

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    label: Option<String>,
    tags: Vec<String>,
}

#[actor(crate = crate, queue_name = "proptests")]
fn prop_int_str(x: i64, s: String) -> (i64, String) {
    (x, s)
}

#[actor(crate = crate, queue_name = "proptests")]
fn prop_opt(n: Option<u32>) -> Option<u32> {
    n
}

#[actor(crate = crate, queue_name = "proptests")]
fn prop_floats(v: Vec<f64>, flag: bool) -> (Vec<f64>, bool) {
    (v, flag)
}

#[actor(crate = crate, queue_name = "proptests")]
fn prop_point(p: Point) -> Point {
    p
}

/// A test actor and, independently of serde, what it returns for its bound arguments
/// (`None` where an argument does not fit its type, which must be an `ArgError`).
#[derive(Debug)]
struct Signature {
    name: &'static str,
    params: &'static [&'static str],
    echo: fn(&[Option<&Value>]) -> Option<Value>,
}

const SIGNATURES: &[Signature] = &[
    Signature {
        name: "prop_int_str",
        params: &["x", "s"],
        echo: |a| Some(json!([a[0]?.as_i64()?, a[1]?.as_str()?])),
    },
    Signature {
        name: "prop_opt",
        params: &["n"],
        echo: |a| match a[0] {
            None | Some(Value::Null) => Some(Value::Null),
            Some(n) => Some(u32::try_from(n.as_u64()?).ok()?.into()),
        },
    },
    Signature {
        name: "prop_floats",
        params: &["v", "flag"],
        echo: |a| {
            let floats: Option<Vec<f64>> = a[0]?.as_array()?.iter().map(Value::as_f64).collect();
            Some(json!([floats?, a[1]?.as_bool()?]))
        },
    },
    Signature {
        name: "prop_point",
        params: &["p"],
        echo: |a| {
            // serde reads a struct from an object (unknown keys ignored, a missing `Option`
            // as `None`) or from an array of all its fields in order.
            let (x, label, tags) = match a[0]? {
                Value::Object(p) => (p.get("x")?, p.get("label"), p.get("tags")?),
                Value::Array(p) if p.len() == 3 => (&p[0], Some(&p[1]), &p[2]),
                _ => return None,
            };
            let x = i32::try_from(x.as_i64()?).ok()?;
            let label = match label {
                None | Some(Value::Null) => Value::Null,
                Some(label) => label.as_str()?.into(),
            };
            let tags: Option<Vec<&str>> = tags.as_array()?.iter().map(Value::as_str).collect();
            Some(json!({"x": x, "label": label, "tags": tags?}))
        },
    },
];

/// The argument each parameter receives under Python's calling convention, or `None` when
/// the call itself is wrong (too many positionals, an unknown or doubled keyword).
fn python_call<'m>(message: &'m Message, params: &[&str]) -> Option<Vec<Option<&'m Value>>> {
    if message.args.len() > params.len() {
        return None;
    }
    for name in message.kwargs.keys() {
        let index = params.iter().position(|p| p == name)?;
        if index < message.args.len() {
            return None;
        }
    }
    let bound = params
        .iter()
        .enumerate()
        .map(|(i, name)| message.args.get(i).or_else(|| message.kwargs.get(*name)));
    Some(bound.collect())
}

/// Whether `value` is an envelope that `Message::decode` must accept.
fn is_envelope(value: &Value) -> bool {
    let Some(fields) = value.as_object() else {
        return false;
    };
    let required = |key: &str, ok: fn(&Value) -> bool| fields.get(key).is_some_and(ok);
    let optional = |key: &str, ok: fn(&Value) -> bool| fields.get(key).is_none_or(ok);
    fields.keys().all(|k| ENVELOPE_KEYS.contains(&k.as_str()))
        && required("queue_name", Value::is_string)
        && required("actor_name", Value::is_string)
        && required("args", Value::is_array)
        && required("kwargs", Value::is_object)
        && required("options", Value::is_object)
        && optional("message_id", Value::is_string)
        && optional("message_timestamp", Value::is_u64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_json_token_soup(bytes in token_soup()) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decode_accepts_exactly_dramatiq_envelopes(
        value in envelope_like(),
    ) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let decoded = Message::decode(&bytes);
        prop_assert_eq!(decoded.is_ok(), is_envelope(&value), "{:?}", decoded);
    }

    #[test]
    fn encode_then_decode_is_identity(message in message()) {
        prop_assert_eq!(Message::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn python_non_finite_tokens_leave_strings_alone(
        message in message(),
        token in select(vec!["NaN", "Infinity", "-Infinity"]),
    ) {
        // One option written as Python writes a non-finite float, beside arbitrary strings.
        const MARKER: &str = "\"__non_finite_here__\"";
        let mut with_token = message.clone();
        with_token.options.insert("nf".into(), MARKER.trim_matches('"').into());
        let text = String::from_utf8(with_token.encode()).unwrap().replacen(MARKER, token, 1);
        let decoded = Message::decode(text.as_bytes()).unwrap();
        with_token.options["nf"] = match token {
            "NaN" => Value::Null,
            "Infinity" => f64::MAX.into(),
            _ => f64::MIN.into(),
        };
        prop_assert_eq!(decoded, with_token);
    }
}

proptest! {
    // Each case draws one of the four signatures.
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn binding_arbitrary_arguments_gives_the_python_call_or_an_arg_error(
        (signature, (args, kwargs)) in (0..SIGNATURES.len())
            .prop_flat_map(|i| (Just(&SIGNATURES[i]), call(SIGNATURES[i].params))),
        options in object(),
    ) {
        let envelope = json!({
            "queue_name": "proptests",
            "actor_name": signature.name,
            "args": args,
            "kwargs": kwargs,
            "options": options,
            "message_id": "m",
            "message_timestamp": 1,
        });
        let message = Message::decode(&serde_json::to_vec(&envelope).unwrap()).unwrap();
        let expected =
            python_call(&message, signature.params).and_then(|bound| (signature.echo)(&bound));
        let registration = Registry::global().unwrap().get(signature.name).unwrap();
        match (registration.handler(&message), expected) {
            (Ok(Handler::Blocking(call)), Some(expected)) => {
                prop_assert_eq!(call().unwrap(), expected);
            }
            (Err(err), None) => prop_assert!(!err.to_string().is_empty()),
            (Ok(_), None) => prop_assert!(false, "bound a call Python would refuse"),
            (Err(err), Some(_)) => prop_assert!(false, "refused a valid call: {}", err),
            (Ok(Handler::Async(_)), Some(_)) => unreachable!("the test actors are plain fns"),
        }
    }
}
