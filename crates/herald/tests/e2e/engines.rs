//! Where the feed and cursor tests keep shared state: the embedded engine (SQLite in the data dir)
//! or a private Redis per test. `on_both_engines!` turns one test body into a test per engine; it
//! does not start anything the body does not ask for.

use crate::redis_server::RedisServer;
use crate::support::TestServer;

pub enum Engine {
    Embedded,
    Redis(Box<RedisServer>),
}

impl Engine {
    pub async fn redis() -> Self {
        Self::Redis(Box::new(RedisServer::start().await))
    }

    /// A fresh server on this engine.
    pub async fn serve(&self, toml: &str) -> TestServer {
        let args = match self {
            Self::Embedded => Vec::new(),
            Self::Redis(redis) => ["--engine", "redis", "--redis-url", &redis.url(), "--redis-prefix", "state-e2e"]
                .map(String::from)
                .to_vec(),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::in_dir(&TestServer::fresh_dir(), toml, &args).await
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Redis(_) => "redis",
        }
    }
}

/// Runs each listed test body (`async fn name(engine: Engine)`) on both engines; the module using
/// it imports `Engine`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Engine::Embedded).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Engine::redis().await).await;
            })*
        }
    };
}

pub(crate) use on_both_engines;
