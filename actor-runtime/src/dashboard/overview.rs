//! The overview: queues with their counts, the last hour's activity, the workers.

use std::collections::BTreeSet;
use std::fmt::Write;

use axum::extract::State as AxumState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::html::{esc, relative_ms, time_ms, url};
use super::State;
use crate::message::now_ms;

/// Every queue the broker knows of (other processes' too where it can list them) and
/// those of the actors linked into this program.
pub(crate) async fn queue_names(ctx: &State) -> crate::Result<Vec<String>> {
    let mut names: BTreeSet<String> = ctx.broker.queues().into_iter().collect();
    if let Some(inspect) = ctx.broker.backend().inspect() {
        names.extend(inspect.queue_names().await?);
    }
    if let Ok(registry) = crate::registry::Registry::global() {
        names.extend(registry.queues().into_iter().map(str::to_owned));
    }
    Ok(names.into_iter().collect())
}

pub(crate) async fn overview(AxumState(ctx): AxumState<State>) -> Response {
    let names = match queue_names(&ctx).await {
        Ok(names) => names,
        Err(err) => return ctx.error(StatusCode::BAD_GATEWAY, &format!("the broker: {err}")),
    };
    let paused: BTreeSet<String> = match ctx.broker.backend().pause() {
        Some(pause) => pause
            .paused()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect(),
        None => BTreeSet::new(),
    };
    let mut body = String::from("<h1>Overview</h1>");
    let info = ctx.broker.describe();
    let _ = write!(
        body,
        "<p class=\"muted\">Broker: {}{}{}</p>",
        esc(info.kind),
        info.url
            .as_deref()
            .map_or(String::new(), |u| format!(" at <code>{}</code>", esc(u))),
        info.namespace.as_deref().map_or(String::new(), |n| format!(
            ", namespace <code>{}</code>",
            esc(n)
        )),
    );

    body.push_str("<h2 id=\"queues\">Queues</h2>");
    // Queues holding messages (or paused) first; idle ones folded away below.
    let (mut busy, mut idle) = (String::new(), String::new());
    let mut idle_count = 0;
    for name in &names {
        let (counts, empty) = match ctx.broker.stats(name).await {
            Ok(s) => (
                [s.ready, s.delayed, s.in_flight, s.dead]
                    .iter()
                    .map(|n| format!("<td class=\"n\">{n}</td>"))
                    .collect::<String>(),
                s.ready + s.delayed + s.in_flight + s.dead == 0,
            ),
            Err(err) => (
                format!(
                    "<td colspan=\"4\" class=\"muted\">{}</td>",
                    esc(&err.to_string())
                ),
                false,
            ),
        };
        let is_paused = paused.contains(name);
        let state = if is_paused {
            "<span class=\"badge bad\">paused</span>"
        } else {
            "<span class=\"muted\">consuming</span>"
        };
        let row = format!(
            "<tr><td><a href=\"{}queues/{}\">{}</a></td>{counts}<td>{state}</td></tr>",
            esc(&ctx.base),
            url(name),
            esc(name)
        );
        if empty && !is_paused {
            idle.push_str(&row);
            idle_count += 1;
        } else {
            busy.push_str(&row);
        }
    }
    let head = "<thead><tr><th>Queue</th><th class=\"n\">Ready</th><th class=\"n\">Delayed</th>\
                <th class=\"n\">In flight</th><th class=\"n\">Dead</th><th>State</th></tr></thead>";
    if busy.is_empty() {
        body.push_str("<p>No queue holds messages.</p>");
    } else {
        let _ = write!(
            body,
            "<div class=\"table\"><table aria-labelledby=\"queues\">{head}<tbody>{busy}</tbody></table></div>"
        );
    }
    if idle_count > 0 {
        let _ = write!(
            body,
            "<details><summary>{idle_count} empty queue{}</summary><div class=\"table\"><table>{head}<tbody>{idle}</tbody></table></div></details>",
            if idle_count == 1 { "" } else { "s" }
        );
    }

    body.push_str("<h2 id=\"activity-title\">Last hour</h2>");
    if ctx.broker.backend().inspect().is_some() {
        let _ = write!(
            body,
            "<canvas id=\"activity\" class=\"chart\" role=\"img\" aria-labelledby=\"activity-title\" \
             data-source=\"{}api/activity\"></canvas><p id=\"activity-summary\" class=\"muted\" \
             aria-live=\"polite\">loading…</p><p class=\"muted\">Messages processed (blue) and \
             failed (red) per minute, as our workers report them with their heartbeats; Python \
             workers do not report.</p><script src=\"{}assets/chart.js\" defer></script>",
            esc(&ctx.base),
            esc(&ctx.base)
        );
    } else {
        let _ = write!(
            body,
            "<p class=\"note\">The {} broker keeps no activity counts: no chart.</p>",
            esc(ctx.broker.kind())
        );
    }

    body.push_str("<h2 id=\"workers\">Workers</h2>");
    match ctx.broker.workers().await {
        Ok(Some(workers)) if workers.is_empty() => {
            body.push_str("<p>No worker process has a live heartbeat.</p>")
        }
        Ok(Some(workers)) => {
            body.push_str(
                "<div class=\"table\"><table aria-labelledby=\"workers\"><thead><tr><th>Worker</th>\
                 <th>Heartbeat</th><th class=\"n\">Messages held</th><th>Queues</th></tr></thead><tbody>",
            );
            for w in workers {
                let _ = write!(
                    body,
                    "<tr><td><code>{}</code></td><td title=\"{}\">{}{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    esc(&w.id),
                    esc(&time_ms(w.last_heartbeat)),
                    esc(&relative_ms(w.last_heartbeat)),
                    if w.stale { " <span class=\"badge bad\">missed beats</span>" } else { "" },
                    w.in_flight.map_or("?".into(), |n| n.to_string()),
                    esc(&w.queues.join(", "))
                );
            }
            body.push_str("</tbody></table></div>");
        }
        Ok(None) => {
            let _ = write!(
                body,
                "<p class=\"note\">The {} broker keeps no worker registry (no heartbeats): it \
                 cannot list worker processes.</p>",
                esc(ctx.broker.kind())
            );
        }
        Err(err) => {
            let _ = write!(
                body,
                "<p class=\"error\">Workers: {}</p>",
                esc(&err.to_string())
            );
        }
    }
    ctx.page("Overview", "Overview", &body)
}

/// The last hour's activity, per minute: `{"minutes": [{"minute_ms", "processed",
/// "failed"}]}`.
pub(crate) async fn activity(AxumState(ctx): AxumState<State>) -> Response {
    let Some(inspect) = ctx.broker.backend().inspect() else {
        return (StatusCode::NOT_FOUND, "no activity on this broker\n").into_response();
    };
    match inspect.activity(now_ms().saturating_sub(3_600_000)).await {
        Ok(minutes) => {
            let minutes: Vec<_> = minutes
                .iter()
                .map(|m| json!({"minute_ms": m.minute_ms, "processed": m.processed, "failed": m.failed}))
                .collect();
            let mut response = json!({ "minutes": minutes }).to_string().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            super::secure(response.headers_mut());
            response
        }
        Err(err) => (StatusCode::BAD_GATEWAY, format!("the broker: {err}\n")).into_response(),
    }
}
