//! The inbound-email webhook: checks the shared secret before reading anything else of the
//! request, accepts the email, enqueues `process_email`, answers 202 at once. Every refusal
//! is a JSON `{"error": ..}`, logged without the body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

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
    let secret = Arc::new(secret);
    Router::new()
        .route(
            "/webhooks/inbound-email",
            post(inbound_email).route_layer(middleware::from_fn_with_state(
                secret.clone(),
                require_secret,
            )),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// A refusal: its status and a JSON `{"error": why}`, logged without the request's body.
fn refuse(status: StatusCode, why: &str) -> Response {
    tracing::warn!(
        status = status.as_u16(),
        reason = why,
        "webhook request refused"
    );
    (status, Json(json!({ "error": why }))).into_response()
}

/// Runs before the body is read: a caller without the secret learns nothing about what the
/// endpoint expects.
async fn require_secret(
    State(secret): State<Arc<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(given, secret.expose().as_bytes()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Webhook-Secret",
        );
    }
    next.run(request).await
}

async fn inbound_email(headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/json",
        );
    }
    let email: InboundEmail = match serde_json::from_slice(&body) {
        Ok(email) => email,
        Err(err) => {
            let why = format!(
                "the body is not an inbound email (from, to, subject, body): {} at line {} column {}",
                match err.classify() {
                    serde_json::error::Category::Data => "wrong or missing field",
                    _ => "invalid JSON",
                },
                err.line(),
                err.column()
            );
            return refuse(StatusCode::UNPROCESSABLE_ENTITY, &why);
        }
    };
    if email.from.trim().is_empty() {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "`from` is empty");
    }
    match process_email::send(email).await {
        Ok(sent) => (
            StatusCode::ACCEPTED,
            Json(json!({"message_id": sent.message_id})),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "could not enqueue process_email");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not queue the email; retry later",
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

    use std::time::Duration;

    use actor_runtime::{set_broker, Broker, Worker};
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::creditor_app::actors::{recent_matches, QUEUES};
    use crate::creditor_app::creditors::MatchOutcome;

    /// POSTs `body` with `secret`; returns the status line and the body.
    async fn post(addr: std::net::SocketAddr, secret: &str, body: &str) -> (String, String) {
        post_as(addr, secret, "application/json", body).await
    }

    async fn post_as(
        addr: std::net::SocketAddr,
        secret: &str,
        content_type: &str,
        body: &str,
    ) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /webhooks/inbound-email HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n\
             {SECRET_HEADER}: {secret}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn the_secret_is_checked_before_the_body_and_every_refusal_is_json() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(Secret::new("s3cret"))).await });

        // Without the secret, nothing about the body is revealed, whatever it is.
        for (content_type, body) in [
            ("application/json", "{not json"),
            ("application/json", r#"{"from": 1}"#),
            ("text/plain", "hello"),
        ] {
            let (status, reply) = post_as(addr, "wrong", content_type, body).await;
            assert!(status.contains("401"), "{content_type} {body}: {status}");
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(reply, json!({"error": "missing or wrong X-Webhook-Secret"}));
        }
        // With it, refusals are JSON too.
        for (content_type, body, code) in [
            ("application/json", "{not json", "422"),
            ("application/json", r#"{"from": 1}"#, "422"),
            ("text/plain", "hello", "415"),
        ] {
            let (status, reply) = post_as(addr, "s3cret", content_type, body).await;
            assert!(status.contains(code), "{content_type} {body}: {status}");
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert!(reply["error"].is_string(), "{reply}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inbound_email_runs_the_whole_pipeline_on_the_stub_broker() {
        let broker = Broker::stub();
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
