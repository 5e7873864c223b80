//! The `#[actor]` attribute of [`actor-runtime`](https://docs.rs/actor-runtime), which
//! re-exports it: depend on `actor-runtime`, not on this crate.
//!
//! The macro only parses, validates and emits: `args` reads the options, `input` checks the
//! function, `expand` writes the items that register it with the runtime. Behaviour lives in
//! the runtime, which the generated code reaches through `actor_runtime::__private`.

mod args;
mod duration;
mod expand;
mod input;
mod suggest;

use proc_macro::TokenStream;

#[doc = include_str!("actor.md")]
#[proc_macro_attribute]
pub fn actor(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::actor(args.into(), item.into()).into()
}
