use actor_runtime::actor;

#[actor]
async fn distance((x, y): (f64, f64)) -> f64 {
    (x * x + y * y).sqrt()
}

fn main() {}
