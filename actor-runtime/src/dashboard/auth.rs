//! Who may use the dashboard ([`Auth`]), and the checks every request and every action
//! passes.

use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::State;

/// How the dashboard authenticates requests.
///
/// ```
/// use actor_runtime::dashboard::Auth;
///
/// let auth = Auth::Basic { user: "ops".into(), password: "correct horse".into() };
/// assert!(!matches!(auth, Auth::None));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// Anyone who reaches it (loopback only, for [`Dashboard::serve`](super::Dashboard::serve)).
    #[default]
    None,
    /// `Authorization: Bearer <token>`, or HTTP basic auth with `<token>` as the password
    /// (any user name).
    Token(String),
    /// HTTP basic auth with this user and password.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl Auth {
    /// `DASHBOARD_TOKEN`, else `DASHBOARD_USER` and `DASHBOARD_PASSWORD`, else none. One of
    /// the pair without the other, or an empty value, is an error.
    ///
    /// ```
    /// # use actor_runtime::dashboard::Auth;
    /// // With none of the variables set:
    /// # if std::env::var_os("DASHBOARD_TOKEN").is_none() && std::env::var_os("DASHBOARD_USER").is_none() && std::env::var_os("DASHBOARD_PASSWORD").is_none() {
    /// assert!(matches!(Auth::from_env(), Ok(Auth::None)));
    /// # }
    /// ```
    pub fn from_env() -> Result<Auth, String> {
        let var = |name: &str| std::env::var(name).ok();
        match (
            var("DASHBOARD_TOKEN"),
            var("DASHBOARD_USER"),
            var("DASHBOARD_PASSWORD"),
        ) {
            (Some(token), _, _) if token.is_empty() => Err("DASHBOARD_TOKEN is empty".into()),
            (Some(token), _, _) => Ok(Auth::Token(token)),
            (None, Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
                Ok(Auth::Basic { user, password })
            }
            (None, None, None) => Ok(Auth::None),
            _ => Err(
                "set both DASHBOARD_USER and DASHBOARD_PASSWORD (non-empty), or DASHBOARD_TOKEN"
                    .into(),
            ),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::Basic { .. } => "basic",
        }
    }

    /// Who sent `headers`, or `None` if they are not allowed in.
    fn user(&self, headers: &HeaderMap) -> Option<String> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self {
            Auth::None => Some("anonymous".into()),
            Auth::Token(token) => {
                let given = given?;
                if let Some(bearer) = given.strip_prefix("Bearer ") {
                    return same(bearer.trim(), token).then(|| "token".into());
                }
                let (user, password) = basic(given)?;
                same(&password, token).then(|| format!("{user} (token)"))
            }
            Auth::Basic { user, password } => {
                let (given_user, given_password) = basic(given?)?;
                (same(&given_user, user) & same(&given_password, password)).then_some(given_user)
            }
        }
    }
}

/// `user:password` of a basic `Authorization` header.
fn basic(value: &str) -> Option<(String, String)> {
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = String::from_utf8(base64_decode(encoded)?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 (with or without padding), or `None`.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(text).ok()
}

/// Compares secrets in time that depends on their lengths only.
fn same(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Who made a request, for the logs of actions.
#[derive(Clone, Debug)]
pub(crate) struct User(pub(crate) String);

/// Lets a request in (noting who made it) or answers 401.
pub(crate) async fn require(
    AxumState(ctx): AxumState<State>,
    mut request: Request,
    next: Next,
) -> Response {
    match ctx.auth.user(request.headers()) {
        Some(user) => {
            request.extensions_mut().insert(User(user));
            next.run(request).await
        }
        None => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "authentication required (DASHBOARD_TOKEN, or DASHBOARD_USER and DASHBOARD_PASSWORD)\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"actor-runtime dashboard\", charset=\"UTF-8\"",
                ),
            );
            response
        }
    }
}

/// Why an action must be refused as a cross-site request, if it must: a browser that says
/// the request comes from another site (`Sec-Fetch-Site`), an `Origin` that is not this
/// host, or a missing or wrong CSRF token.
pub(crate) fn cross_site(headers: &HeaderMap, csrf: &str, expected: &str) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Some("the request comes from another site (Sec-Fetch-Site)");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin == "null" || origin_host.is_none() || origin_host != host {
            return Some("the request comes from another origin (Origin)");
        }
    }
    if !same(csrf, expected) {
        return Some("the form's CSRF token is missing or wrong: reload the page");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_and_bearer_credentials() {
        let mut headers = HeaderMap::new();
        // "ops:pw" in base64.
        headers.insert(header::AUTHORIZATION, "Basic b3BzOnB3".parse().unwrap());
        let basic = Auth::Basic {
            user: "ops".into(),
            password: "pw".into(),
        };
        assert_eq!(basic.user(&headers).as_deref(), Some("ops"));
        assert_eq!(
            Auth::Token("pw".into()).user(&headers).as_deref(),
            Some("ops (token)")
        );
        assert!(Auth::Token("other".into()).user(&headers).is_none());
        headers.insert(header::AUTHORIZATION, "Bearer pw".parse().unwrap());
        assert_eq!(
            Auth::Token("pw".into()).user(&headers).as_deref(),
            Some("token")
        );
        assert!(basic.user(&headers).is_none());
        assert!(basic.user(&HeaderMap::new()).is_none());
    }

    #[test]
    fn refuses_cross_site_actions() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:9181".parse().unwrap());
        assert_eq!(cross_site(&headers, "t", "t"), None);
        assert!(cross_site(&headers, "x", "t").is_some());
        headers.insert(header::ORIGIN, "http://127.0.0.1:9181".parse().unwrap());
        assert_eq!(cross_site(&headers, "t", "t"), None);
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(cross_site(&headers, "t", "t").is_some());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_site(&headers, "t", "t").is_some());
    }
}
