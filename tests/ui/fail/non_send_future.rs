use std::rc::Rc;

use actor_runtime::actor;

async fn tick() {}

#[actor]
async fn count(n: u32) -> u32 {
    let shared = Rc::new(n);
    tick().await;
    *shared
}

fn main() {}
