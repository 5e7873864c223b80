//! The metrics endpoint: a tiny HTTP/1.x responder on a tokio `TcpListener`, serving the
//! [`Prometheus`] text of this process, or, in a supervisor, the sum of its workers'.
//!
//! Hand-written: one GET, one response, connection closed; a scrape every few seconds does
//! not need an HTTP stack.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Binds `addr` and serves `source` until the process exits; returns the bound address.
pub(crate) async fn serve(addr: SocketAddr, source: Source) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let source = source.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(IO_TIMEOUT * 2, respond(stream, source)).await;
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

async fn respond(mut stream: TcpStream, source: Source) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 || head.len() > 8 * 1024 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => ("200 OK", source.text().await),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found; try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "use GET\n".to_owned()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// GETs `/metrics` from a worker's endpoint.
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
/// across processes); comment lines are kept once, in first-seen order.
pub(crate) fn merge(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, f64> = HashMap::new();
    let mut seen_comments = std::collections::HashSet::new();
    for text in texts {
        for line in text.lines() {
            if line.starts_with('#') {
                if seen_comments.insert(line.to_owned()) {
                    order.push(line.to_owned());
                }
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            match values.get_mut(series) {
                Some(total) => *total += value,
                None => {
                    values.insert(series.to_owned(), value);
                    order.push(series.to_owned());
                }
            }
        }
    }
    let mut out = String::new();
    for key in order {
        match values.get(&key) {
            Some(value) if value.fract() == 0.0 && value.abs() < 9e15 => {
                out.push_str(&format!("{key} {}\n", *value as i64));
            }
            Some(value) => out.push_str(&format!("{key} {value}\n")),
            None => {
                out.push_str(&key);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_each_series_and_keeps_comments_once() {
        let a = "# HELP m help\n# TYPE m counter\nm{q=\"a\"} 1\nm{q=\"b\"} 2\nh_sum{q=\"a\"} 0.5\n";
        let b = "# HELP m help\n# TYPE m counter\nm{q=\"a\"} 3\nh_sum{q=\"a\"} 0.25\n";
        assert_eq!(
            merge(&[a.into(), b.into()]),
            "# HELP m help\n# TYPE m counter\nm{q=\"a\"} 4\nm{q=\"b\"} 2\nh_sum{q=\"a\"} 0.75\n"
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

        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /nope HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    }
}
