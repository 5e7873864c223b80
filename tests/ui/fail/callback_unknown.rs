use actor_runtime::actor;

#[actor(on_success = notify_done)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
