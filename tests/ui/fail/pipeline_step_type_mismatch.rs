use actor_runtime::actor;
use actor_runtime::composition::TypedPipeline;

#[actor]
async fn fetch(url: String) -> String {
    url
}

#[actor]
async fn double(n: i64) -> i64 {
    n * 2
}

fn main() {
    // `double` takes an `i64` last, but `fetch` returns a `String`.
    let _ = TypedPipeline::new(fetch::message("x".into())).then(double::pipe());
}
