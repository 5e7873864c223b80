use actor_runtime::actor;

#[actor(max_retries = -1)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
