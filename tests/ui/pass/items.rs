//! The generated items respect the function's visibility, `#[cfg]`, docs and argument forms,
//! and add no warning, even under strict lints.
#![deny(missing_docs, unused, unreachable_pub, rust_2018_idioms)]

use actor_runtime::Actor;

/// Actors in a module, used from outside it.
pub mod jobs {
    use actor_runtime::actor;

    /// Resizes an image.
    #[actor(queue_name = "images")]
    pub async fn resize(mut width: u32, height: u32) -> (u32, u32) {
        width /= 2;
        (width, height / 2)
    }

    #[actor]
    pub(crate) async fn r#type(r#ref: String) -> String {
        r#ref
    }

    // Private and never sent from Rust (only by another Dramatiq process): no dead code.
    #[actor]
    async fn from_python(payload: Vec<u8>) -> usize {
        payload.len()
    }

    #[cfg(any())]
    #[actor]
    pub async fn compiled_out(x: NotAType) {}
}

fn main() {
    // An actor local to a function.
    #[actor_runtime::actor]
    fn local(x: u8) -> u8 {
        x
    }
    assert_eq!(local::message(1).build().unwrap().actor_name, "local");

    let message = jobs::resize::message(10, 20).build().unwrap();
    assert_eq!(message.queue_name, "images");
    assert_eq!(<jobs::r#type as Actor>::NAME, "type");
    let registry = actor_runtime::registry::Registry::global().unwrap();
    assert!(registry.get("from_python").is_some());
    assert!(registry.get("compiled_out").is_none());
    let rust_path = registry.get("type").unwrap().rust_path;
    assert!(rust_path.ends_with("::jobs::type"), "{rust_path}");
    let _ = jobs::r#type::send;
}
