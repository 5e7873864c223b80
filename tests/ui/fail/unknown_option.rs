use actor_runtime::actor;

#[actor(colour = "blue")]
async fn paint(wall: u32) {
    let _ = wall;
}

fn main() {}
