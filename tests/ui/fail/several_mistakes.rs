// Mistakes in the options and in the function are all reported at once.
use actor_runtime::actor;

#[actor(queue_name = "bad queue", min_backoff = "soon")]
async fn fetch<T>(url: String, (a, b): (u8, u8)) {
    let _ = (url, a, b);
}

fn main() {}
