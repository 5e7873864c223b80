use actor_runtime::actor;

#[actor(store_results)]
async fn fetch(url: String) -> String {
    url
}

fn main() {}
