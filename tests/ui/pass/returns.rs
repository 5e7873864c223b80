// What an actor may return, async or not: its `Output` is the `T` of a `Result` (any type
// whose last path segment is `Result`, aliases included).
use std::{fmt, io};

use actor_runtime::{actor, Actor};

mod app {
    pub type Result<T> = std::result::Result<T, std::io::Error>;
}

#[actor]
async fn plain(x: u8) -> u8 {
    x
}

#[actor]
async fn unit(x: u8) {
    let _ = x;
}

#[actor]
async fn std_result(x: u8) -> Result<u8, String> {
    Ok(x)
}

#[actor]
async fn io_result(x: u8) -> io::Result<Vec<u8>> {
    Ok(vec![x])
}

#[actor]
async fn aliased_result(x: u8) -> std::result::Result<u16, std::fmt::Error> {
    Ok(x.into())
}

#[actor]
fn blocking_plain(x: u8) -> u8 {
    x
}

#[actor]
fn blocking_result(x: u8) -> app::Result<String> {
    Ok(x.to_string())
}

#[actor]
fn no_generics(x: u8) -> fmt::Result {
    let _ = x;
    Ok(())
}

#[actor]
fn blocking_unit() {}

fn output<A: Actor>() -> &'static str {
    std::any::type_name::<A::Output>()
}

fn main() {
    assert_eq!(output::<plain>(), "u8");
    assert_eq!(output::<unit>(), "()");
    assert_eq!(output::<std_result>(), "u8");
    assert_eq!(output::<io_result>(), "alloc::vec::Vec<u8>");
    assert_eq!(output::<aliased_result>(), "u16");
    assert_eq!(output::<blocking_plain>(), "u8");
    assert_eq!(output::<blocking_result>(), "alloc::string::String");
    assert_eq!(output::<blocking_unit>(), "()");
    assert_eq!(output::<no_generics>(), "()");
}
