use actor_runtime::actor;

pub struct Logger;

#[actor(on_failure = Logger)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
