//! End-to-end tests: the real `herald` binary, driven over WebSocket and the signed HTTP API.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

mod admission;
mod api;
mod bench;
mod channels;
mod cli;
mod cluster;
mod console;
mod cors;
mod cursors;
mod drain;
mod engines;
mod feeds;
mod fixtures;
mod jobs;
mod limits;
mod metrics;
mod recovery;
mod redis_server;
mod sse;
mod support;
mod tls;
mod users;
mod webhooks;
mod worker_example;
