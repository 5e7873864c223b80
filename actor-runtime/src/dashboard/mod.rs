//! The web dashboard (feature `dashboard`): queues, workers, dead letters and, with the job
//! records, every job's history, in a browser.
//!
//! Server-rendered pages, their CSS and the small script of the live chart embedded in the
//! binary (no build step, no CDN, works offline). Run it with the worker CLI's `dashboard`
//! command, or mount [`Dashboard::router`] in your own axum app.
//!
//! - **Overview**: every queue with its ready, delayed, in-flight and dead counts, whether
//!   it is paused; the last hour's throughput and failures (a chart that updates itself);
//!   the worker processes with their heartbeat age and the messages they hold.
//! - **Queue**: its ready, delayed (with due time) and dead (with reason) messages, a page
//!   at a time; requeue or delete one, or all that match a filter, after a confirmation;
//!   pause and resume consumption by our workers (Python workers do not know the flag).
//! - **Jobs** (with `Dashboard::records`, feature `postgres`): search by message id,
//!   actor, queue, state, time range and error text; a job's arguments (as recorded),
//!   every error of its attempts, its timings and worker, links to the job that enqueued
//!   it, the jobs it enqueued and its group.
//!
//! What a broker cannot show is said on the page: RabbitMQ cannot list messages without
//! consuming them and keeps no worker registry.
//!
//! # Access
//!
//! Without [`Auth`] the dashboard serves anyone who can reach it, so [`Dashboard::serve`]
//! refuses a non-loopback address without one. [`Auth::from_env`] reads
//! `DASHBOARD_TOKEN` (sent as `Authorization: Bearer <token>`, or as the password of HTTP
//! basic auth with any user name, which browsers prompt for) or `DASHBOARD_USER` and
//! `DASHBOARD_PASSWORD` (basic auth). Every action (a POST) needs the page's CSRF token
//! and is refused when the browser says it comes from another site (`Sec-Fetch-Site`,
//! `Origin`); every action is logged at info level with who did it. In
//! [`read-only`](Dashboard::read_only) mode there are no actions at all.
//!
//! ```no_run
//! use actor_runtime::dashboard::{Auth, Dashboard};
//! use actor_runtime::Broker;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = Broker::from_env()?;
//! // Mounted in an existing app, under /ops/:
//! let app: axum::Router = axum::Router::new().nest(
//!     "/ops",
//!     Dashboard::new(broker.clone()).auth(Auth::from_env()?).base_path("/ops/").router(),
//! );
//! # let _ = app;
//! // Or on its own:
//! Dashboard::new(broker).serve("127.0.0.1:9181".parse()?).await?;
//! # Ok(()) }
//! ```

mod actions;
mod assets;
mod auth;
mod html;
#[cfg(feature = "postgres")]
mod jobs;
mod overview;
mod queue;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::Broker;

pub use auth::Auth;

/// The dashboard over one broker: build it, then [`router`](Dashboard::router) or
/// [`serve`](Dashboard::serve).
///
/// ```
/// use actor_runtime::dashboard::{Auth, Dashboard};
///
/// let router: axum::Router = Dashboard::new(actor_runtime::Broker::stub())
///     .auth(Auth::Token("s3cret".into()))
///     .read_only(true)
///     .router();
/// # let _ = router;
/// ```
#[derive(Clone)]
pub struct Dashboard {
    broker: Broker,
    auth: Auth,
    read_only: bool,
    base: String,
    #[cfg(feature = "postgres")]
    records: Option<crate::records::Records>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("broker", &self.broker.kind())
            .field("auth", &self.auth)
            .field("read_only", &self.read_only)
            .field("base", &self.base)
            .finish()
    }
}

/// What every handler shares.
pub(crate) struct Ctx {
    pub(crate) broker: Broker,
    pub(crate) auth: Auth,
    pub(crate) read_only: bool,
    /// Where the dashboard is mounted, with a trailing `/`.
    pub(crate) base: String,
    /// The token every form carries, random per dashboard.
    pub(crate) csrf: String,
    #[cfg(feature = "postgres")]
    pub(crate) records: Option<crate::records::Records>,
}

impl Ctx {
    pub(crate) fn jobs_enabled(&self) -> bool {
        #[cfg(feature = "postgres")]
        return self.records.is_some();
        #[cfg(not(feature = "postgres"))]
        false
    }

    /// A whole page around `body`.
    pub(crate) fn page(&self, title: &str, current: &str, body: &str) -> Response {
        html_response(
            StatusCode::OK,
            html::page(&self.base, title, current, self.jobs_enabled(), body),
        )
    }

    /// An error page.
    pub(crate) fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"{}\">Back to the overview</a></p>",
            status.as_u16(),
            html::esc(message),
            html::esc(&html::home(&self.base))
        );
        html_response(
            status,
            html::page(&self.base, "Error", "", self.jobs_enabled(), &body),
        )
    }
}

pub(crate) type State = Arc<Ctx>;

/// `body` with the headers every page gets: no caching, no framing, scripts and styles
/// from this origin only (no inline script can run, whatever a message contains).
pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(headers);
    response
}

pub(crate) fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

impl Dashboard {
    /// A dashboard over `broker`, open to whoever reaches it (see [`Dashboard::auth`]),
    /// with actions, mounted at `/`.
    pub fn new(broker: Broker) -> Dashboard {
        Dashboard {
            broker,
            auth: Auth::None,
            read_only: false,
            base: "/".into(),
            #[cfg(feature = "postgres")]
            records: None,
        }
    }

    /// Who may see it ([`Auth::from_env`] reads the environment).
    pub fn auth(mut self, auth: Auth) -> Dashboard {
        self.auth = auth;
        self
    }

    /// Pages only: no requeue, delete, pause or resume.
    pub fn read_only(mut self, read_only: bool) -> Dashboard {
        self.read_only = read_only;
        self
    }

    /// The path the router is mounted at (`/ops/` for `Router::nest("/ops", ..)`), for the
    /// links of its pages [default: `/`].
    pub fn base_path(mut self, base: &str) -> Dashboard {
        let mut base = base.trim_end_matches('/').to_owned();
        if !base.starts_with('/') {
            base.insert(0, '/');
        }
        if !base.ends_with('/') {
            base.push('/');
        }
        self.base = base;
        self
    }

    /// Shows the job records (the Jobs pages), and marks requeued dead letters' records
    /// `enqueued`, as the CLI does.
    #[cfg(feature = "postgres")]
    pub fn records(mut self, records: crate::records::Records) -> Dashboard {
        self.records = Some(records);
        self
    }

    /// The dashboard's routes, to serve or to nest in an app.
    pub fn router(self) -> Router {
        let state: State = Arc::new(Ctx {
            broker: self.broker,
            auth: self.auth,
            read_only: self.read_only,
            base: self.base,
            csrf: uuid::Uuid::new_v4().simple().to_string(),
            #[cfg(feature = "postgres")]
            records: self.records,
        });
        let router = Router::new()
            .route("/", get(overview::overview))
            .route("/api/activity", get(overview::activity))
            .route("/queues/{queue}", get(queue::queue))
            .route("/queues/{queue}/{action}", post(actions::action))
            .route("/assets/{file}", get(assets::asset));
        #[cfg(feature = "postgres")]
        let router = router
            .route("/jobs", get(jobs::search))
            .route("/jobs/{id}", get(jobs::job));
        router
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require,
            ))
            .with_state(state)
    }

    /// Serves the dashboard on `addr` until the process stops. Refuses (an
    /// [`InvalidInput`](std::io::ErrorKind::InvalidInput) error) a non-loopback address
    /// without [`Auth`].
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        self.serve_until(addr, std::future::pending()).await
    }

    /// [`serve`](Dashboard::serve) until `shutdown` completes.
    pub async fn serve_until(
        self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if !addr.ip().is_loopback() && matches!(self.auth, Auth::None) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "refusing to serve the dashboard on {addr}, a non-loopback address, \
                     without authentication: set DASHBOARD_TOKEN, or DASHBOARD_USER and \
                     DASHBOARD_PASSWORD"
                ),
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, read_only = self.read_only, auth = self.auth.kind(), "dashboard listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn not_found(axum::extract::State(ctx): axum::extract::State<State>) -> Response {
    ctx.error(StatusCode::NOT_FOUND, "There is no such page.")
}
