//! Integration tests: one binary, one module per feature.

mod cli;
mod cli_redis;
mod common;
mod faults;
mod interop;
mod redis_broker;
mod stub_worker;
