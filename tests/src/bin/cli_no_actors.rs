//! A worker binary with no actor linked in: the CLI must refuse to start it (exit 2).

fn main() -> std::process::ExitCode {
    actor_runtime::cli::main()
}
