use actor_runtime::actor;

fn by_number(id: &u64) -> u64 {
    *id
}

#[actor(unique_key = by_number)]
async fn process_email(email_id: String) {
    let _ = email_id;
}

fn main() {}
