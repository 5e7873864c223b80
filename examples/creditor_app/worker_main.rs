//! The creditor app's worker: the app's settings are checked first (the webhook's secret is
//! not its business), then the runtime's CLI runs the pipeline's actors (`--processes`,
//! `--threads`, `queues`, `dead-letters`...), 2 processes of 1 thread by default, in the
//! app's Redis namespace (`creditor_matcher` unless `DRAMATIQ_NAMESPACE` is set).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run -p actor-examples --example creditor_worker
//! ```

use std::process::ExitCode;

use actor_examples::creditor_app::actors;
use actor_examples::creditor_app::settings::{use_app_namespace, Role, Settings};

fn main() -> ExitCode {
    use_app_namespace();
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
        if let Err(err) = Settings::from_env_for(Role::Worker) {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    }
    // Naming the pipeline keeps its actors linked in, whatever the linker would drop.
    let _ = actors::QUEUES;
    actor_runtime::cli::main()
}
