//! The dashboard's actions (POST): requeue or delete one message or all that match a filter,
//! each after a confirmation page; pause and resume a queue. Every action passes the
//! cross-site checks and is logged with who did it.

use std::fmt::Write;

use axum::extract::{Path, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::auth::{cross_site, User};
use super::html::{esc, hidden, url};
use super::queue::{parse_state, Filter};
use super::State;
use crate::broker::MessageState;
use crate::message::is_valid_queue_name;

/// A page of the bulk actions' scan: large, as a Redis `LRANGE` page costs its offset too.
const SCAN_PAGE: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    state: Option<String>,
    /// One message, by the broker's id.
    #[serde(default)]
    id: Option<String>,
    /// Every message that matches the filter.
    #[serde(default)]
    all: Option<String>,
    #[serde(flatten)]
    filter: Filter,
    /// Set by the confirmation page.
    #[serde(default)]
    confirmed: Option<String>,
}

pub(crate) async fn action(
    AxumState(ctx): AxumState<State>,
    Path((queue, action)): Path<(String, String)>,
    Extension(User(user)): Extension<User>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if ctx.read_only {
        return ctx.error(StatusCode::FORBIDDEN, "This dashboard is read-only.");
    }
    if let Some(why) = cross_site(&headers, &form.csrf, &ctx.csrf) {
        tracing::warn!(user = %user, action = %action, queue = %queue, reason = why, "dashboard: refused an action");
        return ctx.error(StatusCode::FORBIDDEN, &format!("Refused: {why}."));
    }
    if !is_valid_queue_name(&queue) {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            &format!("`{queue}` is not a queue name"),
        );
    }
    let state = match parse_state(form.state.as_deref()) {
        Ok(state) => state,
        Err(err) => return ctx.error(StatusCode::BAD_REQUEST, &err),
    };
    match action.as_str() {
        "pause" | "resume" => {
            let Some(pause) = ctx.broker.backend().pause() else {
                return ctx.error(
                    StatusCode::NOT_IMPLEMENTED,
                    &format!("The {} broker cannot pause a queue.", ctx.broker.kind()),
                );
            };
            let paused = action == "pause";
            if let Err(err) = pause.set_paused(&queue, paused).await {
                return ctx.error(StatusCode::BAD_GATEWAY, &format!("the broker: {err}"));
            }
            tracing::info!(user = %user, queue = %queue, action = %action, "dashboard: queue {}", if paused { "paused" } else { "resumed" });
            let done = format!(
                "{} {queue}: our workers {} within a second.",
                if paused { "Paused" } else { "Resumed" },
                if paused {
                    "stop fetching from it"
                } else {
                    "fetch from it again"
                }
            );
            redirect(&ctx, &queue, state, &form.filter, &done)
        }
        "requeue" | "delete" => {
            if action == "requeue" && state != MessageState::Dead {
                return ctx.error(
                    StatusCode::BAD_REQUEST,
                    "Only dead letters can be requeued.",
                );
            }
            let bulk = form.all.as_deref() == Some("1");
            if !bulk && form.id.as_deref().is_none_or(str::is_empty) {
                return ctx.error(
                    StatusCode::BAD_REQUEST,
                    "Choose a message (id) or all (all=1).",
                );
            }
            let chosen = match choose(&ctx, &queue, state, &form, bulk).await {
                Ok(chosen) => chosen,
                Err(err) => {
                    return ctx.error(StatusCode::BAD_GATEWAY, &format!("the broker: {err}"))
                }
            };
            if form.confirmed.as_deref() != Some("yes") {
                return confirm(&ctx, &queue, &action, state, &form, bulk, &chosen);
            }
            let done = match perform(&ctx, &queue, &action, state, &chosen).await {
                Ok(n) => n,
                Err(err) => {
                    return ctx.error(StatusCode::BAD_GATEWAY, &format!("the broker: {err}"))
                }
            };
            let what = if state == MessageState::Dead {
                "dead letter"
            } else {
                "message"
            };
            let verb = if action == "requeue" {
                "Requeued"
            } else {
                "Deleted"
            };
            tracing::info!(user = %user, queue = %queue, action = %action, state = state.as_str(), chosen = chosen.ids.len(), done, filter_actor = %form.filter.actor, filter_text = %form.filter.text, "dashboard: {} {what}s", verb.to_lowercase());
            let mut text = format!("{verb} {done} {what}{} of {queue}.", plural(done));
            if done < chosen.ids.len() {
                let _ = write!(
                    text,
                    " {} of those chosen were gone meanwhile (run, requeued or deleted) or cannot be read.",
                    chosen.ids.len() - done
                );
            }
            redirect(&ctx, &queue, state, &form.filter, &text)
        }
        _ => ctx.error(StatusCode::NOT_FOUND, "There is no such action."),
    }
}

/// The messages an action applies to: broker ids, and message ids (for the job records).
struct Chosen {
    ids: Vec<String>,
    message_ids: Vec<String>,
}

async fn choose(
    ctx: &State,
    queue: &str,
    state: MessageState,
    form: &ActionForm,
    bulk: bool,
) -> crate::Result<Chosen> {
    let mut chosen = Chosen {
        ids: Vec::new(),
        message_ids: Vec::new(),
    };
    let inspect = ctx.broker.backend().inspect();
    if !bulk {
        let id = form.id.clone().unwrap_or_default();
        // The message id, for the job records (only then: it reads every dead letter).
        if state == MessageState::Dead && ctx.jobs_enabled() {
            if let Ok(dead) = ctx.broker.dead_letters(queue, i64::MAX as usize).await {
                if let Some(m) = dead
                    .into_iter()
                    .find(|d| d.id == id)
                    .and_then(|d| d.message.ok())
                {
                    chosen.message_ids.push(m.message_id);
                }
            }
        }
        chosen.ids.push(id);
        return Ok(chosen);
    }
    let Some(inspect) = inspect else {
        // Dead letters of a broker that can list them but not page them: all at once.
        for d in ctx.broker.dead_letters(queue, i64::MAX as usize).await? {
            let item = crate::broker::ListedMessage {
                id: d.id,
                message: d.message,
                due_at: None,
                dead_at: Some(d.dead_at),
                reason: d.reason,
            };
            if form.filter.matches(&item) {
                if let Ok(m) = &item.message {
                    chosen.message_ids.push(m.message_id.clone());
                }
                chosen.ids.push(item.id);
            }
        }
        return Ok(chosen);
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = inspect
            .messages(queue, state, cursor.as_deref(), SCAN_PAGE)
            .await?;
        for item in page.items {
            if form.filter.matches(&item) {
                if let Ok(m) = &item.message {
                    chosen.message_ids.push(m.message_id.clone());
                }
                chosen.ids.push(item.id);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // HSCAN may return an entry twice.
    chosen.ids.sort_unstable();
    chosen.ids.dedup();
    Ok(chosen)
}

async fn perform(
    ctx: &State,
    queue: &str,
    action: &str,
    state: MessageState,
    chosen: &Chosen,
) -> crate::Result<usize> {
    if chosen.ids.is_empty() {
        return Ok(0);
    }
    if action == "requeue" {
        let moved = ctx
            .broker
            .requeue_dead_letters(queue, Some(&chosen.ids))
            .await?;
        #[cfg(feature = "postgres")]
        if let Some(records) = &ctx.records {
            if let Err(err) = records.requeued(&chosen.message_ids).await {
                tracing::warn!(error = %err, "job records: the requeued messages' records stay failed/dead");
            }
        }
        return Ok(moved);
    }
    match ctx.broker.backend().inspect() {
        Some(inspect) => inspect.delete(queue, state, &chosen.ids).await,
        None if state == MessageState::Dead => {
            ctx.broker.delete_dead_letters(queue, &chosen.ids).await
        }
        None => Err(crate::Error::Unsupported {
            what: "deleting waiting messages",
            broker: ctx.broker.kind(),
        }),
    }
}

fn confirm(
    ctx: &State,
    queue: &str,
    action: &str,
    state: MessageState,
    form: &ActionForm,
    bulk: bool,
    chosen: &Chosen,
) -> Response {
    let what = if state == MessageState::Dead {
        "dead letter"
    } else {
        "message"
    };
    let n = chosen.ids.len();
    let verb = if action == "requeue" {
        "Requeue"
    } else {
        "Delete"
    };
    let scope = if bulk {
        let mut scope = format!(
            "all {n} {} {what}{} of {}",
            state.as_str(),
            plural(n),
            queue
        );
        if !form.filter.is_empty() {
            let _ = write!(
                scope,
                " matching actor “{}” and text “{}”",
                form.filter.actor, form.filter.text
            );
        }
        scope
    } else {
        format!(
            "{what} {} of {queue}",
            form.id.as_deref().unwrap_or_default()
        )
    };
    let consequence = if action == "requeue" {
        "They go back to the end of the queue and run again."
    } else {
        "They are gone for good."
    };
    let mut body = format!(
        "<h1>{verb} {}?</h1><p>{verb} {}. {consequence}</p>",
        esc(what),
        esc(&scope)
    );
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{}queues/{}/{}\">{}{}{}{}{}{}{}\
         <div class=\"actions\"><button type=\"submit\"{} autofocus>{verb}</button> \
         <a href=\"{}queues/{}?state={}\">Cancel</a></div></form>",
        esc(&ctx.base),
        url(queue),
        esc(action),
        hidden("csrf", &ctx.csrf),
        hidden("state", state.as_str()),
        hidden("id", form.id.as_deref().unwrap_or_default()),
        hidden("all", if bulk { "1" } else { "" }),
        hidden("actor", &form.filter.actor),
        hidden("text", &form.filter.text),
        hidden("confirmed", "yes"),
        if action == "delete" {
            " class=\"danger\""
        } else {
            ""
        },
        esc(&ctx.base),
        url(queue),
        state.as_str(),
    );
    ctx.page(&format!("{verb} {what}"), "", &body)
}

/// Back to the queue's page (303, so a reload does not post again), saying what was done.
fn redirect(
    ctx: &State,
    queue: &str,
    state: MessageState,
    filter: &Filter,
    done: &str,
) -> Response {
    let location = format!(
        "{}queues/{}?state={}{}&done={}",
        ctx.base,
        url(queue),
        state.as_str(),
        filter.query(),
        url(done)
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
