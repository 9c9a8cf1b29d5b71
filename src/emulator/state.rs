//! The state every request handler shares: the configuration and its compiled catalog, the
//! simulation, the live API keys, faults and statistics, and the scheduler's wake-up. Handlers of
//! the DSS API and of the admin API depend on it; it depends on no handler.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, RwLock},
};

use tokio::sync::{Notify, watch};

use super::{
    catalog::{ApiKey, Catalog, Project},
    clock::Clock,
    config::Config,
    faults::{FaultState, Faults},
    stats::StatsState,
    wire::ApiError,
    world::World,
};
use crate::sync::{lock, read, write};

/// Everything the handlers share.
pub(crate) struct AppState {
    pub(crate) config: Config,
    pub(crate) catalog: Arc<Catalog>,
    /// The jobs and scenario runs; see [`AppState::world`].
    pub(crate) world: Mutex<World>,
    /// API keys by secret; the admin API adds and revokes keys at run time.
    keys: RwLock<HashMap<String, ApiKey>>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) stats: Mutex<StatsState>,
    /// Wakes the scheduler when a job or a fire is created, or something finished early.
    pub(crate) wake: Notify,
    /// Wakes the calls held by the hang switch when the faults change.
    pub(crate) faults_changed: Notify,
    /// True once the emulator is stopping (held calls then end without an answer).
    pub(crate) stopping: watch::Receiver<bool>,
}

impl AppState {
    /// The state of an emulator serving `config`, compiled into `catalog`.
    pub(crate) fn new(config: Config, catalog: Catalog, stopping: watch::Receiver<bool>) -> AppState {
        let catalog = Arc::new(catalog);
        let keys = catalog
            .keys
            .iter()
            .map(|k| (k.config.key.clone(), k.clone()))
            .collect();
        AppState {
            world: Mutex::new(World::new(catalog.clone(), &config.instance, Clock::new())),
            faults: Mutex::new(FaultState::new(config.faults.clone())),
            stats: Mutex::new(StatsState::default()),
            keys: RwLock::new(keys),
            catalog,
            config,
            wake: Notify::new(),
            faults_changed: Notify::new(),
            stopping,
        }
    }

    /// Replaces the fault set (wakes the calls held by a hang) and returns it as it now stands.
    pub(crate) fn set_faults(&self, faults: Faults) -> Faults {
        let current = {
            let mut f = lock(&self.faults);
            f.set(faults);
            f.current()
        };
        self.faults_changed.notify_waiters();
        current
    }

    /// Locks the jobs and scenario runs and replays them up to now, so the caller sees (and
    /// changes) them as they are at the returned time.
    pub(crate) fn world(&self) -> (MutexGuard<'_, World>, u64) {
        let mut world = lock(&self.world);
        let now = world.now();
        world.advance(now);
        (world, now)
    }

    /// A project of the catalog, or DSS's 404.
    pub(crate) fn project(&self, pk: &str) -> Result<&Project, ApiError> {
        self.catalog
            .projects
            .get(pk)
            .ok_or_else(|| ApiError::not_found(format!("Project {pk} does not exist")))
    }

    pub(crate) fn key(&self, secret: &str) -> Option<ApiKey> {
        read(&self.keys).get(secret).cloned()
    }

    /// Adds or replaces (by id) an API key.
    pub(crate) fn put_key(&self, key: ApiKey) {
        let mut keys = write(&self.keys);
        keys.retain(|_, k| k.config.id != key.config.id);
        keys.insert(key.config.key.clone(), key);
    }

    /// Revokes the key with this id; returns whether it existed.
    pub(crate) fn delete_key(&self, id: &str) -> bool {
        let mut keys = write(&self.keys);
        let before = keys.len();
        keys.retain(|_, k| k.config.id != id);
        keys.len() != before
    }

    pub(crate) fn key_list(&self) -> Vec<ApiKey> {
        let keys = read(&self.keys);
        let mut list: Vec<ApiKey> = keys.values().cloned().collect();
        list.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        list
    }
}
