use actor_runtime::actor;

#[actor(actor_name = "")]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
