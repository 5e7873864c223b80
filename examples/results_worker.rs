//! A CLI worker that stores what its actors return: `cli::App` adds the `Results` middleware
//! to the broker the CLI builds from the environment, in every worker process it starts.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run -p actor-examples --example results_worker -- -p 1
//! # elsewhere: enqueue, then read the result
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run -p actor-examples --example results_worker -- \
//!     enqueue word_count --args '["to be or not to be"]' --id-only
//! ```
//!
//! A producer reads the result with `word_count::message(..).send().await?.get_result(..)` on
//! a broker with the same `Results` middleware.

use std::process::ExitCode;

use actor_runtime::actor;
use actor_runtime::cli::App;
use actor_runtime::results::{RedisResultBackend, Results};

/// Counts the words of `text`; the count is kept for a day.
#[actor(store_results = true, result_ttl = "1d")]
async fn word_count(text: String) -> usize {
    text.split_whitespace().count()
}

fn main() -> ExitCode {
    App::new()
        .version(env!("CARGO_PKG_VERSION"))
        .configure(|broker| {
            // Results next to the queues (or RESULTS_URL); connects on first use.
            let url = std::env::var("RESULTS_URL").or_else(|_| std::env::var("REDIS_URL"))?;
            broker.add_middleware(Results::new(RedisResultBackend::new(url)?));
            Ok(())
        })
        .run()
}
