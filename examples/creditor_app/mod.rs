//! The creditor-email app: a realistic program on actor-runtime, in the spirit of the
//! system the framework was first built for.
//!
//! A mail provider posts inbound emails to an axum [`webhook`]; it checks a shared secret
//! and enqueues [`process_email`](actors::process_email()), which chains
//! [`extract_creditor`](actors::extract_creditor()) (rules standing in for an LLM call) and
//! [`match_creditor`](actors::match_creditor()) (a small in-memory table). [`settings`] are
//! typed, read from the environment and validated at start-up.
//!
//! Two binaries (examples of this crate):
//!
//! ```text
//! # Zero setup: the webhook and a worker in one process, on the in-memory stub broker.
//! WEBHOOK_SECRET=dev cargo run -p actor-examples --example creditor_webhook
//! curl -s localhost:8080/webhooks/inbound-email -H 'x-webhook-secret: dev' \
//!   -H 'content-type: application/json' \
//!   -d '{"from":"Stadtwerke Berlin <billing@swb.example>","to":"inbox@us.example",
//!        "subject":"Reminder","body":"Invoice SWB-2024-0042, amount due: EUR 120,00"}'
//!
//! # On Redis: the webhook only enqueues; workers run the pipeline.
//! export REDIS_URL=redis://127.0.0.1:6379/0 WEBHOOK_SECRET=dev
//! cargo run -p actor-examples --example creditor_webhook &
//! cargo run -p actor-examples --example creditor_worker -- --processes 2
//! ```

pub mod actors;
pub mod creditors;
pub mod extract;
pub mod settings;
pub mod webhook;
