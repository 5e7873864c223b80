use actor_runtime::actor;

#[actor]
async fn report() {}

actor_runtime::schedule!(name = "nightly", cron = "0 2 * * *", tz = "Europe/Paris");

fn main() {
    let _ = report::message();
}
