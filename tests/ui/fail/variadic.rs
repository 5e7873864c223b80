use actor_runtime::actor;

#[actor]
fn log_all(level: u8, rest: ...) {
    let _ = level;
}

fn main() {}
