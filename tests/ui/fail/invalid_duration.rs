use actor_runtime::actor;

#[actor(time_limit = "1h30", max_age = "5 fortnights", min_backoff = 500us)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
