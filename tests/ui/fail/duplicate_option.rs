use actor_runtime::actor;

#[actor(priority = 1, queue_name = "fast", priority = 2)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
