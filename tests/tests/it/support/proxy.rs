//! A TCP proxy to a server, for fault tests that must not disturb the shared server: an
//! outage drops every proxied connection and refuses new ones (accepts, then closes them)
//! until it ends, as a broker restart looks to a client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct Proxy {
    pub(crate) port: u16,
    down: Arc<AtomicBool>,
    /// Bumped at each outage: live connections end when it changes.
    epoch: watch::Sender<u64>,
    pub(crate) accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free local port to `target` (`host:port`).
    pub(crate) async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (epoch, _) = watch::channel(0u64);
        let target = target.to_owned();
        let task = {
            let (down, accepted, epoch) = (down.clone(), accepted.clone(), epoch.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if down.load(Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::AcqRel);
                    let target = target.clone();
                    let mut changed = epoch.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = changed.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy {
            port,
            down,
            epoch,
            accepted,
            task,
        }
    }

    /// Starts an outage: drops every connection and refuses new ones.
    pub(crate) fn down(&self) {
        self.down.store(true, Ordering::Release);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Ends the outage.
    pub(crate) fn up(&self) {
        self.down.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.epoch.send_modify(|e| *e += 1);
    }
}
