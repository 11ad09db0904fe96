//! A private `redis-server` for one test: its own loopback port, nothing saved to disk, killed when
//! dropped. Only the process started here is ever killed.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// How long a fresh `redis-server` may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(15);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a `redis-server` on a free loopback port and waits until it answers PING.
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: apt-get install -y redis-server"
        );
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("herald-e2e-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A port found free may be taken by someone else before redis binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(port, &dir);
            if wait_ready(&mut child, port).await {
                return Self { child, port, dir };
            }
            let _ = child.kill().await;
        }
        panic!("redis-server did not start; see {}", dir.join("redis.log").display())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The PID of the current `redis-server`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("redis-server already reaped")
    }

    /// Kills `redis-server` (SIGKILL to its PID: all data is lost) and starts a new one on the same
    /// port; returns when the new one answers PING.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.revive().await;
    }

    /// Kills `redis-server` (SIGKILL to its PID) and leaves it down.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill redis-server");
    }

    /// After [`Self::kill`]: starts an empty `redis-server` on the same port; returns when it
    /// answers PING.
    pub async fn revive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_some(), "redis-server is still running");
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            let mut child = spawn(self.port, &self.dir);
            if wait_ready(&mut child, self.port).await {
                self.child = child;
                return;
            }
            let _ = child.kill().await;
            // The port may linger for a moment after the old process died; retry until the deadline.
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not restart on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn spawn(port: u16, dir: &std::path::Path) -> Child {
    Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(["--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-server")
}

/// Polls until `redis-server` answers PING with +PONG; false if it exited or the deadline passed.
async fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ping(port).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}
