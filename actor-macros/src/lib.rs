//! The `#[actor]` attribute (placeholder).
use proc_macro::TokenStream;

/// Declares an actor.
#[proc_macro_attribute]
pub fn actor(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
