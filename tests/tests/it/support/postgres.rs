//! The test PostgreSQL: a schema per test, raw SQL, and a TCP proxy to cut the connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_runtime::records::{Records, RecordsBuilder};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The PostgreSQL the tests use (`TEST_DATABASE_URL`, default the local server's `test`).
pub(crate) fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema no other test uses.
pub(crate) fn schema_name() -> String {
    format!("rec_{}", uuid::Uuid::new_v4().simple())
}

/// A raw connection to the test database.
pub(crate) async fn raw() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("the tests need PostgreSQL at TEST_DATABASE_URL or 127.0.0.1:5432/test");
    tokio::spawn(connection);
    client
}

/// Quick flushes, in `schema`, migrated.
pub(crate) fn builder(url: &str, schema: &str) -> RecordsBuilder {
    Records::builder(url)
        .schema(schema)
        .flush_interval(Duration::from_millis(20))
        .connect_timeout(Duration::from_secs(2))
        .migrate(true)
}

/// Stops the recorder and drops its schema.
pub(crate) async fn cleanup(records: &Records) {
    records.close().await;
    drop_schema(records.schema()).await;
}

/// Drops `schema` and everything in it.
pub(crate) async fn drop_schema(schema: &str) {
    raw()
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("drop the test schema");
}

/// A TCP proxy to PostgreSQL that a test can cut (every connection dropped, new ones
/// refused at once) and restore, without touching the shared server.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = {
            let url = url_parts(&database_url());
            format!("{}:{}", url.0, url.1)
        };
        let accept = {
            let (cut, links) = (cut.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection closed
                    }
                    let target = target.clone();
                    links.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            })
        };
        Proxy {
            port,
            cut,
            links,
            accept,
        }
    }

    /// The database URL through this proxy.
    pub(crate) fn url(&self) -> String {
        let url = database_url();
        let (host, port) = url_parts(&url);
        url.replacen(
            &format!("{host}:{port}"),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
    }

    /// Drops every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub(crate) fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `host` and `port` of a `postgres://user@host:port/db` URL.
fn url_parts(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.to_owned()),
        None => (hostport.to_owned(), "5432".to_owned()),
    }
}
