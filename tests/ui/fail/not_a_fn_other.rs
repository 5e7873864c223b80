use actor_runtime::actor;

#[actor]
extern crate core;

fn main() {}
