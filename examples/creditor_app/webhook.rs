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
pub const SECRET_HEADER: &str = "x-webhook-secret";

/// `POST /webhooks/inbound-email` (JSON `{from, to, subject, body}`) and `GET /healthz`.
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
