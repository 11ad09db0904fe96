//! Private Redis servers for tests: one server on a Unix socket, or a 3-master cluster on free
//! loopback ports. Each is stopped (by the PIDs it started) when dropped.
#![allow(dead_code, reason = "each test binary uses part of the support module")]

use std::future::Future;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use herald_core::engine::Engine;
use herald_core::engine::conformance::Factory;
use herald_redis::{RedisConfig, RedisEngine};

/// A node on the Redis at `url`, under `prefix`, with a one-second lease (ready: subscribed and
/// probed).
pub async fn engine(url: &str, prefix: &str) -> RedisEngine {
    let config = RedisConfig { url: url.to_owned(), prefix: prefix.to_owned(), node_lease: Duration::from_secs(1) };
    RedisEngine::connect(config).await.expect("the engine connects")
}

/// A key prefix no other run uses, so tests against a shared server (`HERALD_TEST_REDIS_URL`) never
/// meet an earlier run's keys.
pub fn fresh_prefix(name: &str) -> String {
    format!("{name}{:x}", rand::random::<u32>())
}

/// A key's time to live in ms (-1: none, -2: no such key).
pub async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.expect("PTTL")
}

/// Nodes on the Redis at `url`, for the engine's conformance checks.
pub struct OnRedis {
    pub url: String,
}

impl Factory for OnRedis {
    fn node<'a>(&'a self, prefix: &'a str) -> Pin<Box<dyn Future<Output = Arc<dyn Engine>> + Send + 'a>> {
        Box::pin(async move {
            let engine: Arc<dyn Engine> = Arc::new(engine(&self.url, prefix).await);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !engine.is_ready() {
                assert!(tokio::time::Instant::now() < deadline, "engine never became ready");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            engine
        })
    }
    fn lease(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("herald-{name}-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn redis_server(args: &[&str], dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)")
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One private server on a Unix socket, or the server named by `HERALD_TEST_REDIS_URL`.
pub struct Redis {
    pub url: String,
    child: Option<Child>,
    _dir: Option<TempDir>,
}

impl Redis {
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("HERALD_TEST_REDIS_URL") {
            return Self { url, child: None, _dir: None };
        }
        let dir = TempDir::new("redis");
        let socket = dir.0.join("redis.sock");
        let socket_arg = socket.display().to_string();
        let child = redis_server(&["--port", "0", "--unixsocket", &socket_arg], &dir.0);
        wait_until("redis-server did not start", || socket.exists());
        Self { url: format!("redis+unix://{}", socket.display()), child: Some(child), _dir: Some(dir) }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port that is free, and whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = 20_000 + (rand::random::<u16>() % 25_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// Three masters in cluster mode on loopback, every slot assigned.
pub struct Cluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: TempDir,
}

impl Cluster {
    pub fn start() -> Self {
        let dir = TempDir::new("redis-cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_cluster_port()).collect();
        let children = ports
            .iter()
            .map(|port| {
                let node_dir = dir.0.join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                let port = port.to_string();
                let args = [
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ];
                redis_server(&args, &node_dir)
            })
            .collect();
        for port in &ports {
            wait_until("cluster node did not start", || Self::cli(*port, &["PING"]).trim() == "PONG");
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create failed");
        for port in &ports {
            wait_until("cluster did not become ok", || {
                Self::cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        Self { ports, children, _dir: dir }
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns what it printed.
    pub fn cli(port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A master, one replica and one Sentinel watching them as `mymaster`, on free loopback ports.
pub struct Sentinels {
    pub master: u16,
    pub replica: u16,
    pub sentinel: u16,
    master_child: Option<Child>,
    children: Vec<Child>,
    _dir: TempDir,
}

impl Sentinels {
    pub fn start() -> Self {
        let dir = TempDir::new("redis-sentinel");
        let (master, replica, sentinel) = (free_cluster_port(), free_cluster_port(), free_cluster_port());
        let server = |port: u16, extra: &[&str]| {
            let node_dir = dir.0.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let port = port.to_string();
            let mut args = vec!["--port", &port, "--bind", "127.0.0.1"];
            args.extend_from_slice(extra);
            redis_server(&args, &node_dir)
        };
        let master_child = server(master, &[]);
        wait_until("master did not start", || Cluster::cli(master, &["PING"]).trim() == "PONG");
        let master_port = master.to_string();
        let replica_child = server(replica, &["--replicaof", "127.0.0.1", &master_port]);
        wait_until("replica did not sync", || {
            Cluster::cli(replica, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let conf = dir.0.join("sentinel.conf");
        let text = format!(
            "port {sentinel}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n"
        );
        std::fs::write(&conf, text).expect("sentinel.conf");
        let sentinel_child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        wait_until("sentinel did not find the replica", || {
            Cluster::cli(sentinel, &["SENTINEL", "REPLICAS", "mymaster"]).contains(&replica.to_string())
        });
        Self {
            master,
            replica,
            sentinel,
            master_child: Some(master_child),
            children: vec![replica_child, sentinel_child],
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster", self.sentinel)
    }

    /// Kills the master (as a crash would) and waits until the Sentinel promoted the replica.
    pub fn fail_over(&mut self) {
        if let Some(mut child) = self.master_child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let replica = self.replica.to_string();
        wait_until("the sentinel did not promote the replica", || {
            Cluster::cli(self.sentinel, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]).contains(&replica)
                && Cluster::cli(self.replica, &["ROLE"]).starts_with("master")
        });
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in self.master_child.iter_mut().chain(self.children.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
