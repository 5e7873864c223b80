//! The creditor app's webhook. With `REDIS_URL` it only enqueues (run `creditor_worker` for
//! the pipeline); without it, it also runs a worker in this process on the in-memory stub
//! broker, so the whole app works with no setup.
//!
//! ```text
//! WEBHOOK_SECRET=dev cargo run -p actor-examples --example creditor_webhook
//! ```

use std::process::ExitCode;

use actor_examples::creditor_app::settings::{use_app_namespace, Settings};
use actor_examples::creditor_app::{actors, webhook};
use actor_runtime::{get_broker, worker::wait_for_signal, Worker};

#[tokio::main]
async fn main() -> ExitCode {
    use_app_namespace();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let broker = match get_broker() {
        Ok(broker) => broker,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // Without Redis nothing else can reach the in-memory broker: run the pipeline here.
    let worker = if settings.redis_url.is_none() {
        match Worker::new(broker.clone())
            .threads(settings.worker_threads)
            .queues(actors::QUEUES)
            .start()
            .await
        {
            Ok(worker) => Some(worker),
            Err(err) => {
                eprintln!("error: cannot start the in-process worker: {err}");
                return ExitCode::from(3);
            }
        }
    } else {
        None
    };
    let listener = match tokio::net::TcpListener::bind(settings.webhook_addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", settings.webhook_addr);
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        addr = %settings.webhook_addr,
        env = ?settings.env,
        broker = broker.kind(),
        in_process_worker = worker.is_some(),
        "webhook listening on POST /webhooks/inbound-email"
    );
    let served = axum::serve(listener, webhook::router(settings.webhook_secret.clone()))
        .with_graceful_shutdown(async {
            let _ = wait_for_signal().await;
        })
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, "webhook server failed");
    }
    if let Some(worker) = worker {
        if let Err(err) = worker.stop().await {
            tracing::error!(error = %err, "stopping the worker failed");
        }
    }
    broker.close().await;
    ExitCode::SUCCESS
}
