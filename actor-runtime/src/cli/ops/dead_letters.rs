//! `dead-letters list|requeue|purge`.

use std::io::Write;

use serde_json::{json, Value};

use super::{declared, plural, shorten};
use crate::broker::Broker;
use crate::cli::args::DeadLetterSelection;
use crate::cli::{Exit, Failure};

pub(super) async fn list_dead(
    broker: &Broker,
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
    broker: &Broker,
    selection: DeadLetterSelection,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    declared(broker, &selection.queue).await?;
    let chosen = chosen(broker, &selection).await?;
    // With job records, their message ids (read before they move) go back to `enqueued`.
    #[cfg(feature = "postgres")]
    let recorded =
        super::records::requeued_ids(broker, &selection.queue, chosen.as_deref()).await?;
    let moved = broker
        .requeue_dead_letters(&selection.queue, chosen.as_deref())
        .await
        .map_err(Failure::from)?;
    #[cfg(feature = "postgres")]
    if let Some(ids) = recorded {
        super::records::mark_requeued(&ids).await;
    }
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
    all_done(
        chosen.as_deref(),
        moved,
        "requeued: the others cannot be read (they stay dead) or were handled meanwhile",
    )
}

pub(super) async fn purge_dead(
    broker: &Broker,
    selection: DeadLetterSelection,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    declared(broker, &selection.queue).await?;
    let chosen = chosen(broker, &selection).await?;
    let purged = match &chosen {
        None => broker.purge_dead_letters(&selection.queue).await,
        Some(ids) => broker.delete_dead_letters(&selection.queue, ids).await,
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
    all_done(
        chosen.as_deref(),
        purged,
        "purged: the others were handled meanwhile",
    )
}

/// The dead letters `--id` chooses (`None`: all of them). An id is a dead letter's own (as
/// `list` shows it) or its message's (the `message_id` of every log line, which stays the
/// same through retries and requeues). An id that matches nothing refuses the whole command
/// before anything changes: a script must not take a typo for success.
async fn chosen(
    broker: &Broker,
    selection: &DeadLetterSelection,
) -> Result<Option<Vec<String>>, Failure> {
    if selection.ids.is_empty() {
        return Ok(None);
    }
    // Every dead letter: a message id can only be found in the payloads. The bound is what
    // Redis' ZRANGE takes.
    let dead = broker
        .dead_letters(&selection.queue, i64::MAX as usize)
        .await
        .map_err(Failure::from)?;
    let mut ids = Vec::new();
    let mut unknown = Vec::new();
    for wanted in &selection.ids {
        let before = ids.len();
        ids.extend(
            dead.iter()
                .filter(|d| {
                    d.id == *wanted || d.message.as_ref().is_ok_and(|m| m.message_id == *wanted)
                })
                .map(|d| d.id.clone()),
        );
        if ids.len() == before {
            unknown.push(format!("`{wanted}`"));
        }
    }
    if !unknown.is_empty() {
        return Err(Failure {
            exit: Exit::Usage,
            message: format!(
                "no dead letter of {} has the id{} {} (give the id `dead-letters list` shows, \
                 or the message id of the logs); nothing was changed",
                selection.queue,
                plural(unknown.len()),
                unknown.join(", ")
            ),
        });
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(Some(ids))
}

/// Fails (exit 1) when fewer dead letters than chosen were handled, after the output said
/// how many were.
fn all_done(chosen: Option<&[String]>, done: usize, outcome: &str) -> Result<(), Failure> {
    match chosen {
        Some(ids) if done < ids.len() => Err(Failure {
            exit: Exit::Killed,
            message: format!("{done} of the {} chosen dead letters {outcome}", ids.len()),
        }),
        _ => Ok(()),
    }
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
