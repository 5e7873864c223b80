use actor_runtime::actor;

#[actor(time_limit = "5 minutes")]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
