//! The inbound-email webhook: checks the shared secret, accepts the email, enqueues
//! `process_email`, answers 202 at once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::actors::{process_email, InboundEmail};
use super::settings::Secret;

/// The header the mail provider puts the shared secret in.
///
/// ```
/// assert_eq!(actor_examples::creditor_app::webhook::SECRET_HEADER, "x-webhook-secret");
/// ```
pub const SECRET_HEADER: &str = "x-webhook-secret";

/// `POST /webhooks/inbound-email` (JSON `{from, to, subject, body}`) and `GET /healthz`.
///
/// ```
/// use actor_examples::creditor_app::{settings::Secret, webhook::router};
///
/// let app: axum::Router = router(Secret::new("shared-secret"));
/// # let _ = app;
/// ```
pub fn router(secret: Secret) -> Router {
    Router::new()
        .route("/webhooks/inbound-email", post(inbound_email))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(secret))
}

async fn inbound_email(
    State(secret): State<Arc<Secret>>,
    headers: HeaderMap,
    Json(email): Json<InboundEmail>,
) -> (StatusCode, Json<Value>) {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(given, secret.expose().as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong X-Webhook-Secret"})),
        );
    }
    if email.from.trim().is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "`from` is empty"})),
        );
    }
    match process_email::send(email).await {
        Ok(sent) => (
            StatusCode::ACCEPTED,
            Json(json!({"message_id": sent.message_id})),
        ),
        Err(err) => {
            tracing::error!(error = %err, "could not enqueue process_email");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "could not queue the email; retry later"})),
            )
        }
    }
}

/// Compares without an early exit, so the time taken does not leak the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use actor_runtime::{set_broker, Broker, StubBroker, Worker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::creditor_app::actors::{recent_matches, QUEUES};
    use crate::creditor_app::creditors::MatchOutcome;

    /// POSTs `body` with `secret`; returns the status line and the body.
    async fn post(addr: std::net::SocketAddr, secret: &str, body: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /webhooks/inbound-email HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             {SECRET_HEADER}: {secret}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inbound_email_runs_the_whole_pipeline_on_the_stub_broker() {
        let broker = Arc::new(StubBroker::new());
        set_broker(broker.clone());
        let worker = Worker::new(broker.clone())
            .queues(QUEUES)
            .start()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(Secret::new("s3cret"))).await });

        let email = r#"{"from": "Acme Collections <dunning@acme.example>", "to": "inbox@us.example",
            "subject": "Final notice", "body": "Invoice number: INV-7781\nTotal due: $2,450.00"}"#;
        let (status, _) = post(addr, "wrong", email).await;
        assert!(status.contains("401"), "{status}");
        let (status, body) = post(addr, "s3cret", email).await;
        assert!(status.contains("202"), "{status}");
        assert!(body.contains("message_id"), "{body}");

        // Each step sends the next before it is acked, so the queues drain in order.
        for queue in QUEUES {
            broker
                .join(queue, Some(Duration::from_secs(10)), true)
                .await
                .unwrap();
        }
        let matched = recent_matches()
            .into_iter()
            .find(|(from, _)| from.contains("dunning@acme.example"))
            .expect("the email was matched");
        assert!(
            matches!(&matched.1, MatchOutcome::Matched { creditor_id, confidence, amount_cents, .. }
                if creditor_id == "cr-003" && confidence == "high" && *amount_cents == Some(245_000)),
            "{matched:?}"
        );
        worker.stop().await.unwrap();
    }
}
