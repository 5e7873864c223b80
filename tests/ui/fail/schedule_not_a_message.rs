actor_runtime::schedule!(name = "nightly", every = "1h", send = 42);

fn main() {}
