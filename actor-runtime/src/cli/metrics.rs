//! The metrics endpoint: axum serving the [`Prometheus`] text of this process, or, in a
//! supervisor, the sum of its workers'.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::middleware::Prometheus;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a scrape's text comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// This process's middleware.
    Local(Arc<Prometheus>),
    /// The endpoints of the supervisor's ready workers, summed.
    Workers(Arc<Mutex<HashMap<usize, SocketAddr>>>),
}

impl Source {
    async fn text(&self) -> String {
        match self {
            #[cfg(feature = "postgres")]
            Source::Local(metrics) => super::records::with_metrics(metrics.render()),
            #[cfg(not(feature = "postgres"))]
            Source::Local(metrics) => metrics.render(),
            Source::Workers(addrs) => {
                let mut addrs: Vec<(usize, SocketAddr)> = addrs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(i, a)| (*i, *a))
                    .collect();
                addrs.sort();
                let mut texts = Vec::with_capacity(addrs.len());
                for (index, addr) in addrs {
                    match scrape(addr).await {
                        Ok(text) => texts.push(text),
                        Err(err) => {
                            tracing::warn!(worker = index, %addr, error = %err, "could not read a worker's metrics")
                        }
                    }
                }
                merge(&texts)
            }
        }
    }
}

/// Binds `addr` and serves `source` on `/metrics` (and `/`) until the process exits; returns
/// the bound address.
pub(crate) async fn serve(addr: SocketAddr, source: Source) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; try /metrics\n") })
        .with_state(source);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "metrics endpoint stopped");
        }
    });
    Ok(local)
}

async fn metrics(State(source): State<Source>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, Prometheus::CONTENT_TYPE)],
        source.text().await,
    )
}

/// GETs `/metrics` from a worker's endpoint (a loopback port it announced): one HTTP/1.0
/// request, read to the end, which needs no HTTP client crate.
pub(crate) async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let io = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(format!(
            "HTTP status {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

/// Sums expositions series by series (counters, gauges and histogram parts all add up
/// across processes). Each series stays under its family's `# HELP`/`# TYPE`, families in
/// first-seen order, and one `# EOF` ends the text, as OpenMetrics requires.
pub(crate) fn merge(texts: &[String]) -> String {
    #[derive(Default)]
    struct Family {
        comments: Vec<String>,
        series: Vec<String>,
        values: HashMap<String, f64>,
    }
    let mut families: Vec<Family> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut eof = false;
    for text in texts {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if line == "# EOF" {
                eof = true;
                continue;
            }
            if let Some(comment) = line.strip_prefix("# ") {
                // `# HELP name ...`, `# TYPE name ...`, `# UNIT name ...`
                let Some(name) = comment.split_whitespace().nth(1) else {
                    continue;
                };
                let index = *by_name.entry(name.to_owned()).or_insert_with(|| {
                    families.push(Family::default());
                    families.len() - 1
                });
                let family = &mut families[index];
                if !family.comments.iter().any(|c| c == line) {
                    family.comments.push(line.to_owned());
                }
                current = Some(index);
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let index = *current.get_or_insert_with(|| {
                // A series before any comment: a family of its own.
                families.push(Family::default());
                families.len() - 1
            });
            let family = &mut families[index];
            match family.values.get_mut(series) {
                Some(total) => *total += value,
                None => {
                    family.values.insert(series.to_owned(), value);
                    family.series.push(series.to_owned());
                }
            }
        }
    }
    let mut out = String::new();
    for family in families {
        for comment in &family.comments {
            out.push_str(comment);
            out.push('\n');
        }
        for series in &family.series {
            let value = family.values[series];
            let name = series.split('{').next().unwrap_or_default();
            if value.fract() == 0.0 && value.abs() < 9e15 && !name.ends_with("_sum") {
                out.push_str(&format!("{series} {}\n", value as i64));
            } else {
                out.push_str(&format!("{series} {value:?}\n"));
            }
        }
    }
    if eof {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_each_series_under_its_family() {
        let a = "# HELP m help\n# TYPE m counter\nm_total{q=\"a\"} 1\nm_total{q=\"b\"} 2\n\
                 # HELP h help\n# TYPE h histogram\nh_sum{q=\"a\"} 0.5\n# EOF\n";
        let b = "# HELP m help\n# TYPE m counter\nm_total{q=\"a\"} 3\nm_total{q=\"c\"} 1\n\
                 # HELP h help\n# TYPE h histogram\nh_sum{q=\"a\"} 2.5\n# EOF\n";
        assert_eq!(
            merge(&[a.into(), b.into()]),
            "# HELP m help\n# TYPE m counter\nm_total{q=\"a\"} 4\nm_total{q=\"b\"} 2\n\
             m_total{q=\"c\"} 1\n# HELP h help\n# TYPE h histogram\nh_sum{q=\"a\"} 3.0\n# EOF\n"
        );
    }

    #[tokio::test]
    async fn serves_and_scrapes_over_http() {
        let metrics = Arc::new(Prometheus::new());
        let addr = serve("127.0.0.1:0".parse().unwrap(), Source::Local(metrics))
            .await
            .unwrap();
        let text = scrape(addr).await.unwrap();
        assert!(text.contains("# TYPE dramatiq_message_duration_milliseconds histogram"));
        assert!(text.ends_with("# EOF\n"), "{text}");

        let raw = |request: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut raw = String::new();
            stream.read_to_string(&mut raw).await.unwrap();
            raw
        };
        let ok = raw("GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(
            ok.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{ok}"
        );
        let head = raw("HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert!(!head.contains("# EOF"), "{head}");
        let missing = raw("GET /nope HTTP/1.0\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
        assert!(missing.ends_with("not found; try /metrics\n"), "{missing}");
        let post = raw("POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.0 405"), "{post}");
    }
}
