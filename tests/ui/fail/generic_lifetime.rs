use actor_runtime::actor;

#[actor]
async fn shout<'a>(text: String, _marker: std::marker::PhantomData<&'a ()>) -> String {
    text.to_uppercase()
}

fn main() {}
