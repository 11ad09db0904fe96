//! The apps this node serves, found by id (HTTP API) or by key (WebSocket URL).
//!
//! Built once from configuration and then read-only, so lookups take no lock. Construction rejects
//! what would make lookups ambiguous or auth meaningless: empty credentials, duplicate ids or keys.

use std::collections::HashMap;
use std::sync::Arc;

use crate::app::{App, AppConfig};
use crate::engine::Engine;
use crate::jobs::service::{AppJobs, QueueConfigError};
use crate::store::{HistoryStore, StoreError};

#[derive(Debug, Default)]
pub struct Registry {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
}

/// Why a set of apps cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("app #{index}: id, key and secret must all be non-empty")]
    MissingCredentials { index: usize },
    #[error("app id {0:?} is used twice")]
    DuplicateId(String),
    #[error("app key {0:?} is used twice")]
    DuplicateKey(String),
    #[error("app {id:?}: {setting} must be greater than 0")]
    ZeroLimit { id: String, setting: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("app {id:?}: {error}")]
    Queue { id: String, error: QueueConfigError },
}

impl Registry {
    pub fn new(apps: Vec<AppConfig>) -> Result<Self, RegistryError> {
        Self::with_store(apps, None)
    }

    /// Apps whose channel history is kept in `store` (when given) and resumed from it.
    pub fn with_store(apps: Vec<AppConfig>, store: Option<Arc<dyn HistoryStore>>) -> Result<Self, RegistryError> {
        let mut registry = Self::default();
        for (index, config) in apps.into_iter().enumerate() {
            registry.add(index, config, |config| match &store {
                Some(store) => Ok(App::with_store(config, store.clone())?),
                None => Ok(App::new(config)),
            })?;
        }
        Ok(registry)
    }

    /// Apps whose channels are shared with other nodes through `engine`. Wrap the registry in an
    /// `Arc` and call [`crate::cluster::attach`] so the engine can reach it.
    pub fn with_engine(apps: Vec<AppConfig>, engine: Arc<dyn Engine>) -> Result<Self, RegistryError> {
        let mut registry = Self::default();
        for (index, config) in apps.into_iter().enumerate() {
            registry.add(index, config, |config| Ok(App::with_engine(config, engine.clone())))?;
        }
        Ok(registry)
    }

    fn add(
        &mut self,
        index: usize,
        config: AppConfig,
        build: impl FnOnce(AppConfig) -> Result<App, RegistryError>,
    ) -> Result<(), RegistryError> {
        validate(index, &config)?;
        if self.by_id.contains_key(&config.id) {
            return Err(RegistryError::DuplicateId(config.id));
        }
        if self.by_key.contains_key(&config.key) {
            return Err(RegistryError::DuplicateKey(config.key));
        }
        let app = Arc::new(build(config)?);
        self.by_id.insert(app.id().to_owned(), app.clone());
        self.by_key.insert(app.key().to_owned(), app);
        Ok(())
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    pub fn apps(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

fn validate(index: usize, config: &AppConfig) -> Result<(), RegistryError> {
    if config.id.is_empty() || config.key.is_empty() || config.secret.expose().is_empty() {
        return Err(RegistryError::MissingCredentials { index });
    }
    let limits = [
        ("max_payload_bytes", config.max_payload_bytes),
        ("max_channel_name_len", config.max_channel_name_len),
        ("max_event_name_len", config.max_event_name_len),
        ("max_channels_per_connection", config.max_channels_per_connection),
        ("max_event_channels", config.max_event_channels),
        ("max_batch_events", config.max_batch_events),
        ("max_presence_members", config.max_presence_members),
        ("max_presence_user_id_len", config.max_presence_user_id_len),
    ];
    for (setting, value) in limits {
        if value == 0 {
            return Err(RegistryError::ZeroLimit { id: config.id.clone(), setting });
        }
    }
    AppJobs::new(&config.queues).map_err(|error| RegistryError::Queue { id: config.id.clone(), error })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_ambiguous_or_empty_apps() {
        let a = AppConfig::new("1", "k", "s");
        assert!(Registry::new(vec![a.clone()]).is_ok());
        assert_eq!(
            Registry::new(vec![a.clone(), AppConfig::new("1", "k2", "s")]).unwrap_err(),
            RegistryError::DuplicateId("1".into())
        );
        assert_eq!(
            Registry::new(vec![a, AppConfig::new("2", "k", "s")]).unwrap_err(),
            RegistryError::DuplicateKey("k".into())
        );
        assert_eq!(
            Registry::new(vec![AppConfig::new("1", "k", "")]).unwrap_err(),
            RegistryError::MissingCredentials { index: 0 }
        );
    }
}
