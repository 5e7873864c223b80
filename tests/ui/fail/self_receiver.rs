use actor_runtime::actor;

pub struct Mailer;

impl Mailer {
    #[actor]
    async fn send_welcome(&self, to: String) {
        println!("welcome, {to}");
    }
}

fn main() {}
