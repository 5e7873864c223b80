use actor_runtime::actor;

#[actor]
extern "C" fn callback(code: i32) -> i32 {
    code
}

fn main() {}
