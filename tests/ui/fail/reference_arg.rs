use actor_runtime::actor;

#[actor]
async fn greet(name: &str, scores: &[u32]) -> String {
    format!("hello {name}: {scores:?}")
}

fn main() {}
