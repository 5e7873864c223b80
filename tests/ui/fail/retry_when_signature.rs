use actor_runtime::actor;

fn retry_twice(retries: u32) -> bool {
    retries < 2
}

#[actor(retry_when = retry_twice)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
