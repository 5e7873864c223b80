//! Integration tests: one binary, one module per feature.

mod common;
mod stub_worker;
