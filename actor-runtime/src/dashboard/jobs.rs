//! The job pages (feature `postgres`): search the records, and one job's history.

use std::fmt::Write;
use std::time::SystemTime;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::html::{esc, shorten, url};
use super::State;
use crate::records::{JobFilter, JobRecord, JobState, Records};

/// Jobs per page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct JobQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    state: String,
    /// `2026-12-04T15:20` (UTC), as a datetime-local input sends it, or RFC 3339.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    error: String,
}

/// A time from the search form, read as UTC.
fn parse_time(field: &str, text: &str) -> Result<Option<SystemTime>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let full = if text.len() == 16 {
        format!("{text}:00")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .map(Some)
        .map_err(|e| format!("`{text}` is not a time for {field} (use 2026-12-04T15:20, UTC): {e}"))
}

fn records(ctx: &State) -> Result<&Records, Box<Response>> {
    ctx.records.as_ref().ok_or_else(|| {
        Box::new(ctx.error(
            StatusCode::NOT_FOUND,
            "The job pages need the job records: set DATABASE_URL.",
        ))
    })
}

pub(crate) async fn search(
    AxumState(ctx): AxumState<State>,
    Query(query): Query<JobQuery>,
) -> Response {
    let records = match records(&ctx) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let id = query.id.trim();
    if !id.is_empty() {
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(location) = HeaderValue::from_str(&format!("{}jobs/{}", ctx.base, url(id))) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    let mut filter = JobFilter::new().limit(PAGE);
    let mut problems = Vec::new();
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    filter.actor = text(&query.actor);
    filter.queue = text(&query.queue);
    filter.error = text(&query.error);
    if let Some(state) = text(&query.state) {
        match state.parse::<JobState>() {
            Ok(state) => filter.state = Some(state),
            Err(e) => problems.push(e.to_string()),
        }
    }
    match parse_time("since", &query.since) {
        Ok(t) => filter.since = t,
        Err(e) => problems.push(e),
    }
    match parse_time("until", &query.until) {
        Ok(t) => filter.until = t,
        Err(e) => problems.push(e),
    }
    let mut body = String::from("<h1>Jobs</h1>");
    body.push_str(&search_form(&ctx, &query));
    if !problems.is_empty() {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            esc(&problems.join("; "))
        );
        return ctx.page("Jobs", "Jobs", &body);
    }
    let jobs = match records.jobs(&filter).await {
        Ok(jobs) => jobs,
        Err(err) => {
            let _ = write!(
                body,
                "<p class=\"error\" role=\"alert\">job records: {}</p>",
                esc(&err.to_string())
            );
            return ctx.page("Jobs", "Jobs", &body);
        }
    };
    body.push_str(&table(&ctx, &jobs));
    if jobs.len() as i64 == PAGE {
        if let Some(last) = jobs.last() {
            let older = format!(
                "{}jobs?actor={}&queue={}&state={}&since={}&error={}&until={}",
                ctx.base,
                url(&query.actor),
                url(&query.queue),
                url(&query.state),
                url(&query.since),
                url(&query.error),
                url(&last.created_at)
            );
            let _ = write!(
                body,
                "<p><a href=\"{}\" rel=\"next\">Older jobs</a></p>",
                esc(&older)
            );
        }
    }
    ctx.page("Jobs", "Jobs", &body)
}

fn search_form(ctx: &State, query: &JobQuery) -> String {
    let mut states = String::from("<option value=\"\">any</option>");
    for state in JobState::ALL {
        let selected = if query.state == state.as_str() {
            " selected"
        } else {
            ""
        };
        let _ = write!(states, "<option{selected}>{}</option>", state.as_str());
    }
    format!(
        "<form class=\"filters\" method=\"get\" action=\"{}jobs\" role=\"search\">\
         <label>Message id <input name=\"id\" value=\"{}\" size=\"36\"></label>\
         <label>Actor <input name=\"actor\" value=\"{}\"></label>\
         <label>Queue <input name=\"queue\" value=\"{}\"></label>\
         <label>State <select name=\"state\">{states}</select></label>\
         <label>Since (UTC) <input type=\"datetime-local\" name=\"since\" value=\"{}\"></label>\
         <label>Until (UTC) <input type=\"datetime-local\" name=\"until\" value=\"{}\"></label>\
         <label>Error contains <input name=\"error\" value=\"{}\"></label>\
         <button type=\"submit\">Search</button></form>",
        esc(&ctx.base),
        esc(&query.id),
        esc(&query.actor),
        esc(&query.queue),
        esc(&query.since),
        esc(&query.until),
        esc(&query.error),
    )
}

fn state_badge(state: JobState) -> String {
    let class = match state {
        JobState::Succeeded => "ok",
        JobState::Failed | JobState::Dead => "bad",
        _ => "muted",
    };
    format!("<span class=\"badge {class}\">{}</span>", state.as_str())
}

fn table(ctx: &State, jobs: &[JobRecord]) -> String {
    if jobs.is_empty() {
        return "<p>No job matches.</p>".into();
    }
    let mut out = String::from(
        "<div class=\"table\"><table><thead><tr><th>Message id</th><th>Actor</th><th>State</th>\
         <th class=\"n\">Attempt</th><th class=\"hide-small\">Recorded</th><th>Last error</th></tr></thead><tbody>",
    );
    for job in jobs {
        let _ = write!(
            out,
            "<tr><td><a href=\"{}jobs/{}\"><code>{}</code></a></td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"hide-small\">{}</td><td>{}</td></tr>",
            esc(&ctx.base),
            url(&job.message_id),
            esc(&job.message_id),
            esc(&job.actor_name),
            state_badge(job.state),
            job.attempt,
            esc(&job.created_at),
            esc(&shorten(job.last_error.as_deref().unwrap_or(""), 120)),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

pub(crate) async fn job(AxumState(ctx): AxumState<State>, Path(id): Path<String>) -> Response {
    let records = match records(&ctx) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let job = match records.job(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return ctx.error(
                StatusCode::NOT_FOUND,
                &format!("No job record for message {id}."),
            )
        }
        Err(err) => return ctx.error(StatusCode::BAD_GATEWAY, &format!("job records: {err}")),
    };
    let base = esc(&ctx.base);
    let link = |id: &str| {
        format!(
            "<a href=\"{base}jobs/{}\"><code>{}</code></a>",
            url(id),
            esc(id)
        )
    };
    let mut body = format!(
        "<h1>Job <code>{}</code></h1><p>{} {} on <a href=\"{base}queues/{}\">{}</a></p>",
        esc(&job.message_id),
        esc(&job.actor_name),
        state_badge(job.state),
        url(&job.queue_name),
        esc(&job.queue_name)
    );
    body.push_str("<dl class=\"fields\">");
    let mut field = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = write!(body, "<dt>{name}</dt><dd>{value}</dd>");
        }
    };
    field(
        "Attempt",
        Some(match job.max_retries {
            Some(max) => format!("{} (up to {} retries)", job.attempt, max),
            None => job.attempt.to_string(),
        }),
    );
    field("Enqueued", job.enqueued_at.as_deref().map(esc));
    field("Due", job.eta.as_deref().map(esc));
    field("Started", job.started_at.as_deref().map(esc));
    field("Finished", job.finished_at.as_deref().map(esc));
    field("Duration", job.duration_ms.map(|ms| format!("{ms:.1} ms")));
    field(
        "Worker",
        job.worker_id
            .as_deref()
            .map(|w| format!("<code>{}</code>", esc(w))),
    );
    field("Enqueued by", job.parent_id.as_deref().map(link));
    field(
        "Group",
        job.group_id
            .as_deref()
            .map(|g| format!("<code>{}</code>", esc(g))),
    );
    field("First recorded", Some(esc(&job.created_at)));
    field("Last written", Some(esc(&job.updated_at)));
    body.push_str("</dl>");

    body.push_str("<h2>Arguments</h2>");
    match &job.args {
        Some(args) => {
            let pretty = serde_json::to_string_pretty(args).unwrap_or_default();
            let _ = write!(body, "<pre>{}</pre>", esc(&pretty));
        }
        None => body.push_str(
            "<p class=\"muted\">Not recorded: this actor's arguments are redacted (the records \
             keep only the arguments of actors opted in with <code>record_args_of</code>).</p>",
        ),
    }

    body.push_str("<h2>Attempts</h2>");
    if job.errors.is_empty() {
        body.push_str("<p>No attempt failed.</p>");
    } else {
        body.push_str(
            "<div class=\"table\"><table><thead><tr><th class=\"n\">Attempt</th><th>At</th><th>Error</th>\
             <th>Message</th></tr></thead><tbody>",
        );
        for error in &job.errors {
            let _ = write!(
                body,
                "<tr><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td><pre>{}</pre></td></tr>",
                error.attempt,
                esc(&error.at),
                esc(&error.kind),
                esc(&error.message)
            );
        }
        body.push_str("</tbody></table></div>");
    }
    if job.errors.len() as i32 >= 10 {
        body.push_str("<p class=\"muted\">The records keep the last 10 errors.</p>");
    }
    if let Some(last) = &job.last_error {
        if job.errors.is_empty() {
            let _ = write!(body, "<p>Last error:</p><pre>{}</pre>", esc(last));
        }
    }

    // Along its pipeline: the jobs it enqueued; and its group.
    let children = records
        .jobs(&JobFilter::new().parent(job.message_id.clone()).limit(PAGE))
        .await;
    body.push_str("<h2>Jobs it enqueued</h2>");
    match children {
        Ok(jobs) if jobs.is_empty() => body.push_str("<p class=\"muted\">None recorded.</p>"),
        Ok(jobs) => body.push_str(&table(&ctx, &jobs)),
        Err(err) => {
            let _ = write!(body, "<p class=\"error\">{}</p>", esc(&err.to_string()));
        }
    }
    if let Some(group) = &job.group_id {
        body.push_str("<h2>Its group</h2>");
        match records
            .jobs(&JobFilter::new().group(group.clone()).limit(PAGE))
            .await
        {
            Ok(jobs) => body.push_str(&table(&ctx, &jobs)),
            Err(err) => {
                let _ = write!(body, "<p class=\"error\">{}</p>", esc(&err.to_string()));
            }
        }
    }
    ctx.page(&format!("Job {}", job.message_id), "Jobs", &body)
}
