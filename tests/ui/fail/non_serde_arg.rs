use actor_runtime::actor;

struct Point {
    x: i32,
    y: i32,
}

#[actor]
async fn draw(point: Point) {
    println!("{} {}", point.x, point.y);
}

fn main() {}
