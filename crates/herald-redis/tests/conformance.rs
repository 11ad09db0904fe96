//! The engine contract against a real Redis: a private `redis-server` on a Unix socket per test
//! binary run, or the server named by `HERALD_TEST_REDIS_URL`.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::future::Future;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use herald_core::engine::Engine;
use herald_core::engine::conformance::{self, Factory};
use herald_redis::{RedisConfig, RedisEngine};

/// A private Redis, stopped (by its PID) when dropped.
struct Redis {
    url: String,
    child: Option<Child>,
    _dir: Option<tempdir::Dir>,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Redis {
    fn start() -> Self {
        if let Ok(url) = std::env::var("HERALD_TEST_REDIS_URL") {
            return Self { url, child: None, _dir: None };
        }
        let dir = std::env::temp_dir().join(format!("herald-redis-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { url: format!("redis+unix://{}", socket.display()), child: Some(child), _dir: Some(tempdir::Dir(dir)) }
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

struct OnRedis {
    redis: Redis,
}

impl Factory for OnRedis {
    fn node<'a>(&'a self, prefix: &'a str) -> Pin<Box<dyn Future<Output = Arc<dyn Engine>> + Send + 'a>> {
        Box::pin(async move {
            let config =
                RedisConfig { url: self.redis.url.clone(), prefix: prefix.to_owned(), node_lease: self.lease() };
            let engine: Arc<dyn Engine> = Arc::new(RedisEngine::connect(config).await.unwrap());
            // Ready means subscribed and probed.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_engine_contract_holds_on_redis() {
    let factory = OnRedis { redis: Redis::start() };
    conformance::run_all(&factory).await;
}
