//! `dead-letters list|requeue|purge`.

use std::io::Write;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{declared, plural, shorten};
use crate::broker::Broker;
use crate::cli::args::DeadLetterSelection;
use crate::cli::Failure;

pub(super) async fn list_dead(
    broker: &Arc<dyn Broker>,
    queue: &str,
    limit: usize,
    json_output: bool,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    declared(broker, queue).await?;
    let dead = broker
        .dead_letters(queue, limit)
        .await
        .map_err(Failure::from)?;
    if json_output {
        let items: Vec<Value> = dead
            .iter()
            .map(|d| {
                let (message, error) = match &d.message {
                    Ok(m) => (serde_json::to_value(m).unwrap_or(Value::Null), None),
                    Err(e) => (Value::Null, Some(e.clone())),
                };
                json!({"id": d.id, "dead_at": d.dead_at, "reason": d.reason, "message": message, "error": error})
            })
            .collect();
        let _ = writeln!(out, "{}", Value::Array(items));
        return Ok(());
    }
    if dead.is_empty() {
        let _ = writeln!(out, "no dead letters in {queue}");
        return Ok(());
    }
    for d in &dead {
        let _ = writeln!(out, "{}  dead since {}", d.id, utc(d.dead_at));
        match &d.message {
            Ok(m) => {
                let args = Value::Array(m.args.clone()).to_string();
                let _ = writeln!(
                    out,
                    "    {}({}) message {}",
                    m.actor_name,
                    shorten(&args[1..args.len() - 1], 80),
                    m.message_id
                );
            }
            Err(e) => {
                let _ = writeln!(out, "    unreadable message: {e}");
            }
        }
        if let Some(reason) = &d.reason {
            let _ = writeln!(out, "    reason: {}", shorten(reason, 200));
        }
    }
    Ok(())
}

pub(super) async fn requeue_dead(
    broker: &Arc<dyn Broker>,
    selection: DeadLetterSelection,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    declared(broker, &selection.queue).await?;
    let ids = (!selection.ids.is_empty()).then_some(selection.ids.as_slice());
    let moved = broker
        .requeue_dead_letters(&selection.queue, ids)
        .await
        .map_err(Failure::from)?;
    if selection.output.json {
        let _ = writeln!(
            out,
            "{}",
            json!({"queue": selection.queue, "requeued": moved})
        );
    } else {
        let _ = writeln!(
            out,
            "requeued {moved} dead letter{} of {}",
            plural(moved),
            selection.queue
        );
    }
    Ok(())
}

pub(super) async fn purge_dead(
    broker: &Arc<dyn Broker>,
    selection: DeadLetterSelection,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    declared(broker, &selection.queue).await?;
    let purged = if selection.ids.is_empty() {
        broker.purge_dead_letters(&selection.queue).await
    } else {
        broker
            .delete_dead_letters(&selection.queue, &selection.ids)
            .await
    }
    .map_err(Failure::from)?;
    if selection.output.json {
        let _ = writeln!(
            out,
            "{}",
            json!({"queue": selection.queue, "purged": purged})
        );
    } else {
        let _ = writeln!(
            out,
            "purged {purged} dead letter{} of {}",
            plural(purged),
            selection.queue
        );
    }
    Ok(())
}

/// `2024-05-01 12:34:56Z` from ms since the epoch (days to a civil date, Howard Hinnant's
/// algorithm; no calendar dependency for one column).
pub(super) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
