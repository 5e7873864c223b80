//! `cancel <id>...`, and `CANCELLATION=1` turning the middleware on in workers.

use std::io::Write;

use clap::Args;
use serde_json::{json, Value};

use super::{env_var, Exit, Failure};
use crate::broker::Broker;
use crate::cancel::{CancelOutcome, Cancellation};

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// Message ids (`message_id`, as `enqueue` prints it and the logs show it).
    #[arg(value_name = "MESSAGE_ID", required = true)]
    pub(crate) ids: Vec<String>,
    /// Print JSON instead of text: one object per id, `{"message_id", "outcome", "queue"}`.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The Cancellation middleware of the environment: `CANCELLATION_NAMESPACE`, over the
/// broker's Redis (or `REDIS_URL` beside RabbitMQ).
fn from_env(broker: &Broker) -> Result<Cancellation, Failure> {
    let mut cancellation = Cancellation::for_broker(broker).map_err(Failure::from)?;
    if let Some(ns) = env_var("CANCELLATION_NAMESPACE").filter(|ns| !ns.trim().is_empty()) {
        cancellation = cancellation.namespace(ns.trim());
    }
    Ok(cancellation)
}

/// Adds the Cancellation middleware when `CANCELLATION` says so and the app did not add one.
pub(crate) fn install(broker: &Broker) -> Result<(), Failure> {
    let on = match env_var("CANCELLATION").as_deref().map(str::trim) {
        None | Some("" | "0" | "false" | "off" | "no") => false,
        Some("1" | "true" | "on" | "yes") => true,
        Some(other) => {
            return Err(Failure::usage(format!(
                "CANCELLATION: expected 1 or 0, got `{other}`"
            )))
        }
    };
    if on && broker.find::<Cancellation>().is_none() {
        broker.add_middleware(from_env(broker)?);
    }
    Ok(())
}

pub(crate) async fn cancel(
    broker: &Broker,
    args: CancelArgs,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let own;
    let cancellation = match broker.find::<Cancellation>() {
        Some(found) => found,
        None => {
            own = std::sync::Arc::new(from_env(broker)?);
            own.clone()
        }
    };
    let mut missed = 0;
    let mut items = Vec::new();
    for id in &args.ids {
        let outcome = cancellation
            .cancel(broker, id)
            .await
            .map_err(Failure::from)?;
        if !outcome.stops_it() && outcome != CancelOutcome::Requested {
            missed += 1;
        }
        if args.json {
            let (name, queue) = match &outcome {
                CancelOutcome::Waiting { queue } => ("waiting", Some(queue)),
                CancelOutcome::Held { queue } => ("held", Some(queue)),
                CancelOutcome::Delayed { queue, .. } => ("delayed", Some(queue)),
                CancelOutcome::DeadLettered { queue } => ("dead_lettered", Some(queue)),
                CancelOutcome::NotFound => ("not_found", None),
                _ => ("requested", None),
            };
            items.push(json!({"message_id": id, "outcome": name, "queue": queue}));
        } else {
            let _ = writeln!(out, "{id}: {outcome}");
        }
    }
    if args.json {
        let _ = writeln!(out, "{}", Value::Array(items));
    }
    if missed > 0 {
        return Err(Failure {
            exit: Exit::NothingToCancel,
            message: format!(
                "{missed} of {} messages had nothing to cancel (not found: finished or unknown; or dead-lettered)",
                args.ids.len()
            ),
        });
    }
    Ok(())
}
