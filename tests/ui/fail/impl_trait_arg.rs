use actor_runtime::actor;

#[actor]
async fn greet(name: impl Into<String>) -> String {
    format!("hello {}", name.into())
}

fn main() {}
