//! A queue's page: its ready, delayed or dead messages a page at a time, with the forms of
//! the actions.

use std::fmt::Write;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::html::{esc, hidden, relative_ms, shorten, time_ms, url};
use super::State;
use crate::broker::{ListedMessage, MessageState};
use crate::message::is_valid_queue_name;

/// Messages per page.
pub(crate) const PAGE: usize = 50;

/// Which messages the page (or a bulk action) is about.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Filter {
    /// Only this actor's messages.
    #[serde(default)]
    pub(crate) actor: String,
    /// Only messages whose arguments, id or reason contain this text.
    #[serde(default)]
    pub(crate) text: String,
}

impl Filter {
    pub(crate) fn is_empty(&self) -> bool {
        self.actor.trim().is_empty() && self.text.trim().is_empty()
    }

    pub(crate) fn matches(&self, item: &ListedMessage) -> bool {
        let actor = self.actor.trim();
        let text = self.text.trim();
        let message = item.message.as_ref().ok();
        if !actor.is_empty() && message.is_none_or(|m| m.actor_name != actor) {
            return false;
        }
        if text.is_empty() {
            return true;
        }
        let mut haystack = item.id.clone();
        if let Some(m) = message {
            haystack.push_str(&m.message_id);
            haystack.push_str(&Value::Array(m.args.clone()).to_string());
            haystack.push_str(&Value::Object(m.kwargs.clone()).to_string());
        }
        if let Some(reason) = &item.reason {
            haystack.push_str(reason);
        }
        haystack.to_lowercase().contains(&text.to_lowercase())
    }

    /// The filter as query parameters (`&actor=..&text=..`).
    pub(crate) fn query(&self) -> String {
        format!("&actor={}&text={}", url(&self.actor), url(&self.text))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueueQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(flatten)]
    filter: Filter,
    /// What the last action did, shown once.
    #[serde(default)]
    done: Option<String>,
}

pub(crate) fn parse_state(state: Option<&str>) -> Result<MessageState, String> {
    match state {
        None | Some("") => Ok(MessageState::Ready),
        Some(s) => s.parse(),
    }
}

pub(crate) async fn queue(
    AxumState(ctx): AxumState<State>,
    Path(queue): Path<String>,
    Query(query): Query<QueueQuery>,
) -> Response {
    if !is_valid_queue_name(&queue) {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            &format!("`{queue}` is not a queue name"),
        );
    }
    let state = match parse_state(query.state.as_deref()) {
        Ok(state) => state,
        Err(err) => return ctx.error(StatusCode::BAD_REQUEST, &err),
    };
    let base = esc(&ctx.base);
    let q = url(&queue);
    let mut body = format!("<h1>Queue {}</h1>", esc(&queue));
    if let Some(done) = query.done.as_deref().filter(|d| !d.is_empty()) {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            esc(&shorten(done, 200))
        );
    }
    if let Ok(stats) = ctx.broker.stats(&queue).await {
        let _ = write!(
            body,
            "<p>{} ready, {} delayed, {} in flight, {} dead.</p>",
            stats.ready, stats.delayed, stats.in_flight, stats.dead
        );
    }

    // Pause / resume.
    match ctx.broker.backend().pause() {
        Some(pause) => {
            let paused = pause.paused().await.unwrap_or_default().contains(&queue);
            let (label, action, hint) = if paused {
                ("Resume", "resume", "<span class=\"badge bad\">paused</span> Our workers fetch nothing from this queue.")
            } else {
                ("Pause", "pause", "Our workers consume this queue.")
            };
            let _ = write!(body, "<p>{hint} <span class=\"muted\">(Python Dramatiq workers do not know the pause flag and keep consuming.)</span></p>");
            if !ctx.read_only {
                let _ = write!(
                    body,
                    "<form class=\"inline\" method=\"post\" action=\"{base}queues/{q}/{action}\">{}<button type=\"submit\">{label} consumption</button></form>",
                    hidden("csrf", &ctx.csrf)
                );
            }
        }
        None => {
            let _ = write!(
                body,
                "<p class=\"note\">The {} broker cannot pause a queue.</p>",
                esc(ctx.broker.kind())
            );
        }
    }

    // Tabs.
    body.push_str("<nav class=\"tabs\" aria-label=\"message state\">");
    for s in [
        MessageState::Ready,
        MessageState::Delayed,
        MessageState::Dead,
    ] {
        let current = if s == state {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<a href=\"{base}queues/{q}?state={}\"{current}>{}</a>",
            s.as_str(),
            s.as_str()
        );
    }
    body.push_str("</nav>");

    // Filter form.
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"{base}queues/{q}\">{}\
         <label>Actor <input name=\"actor\" value=\"{}\"></label>\
         <label>Text <input name=\"text\" value=\"{}\" placeholder=\"id, argument, reason\"></label>\
         <button type=\"submit\">Filter</button></form>",
        hidden("state", state.as_str()),
        esc(&query.filter.actor),
        esc(&query.filter.text)
    );

    let inspect = ctx.broker.backend().inspect();
    let listing = match (inspect, state) {
        (Some(inspect), _) => Some(
            inspect
                .messages(&queue, state, query.cursor.as_deref(), PAGE)
                .await,
        ),
        (None, MessageState::Dead) if ctx.broker.backend().dead_letters().is_some() => {
            // Dead letters without paging: the first page only.
            Some(ctx.broker.dead_letters(&queue, PAGE).await.map(|dead| {
                crate::broker::MessagePage {
                    items: dead
                        .into_iter()
                        .map(|d| ListedMessage {
                            id: d.id,
                            message: d.message,
                            due_at: None,
                            dead_at: Some(d.dead_at),
                            reason: d.reason,
                        })
                        .collect(),
                    next: None,
                }
            }))
        }
        (None, _) => None,
    };
    let page = match listing {
        None => {
            let _ = write!(
                body,
                "<p class=\"note\">The {} broker cannot list {} messages without consuming \
                 them, so they are not shown (the counts above are the broker's).</p>",
                esc(ctx.broker.kind()),
                state.as_str()
            );
            return ctx.page(&format!("Queue {queue}"), "", &body);
        }
        Some(Err(err)) => {
            let _ = write!(
                body,
                "<p class=\"error\" role=\"alert\">{}</p>",
                esc(&err.to_string())
            );
            return ctx.page(&format!("Queue {queue}"), "", &body);
        }
        Some(Ok(page)) => page,
    };

    let items: Vec<&ListedMessage> = page
        .items
        .iter()
        .filter(|i| query.filter.matches(i))
        .collect();
    if !ctx.read_only {
        body.push_str("<div class=\"actions\">");
        let bulk = |action: &str, label: &str, class: &str| {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"{base}queues/{q}/{action}\">{}{}{}{}{}\
                 <button type=\"submit\"{class}>{label}</button></form>",
                hidden("csrf", &ctx.csrf),
                hidden("state", state.as_str()),
                hidden("all", "1"),
                hidden("actor", &query.filter.actor),
                hidden("text", &query.filter.text),
            )
        };
        let scope = if query.filter.is_empty() {
            "all"
        } else {
            "all matching"
        };
        if state == MessageState::Dead {
            body.push_str(&bulk("requeue", &format!("Requeue {scope}…"), ""));
        }
        body.push_str(&bulk(
            "delete",
            &format!("Delete {scope}…"),
            " class=\"danger\"",
        ));
        body.push_str("</div>");
    }
    if items.is_empty() {
        let _ = write!(
            body,
            "<p>No {} messages{} on this page.</p>",
            state.as_str(),
            if query.filter.is_empty() {
                ""
            } else {
                " match the filter"
            }
        );
    } else {
        let extra = match state {
            MessageState::Ready => "",
            MessageState::Delayed => "<th>Due</th>",
            MessageState::Dead => "<th>Dead since</th><th>Reason</th>",
        };
        let _ = write!(
            body,
            "<div class=\"table\"><table><thead><tr><th>Actor</th><th>Arguments</th>\
             <th class=\"hide-small\">Message id</th>{extra}<th>Actions</th></tr></thead><tbody>"
        );
        for item in items {
            body.push_str(&row(&ctx, &queue, state, item, &query.filter));
        }
        body.push_str("</tbody></table></div>");
    }
    if let Some(next) = &page.next {
        let _ = write!(
            body,
            "<p><a href=\"{base}queues/{q}?state={}&cursor={}{}\" rel=\"next\">Next page</a></p>",
            state.as_str(),
            url(next),
            esc(&query.filter.query())
        );
    }
    if query.cursor.is_some() {
        let _ = write!(
            body,
            "<p><a href=\"{base}queues/{q}?state={}{}\">First page</a></p>",
            state.as_str(),
            esc(&query.filter.query())
        );
    }
    if state == MessageState::Delayed {
        body.push_str(
            "<p class=\"muted\">Delayed messages are listed in storage order, not by due time.</p>",
        );
    }
    ctx.page(&format!("Queue {queue}"), "", &body)
}

fn row(
    ctx: &State,
    queue: &str,
    state: MessageState,
    item: &ListedMessage,
    filter: &Filter,
) -> String {
    let (actor, args, message_id) = match &item.message {
        Ok(m) => {
            let mut args = Value::Array(m.args.clone()).to_string();
            if !m.kwargs.is_empty() {
                args.push(' ');
                args.push_str(&Value::Object(m.kwargs.clone()).to_string());
            }
            let id = if ctx.jobs_enabled() {
                format!(
                    "<a href=\"{}jobs/{}\"><code>{}</code></a>",
                    esc(&ctx.base),
                    url(&m.message_id),
                    esc(&m.message_id)
                )
            } else {
                format!("<code>{}</code>", esc(&m.message_id))
            };
            (esc(&m.actor_name), esc(&shorten(&args, 120)), id)
        }
        Err(err) => (
            "<span class=\"bad\">unreadable</span>".to_owned(),
            esc(&shorten(err, 120)),
            format!("<code>{}</code>", esc(&item.id)),
        ),
    };
    let extra = match state {
        MessageState::Ready => String::new(),
        MessageState::Delayed => match item.due_at {
            Some(due) => format!(
                "<td title=\"{}\">{}</td>",
                esc(&time_ms(due)),
                esc(&relative_ms(due))
            ),
            None => "<td class=\"muted\">?</td>".into(),
        },
        MessageState::Dead => format!(
            "<td>{}</td><td>{}</td>",
            item.dead_at
                .map_or(String::new(), |at| esc(&relative_ms(at))),
            esc(&shorten(item.reason.as_deref().unwrap_or(""), 200))
        ),
    };
    let mut actions = String::new();
    if !ctx.read_only {
        let form = |action: &str, label: &str, class: &str| {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"{}queues/{}/{action}\">{}{}{}{}{}\
                 <button type=\"submit\"{class}>{label}</button></form> ",
                esc(&ctx.base),
                url(queue),
                hidden("csrf", &ctx.csrf),
                hidden("state", state.as_str()),
                hidden("id", &item.id),
                hidden("actor", &filter.actor),
                hidden("text", &filter.text),
            )
        };
        if state == MessageState::Dead {
            actions.push_str(&form("requeue", "Requeue…", ""));
        }
        actions.push_str(&form("delete", "Delete…", " class=\"danger\""));
    }
    format!(
        "<tr><td>{actor}</td><td><code>{args}</code></td><td class=\"hide-small\">{message_id}</td>{extra}<td>{actions}</td></tr>"
    )
}
