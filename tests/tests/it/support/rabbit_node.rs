//! A private RabbitMQ node on ports of its own, for what must not touch the shared server
//! (a lowered `consumer_timeout`). Shut down when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Node {
    /// Starts a node whose `advanced.config` sets `rabbit` to `settings` (an Erlang proplist
    /// body such as `{consumer_timeout, 3000}`), and waits until it listens.
    pub(crate) async fn start(settings: &str) -> Node {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("rabbittest{}@localhost", &id[..8]);
        let (port, dist) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("rabbit-node-{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let file = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
        file("rabbitmq.conf", format!("listeners.tcp.default = {port}\n"));
        file("advanced.config", format!("[{{rabbit, [{settings}]}}].\n"));
        file("enabled_plugins", "[].\n".into());
        // The server script runs the node as the `rabbitmq` user when started by root.
        let _ = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status();
        let path = |p: &str| dir.join(p).to_str().unwrap().to_owned();
        tokio::process::Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server");
        let node = Node { name, port, dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the private RabbitMQ node did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        node
    }

    pub(crate) fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's log so far.
    pub(crate) fn log(&self) -> String {
        let file = self.dir.join("log").join(format!("{}.log", self.name));
        std::fs::read_to_string(file).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-n", &self.name, "shutdown"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
