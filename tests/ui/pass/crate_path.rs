// `crate = ...` for a renamed or re-exported runtime.
mod deps {
    pub use actor_runtime as runtime;
}

use actor_runtime::Actor;

#[deps::runtime::actor(crate = crate::deps::runtime, queue_name = "renamed")]
async fn ping() {}

#[actor_runtime::actor(crate = "::actor_runtime")]
fn pong() {}

fn main() {
    assert_eq!(<ping as Actor>::QUEUE, "renamed");
    assert_eq!(<pong as Actor>::NAME, "pong");
}
