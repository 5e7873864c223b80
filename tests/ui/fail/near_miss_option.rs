use actor_runtime::actor;

#[actor(max_retry = 3)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
