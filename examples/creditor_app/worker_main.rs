//! The creditor app's worker: the app's settings are checked first, then the runtime's CLI
//! runs the pipeline's actors (`--processes`, `--threads`, `queues`, `dead-letters`...).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/0 WEBHOOK_SECRET=dev \
//!     cargo run -p actor-examples --example creditor_worker -- --processes 2 --threads 4
//! ```

use std::process::ExitCode;

use actor_examples::creditor_app::{actors, settings::Settings};

fn main() -> ExitCode {
    // Operator commands (`queues`, `enqueue`...) and help do not need the app's settings.
    let operator = std::env::args().skip(1).any(|a| {
        matches!(
            a.as_str(),
            "enqueue"
                | "queues"
                | "dead-letters"
                | "actors"
                | "help"
                | "-h"
                | "--help"
                | "-V"
                | "--version"
        )
    });
    if !operator {
        if let Err(err) = Settings::from_env() {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    }
    // Naming the pipeline keeps its actors linked in, whatever the linker would drop.
    let _ = actors::QUEUES;
    actor_runtime::cli::main()
}
