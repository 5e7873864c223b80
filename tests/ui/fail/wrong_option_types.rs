// Every kind of option given a value of the wrong kind: each is reported at its value.
use actor_runtime::actor;

#[actor(
    actor_name = fetch_page,
    max_retries = true,
    time_limit = 1.5,
    store_results = "yes",
    on_success = 42,
    retry_when = "always",
    throws = std::io::Error,
    crate = 3,
)]
async fn fetch(url: String) {
    let _ = url;
}

fn main() {}
