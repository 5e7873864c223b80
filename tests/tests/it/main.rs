//! Integration tests: one binary, one module per feature.

mod common;
mod faults;
mod redis_broker;
mod stub_worker;
