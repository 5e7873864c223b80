//! Integration tests: one binary, one module per feature.

mod cli;
mod common;
mod stub_worker;
