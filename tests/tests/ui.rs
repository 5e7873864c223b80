//! The `#[actor]` attribute's diagnostics (`ui/fail`, one file per mistake, each with the
//! exact error the user sees) and the programs it must accept (`ui/pass`).
//!
//! Refresh the expected output with `TRYBUILD=overwrite cargo test -p actor-tests --test ui`
//! and read the diff: it is user-facing text.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
