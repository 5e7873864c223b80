use actor_runtime::actor;

#[actor(queue_name = "emails.DQ")]
async fn send_email(to: String) {
    let _ = to;
}

fn main() {}
