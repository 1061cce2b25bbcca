//! A real `redis-server` per test, on a free port, with AOF persistence in a temporary
//! directory so it can be killed and restarted with its data.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::tool_available;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra arguments (`--replicaof host port`), kept for restarts.
    extra: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| unreachable!("no free port: {e}"))
}

/// `redis-server` on PATH; when missing, CI (`INTROSPECTD_REQUIRE_ALL=1`) fails and other
/// runs skip the test with a loud message.
pub fn redis_available(test: &str) -> bool {
    tool_available(
        "redis-server",
        "--version",
        test,
        "apt-get install redis-server",
    )
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// A replica of `master`, answering once it is in sync.
    pub fn start_replica_of(master: &RedisServer) -> Self {
        let replica = Self::start_with(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !command(replica.port, "INFO replication").contains("master_link_status:up") {
            if Instant::now() > deadline {
                unreachable!("the replica never synced");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    pub fn start_with(extra: Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
            extra,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Starts (again) on the same port and data directory; waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.data_dir())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| unreachable!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unreachable!("redis-server did not answer on port {}", self.port);
    }

    /// SIGKILL: the server disappears mid-conversation.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Sends one inline command and returns what came back within half a second.
pub fn command(port: u16, line: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..n]);
        if n < buffer.len() {
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// A `redis-server --sentinel` watching `master` as `mymaster`, quorum 2.
pub struct Sentinel {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Sentinel {
    pub fn start(master: &RedisServer) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let port = free_port();
        let config = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\nsentinel parallel-syncs mymaster 1\n",
            dir.path().display(),
            master.port
        );
        std::fs::write(&config, text).unwrap_or_else(|e| unreachable!("{e}"));
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| unreachable!("cannot start a sentinel: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(port) {
            if Instant::now() > deadline {
                unreachable!("the sentinel did not answer on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            _dir: dir,
            child,
        }
    }

    /// The port of the master this sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        command(self.port, "SENTINEL get-master-addr-by-name mymaster")
            .lines()
            .filter(|line| !line.starts_with('*') && !line.starts_with('$'))
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
    }

    /// Whether this sentinel knows `count` replicas of the master.
    pub fn knows_replicas(&self, count: usize) -> bool {
        let info = command(self.port, "INFO sentinel");
        info.contains(&format!("slaves={count}")) && info.contains("sentinels=3")
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
