//! Example programs for actor-runtime: see the `[[example]]` targets of this crate. The
//! library holds the code the creditor app's two binaries share.

pub mod creditor_app;
