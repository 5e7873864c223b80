use actor_runtime::actor;

#[actor(unique_key = "email")]
async fn process_email(email_id: String) {
    let _ = email_id;
}

fn main() {}
