//! Integration tests: one binary, one module per feature.

mod blocking;
mod cli;
mod cli_crashes;
mod cli_logs;
mod cli_ops;
mod cli_redis;
mod cli_settings;
mod common;
mod composition;
mod faults;
mod hostile_messages;
mod interop;
mod rate_limits;
mod redis_broker;
mod redis_coalesce;
mod redis_delayed;
mod redis_pressure;
mod results;
mod results_interop;
mod results_on_redis_broker;
mod results_support;
mod slow_jobs;
mod testing_actors;
mod wire_values;
mod worker;
