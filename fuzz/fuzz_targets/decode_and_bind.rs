//! Bytes from a queue -> `Message::decode` -> every registered actor's generated binding of
//! `args`/`kwargs`, and the call itself when the arguments fit. Nothing may panic; what
//! decodes must encode and decode back to the same message.

#![no_main]

use actor_runtime::{actor, Handler, Message, Registry};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Point {
    x: i32,
    label: Option<String>,
    tags: Vec<String>,
}

#[actor]
fn fuzz_int_str(x: i64, s: String) -> (i64, String) {
    (x, s)
}

#[actor]
fn fuzz_opt(n: Option<u32>) -> Option<u32> {
    n
}

#[actor]
fn fuzz_floats(v: Vec<f64>, flag: bool) -> (Vec<f64>, bool) {
    (v, flag)
}

#[actor]
fn fuzz_point(p: Point, extra: Option<Vec<Point>>) -> usize {
    p.tags.len() + extra.map_or(0, |e| e.len())
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    // Every actor binds every message, whatever its `actor_name`, so that each input meets
    // each signature.
    for registration in Registry::global().expect("actor names are unique").actors() {
        if let Ok(Handler::Blocking(call)) = registration.handler(&message) {
            let _ = call();
        }
    }
    let again = Message::decode(&message.encode()).expect("what we encode decodes");
    assert_eq!(again, message);
});
