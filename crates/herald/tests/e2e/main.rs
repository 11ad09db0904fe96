//! End-to-end tests: the real `herald` binary, driven over WebSocket and the signed HTTP API.

mod api;
mod channels;
mod fixtures;
mod limits;
mod support;
mod users;
