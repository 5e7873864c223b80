//! Example programs for actor-runtime: see the `[[example]]` targets of this crate.
