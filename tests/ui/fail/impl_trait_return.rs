use actor_runtime::actor;

#[actor]
async fn greet(name: String) -> impl serde::Serialize {
    format!("hello {name}")
}

fn main() {}
