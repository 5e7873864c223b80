use actor_runtime::actor;

fn key(id: &String) -> String {
    id.clone()
}

#[actor(unique_key = key, unique_ttl = "a while")]
async fn process_email(email_id: String) {
    let _ = email_id;
}

fn main() {}
