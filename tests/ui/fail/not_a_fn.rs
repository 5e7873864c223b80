use actor_runtime::actor;

#[actor]
pub struct SendEmail {
    pub to: String,
}

fn main() {}
