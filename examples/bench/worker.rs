//! The benchmark worker: the harness's actors under the standard worker CLI
//! (`--processes P --threads T`), on the Redis at `BENCH_REDIS_URL`, or on RabbitMQ when
//! `RABBITMQ_URL` is set (the CLI's broker choice).

#[path = "actors.rs"]
mod actors;

fn main() -> std::process::ExitCode {
    if std::env::var_os("REDIS_URL").is_none() {
        // The harness names its Redis BENCH_REDIS_URL; the worker reads REDIS_URL.
        std::env::set_var("REDIS_URL", actors::redis_url());
    }
    actor_runtime::cli::main()
}
