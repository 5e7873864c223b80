//! The pipeline: `process_email` → `extract_creditor` → `match_creditor`, each step an actor
//! on its own queue that sends the next step when it succeeds (so a failure retries only
//! its own step).

use std::sync::Mutex;

use actor_runtime::actor;
use serde::{Deserialize, Serialize};

use super::creditors::{self, MatchOutcome};
use super::extract::{self, Extraction};

/// An inbound email as the mail provider posts it to the webhook.
///
/// ```
/// use actor_examples::creditor_app::actors::InboundEmail;
///
/// let email: InboundEmail = serde_json::from_str(
///     r#"{"from": "a@b.example", "to": "inbox@us.example", "subject": "Hi", "body": "..."}"#,
/// )
/// .unwrap();
/// assert_eq!(email.subject, "Hi");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEmail {
    /// Sender, `Name <address>` or a bare address.
    pub from: String,
    /// Our receiving address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// The queues of the pipeline, for `--queues` and for tests.
///
/// ```
/// use actor_examples::creditor_app::actors::{process_email, QUEUES};
/// use actor_runtime::Actor;
///
/// assert_eq!(QUEUES[0], <process_email as Actor>::QUEUE);
/// ```
pub const QUEUES: [&str; 3] = [
    "creditor_emails",
    "creditor_extraction",
    "creditor_matching",
];

/// First step: accept an inbound email and hand it to extraction.
#[actor(
    queue_name = "creditor_emails",
    max_retries = 5,
    min_backoff = "1s",
    max_backoff = "5m"
)]
pub async fn process_email(email: InboundEmail) -> Result<(), actor_runtime::Error> {
    tracing::info!(from = %email.from, subject = %email.subject, "processing inbound email");
    if email.body.trim().is_empty() && email.subject.trim().is_empty() {
        tracing::warn!(from = %email.from, "empty email: nothing to extract");
        return Ok(());
    }
    extract_creditor::send(email).await?;
    Ok(())
}

/// Second step: read creditor, reference and amount out of the email (the LLM call in the
/// real system; rules here, see [`extract::extract`]), then match them.
#[actor(queue_name = "creditor_extraction", max_retries = 3, time_limit = "2m")]
pub async fn extract_creditor(email: InboundEmail) -> Result<Extraction, actor_runtime::Error> {
    let extraction = extract::extract(&email.from, &email.subject, &email.body);
    tracing::info!(from = %email.from, ?extraction, "extracted");
    match_creditor::send(email.from, extraction.clone()).await?;
    Ok(extraction)
}

/// Last step: match against the known creditors; the outcome is the actor's result (and
/// kept in [`recent_matches`] for this demo).
#[actor(queue_name = "creditor_matching")]
pub async fn match_creditor(from: String, extraction: Extraction) -> MatchOutcome {
    let outcome = creditors::match_creditor(&extraction);
    match &outcome {
        MatchOutcome::Matched {
            creditor_name,
            confidence,
            ..
        } => tracing::info!(%from, creditor = %creditor_name, %confidence, "creditor matched"),
        MatchOutcome::Unmatched { .. } => {
            tracing::warn!(%from, "no known creditor: needs a person")
        }
    }
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == 100 {
        recent.remove(0);
    }
    recent.push((from, outcome.clone()));
    outcome
}

static RECENT: Mutex<Vec<(String, MatchOutcome)>> = Mutex::new(Vec::new());

/// The last 100 outcomes matched in this process, oldest first, by sender.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use actor_examples::creditor_app::{actors, extract::Extraction};
///
/// // The function stays callable as written: no broker needed.
/// actors::match_creditor("a@b.example".into(), Extraction::default()).await;
/// assert_eq!(actors::recent_matches().last().unwrap().0, "a@b.example");
/// # });
/// ```
pub fn recent_matches() -> Vec<(String, MatchOutcome)> {
    RECENT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
