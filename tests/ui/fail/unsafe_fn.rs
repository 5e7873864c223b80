use actor_runtime::actor;

#[actor]
unsafe fn poke(address: usize) -> usize {
    address
}

fn main() {}
