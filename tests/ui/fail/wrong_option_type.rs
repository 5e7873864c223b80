use actor_runtime::actor;

#[actor(priority = "high")]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
