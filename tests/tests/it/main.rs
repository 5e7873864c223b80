//! Integration tests: one binary, one module per feature.

mod common;
mod composition;
mod rate_limits;
mod results;
mod results_interop;
mod results_support;
mod stub_worker;
