use actor_runtime::actor;

#[actor(throws = [std::io::Error, TimeoutError])]
async fn fetch(url: String) -> Result<String, std::io::Error> {
    Ok(url)
}

fn main() {}
