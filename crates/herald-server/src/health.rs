//! `GET /healthz` and `GET /readyz`: whether the process serves, and whether it should get traffic.
//!
//! Liveness says only that the process answers HTTP; restarting it would not help with anything
//! else. Readiness turns false while the engine cannot deliver (the Redis link is down or
//! resubscribing) and once shutdown began, so that a load balancer sends new clients elsewhere.
//! Neither says anything about any app.

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// Why a node should (not) get new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The engine's link is down (or not yet resubscribed and probed).
    EngineDown,
    /// Shutdown began: connections are being asked to reconnect elsewhere.
    Draining,
}

impl Readiness {
    pub fn of(state: &AppState) -> Self {
        if state.shutdown.is_cancelled() {
            Self::Draining
        } else if !state.is_ready() {
            Self::EngineDown
        } else {
            Self::Ready
        }
    }
}

/// 200 `ok` while the process serves.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when ready; 503 with the reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match Readiness::of(&state) {
        Readiness::Ready => (StatusCode::OK, "ready\n"),
        Readiness::EngineDown => (StatusCode::SERVICE_UNAVAILABLE, "not ready: engine unavailable\n"),
        Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_core::{AppConfig, Registry};

    use super::*;
    use crate::config::ServerConfig;

    #[test]
    fn an_embedded_node_is_ready_until_shutdown_begins() {
        let registry = Registry::new(vec![AppConfig::new("1", "key", "secret")]).unwrap();
        let state = AppState::new(Arc::new(registry), ServerConfig::default(), None);
        assert_eq!(Readiness::of(&state), Readiness::Ready);
        state.shutdown.cancel();
        assert_eq!(Readiness::of(&state), Readiness::Draining);
    }
}
