//! The caches of one kind of object across watch scopes. With `--namespace a,b` each namespace has
//! its own watch and cache; what must see every object of a kind (the connections a build may name,
//! the jobs other builds track, the metrics) reads them all here.

use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::sync::lock;

/// The caches of kind `K`, one per watch scope.
pub(crate) struct Stores<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    stores: Mutex<Vec<Store<K>>>,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Default for Stores<K> {
    fn default() -> Self {
        Self {
            stores: Mutex::new(Vec::new()),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Stores<K> {
    /// Adds a scope's cache.
    pub(crate) fn add(&self, store: Store<K>) {
        lock(&self.stores).push(store);
    }

    /// Every cached object of every scope.
    pub(crate) fn state(&self) -> Vec<Arc<K>> {
        lock(&self.stores).iter().flat_map(Store::state).collect()
    }

    /// The cached object `r`, from whichever scope holds it.
    pub(crate) fn get(&self, r: &ObjectRef<K>) -> Option<Arc<K>> {
        lock(&self.stores).iter().find_map(|s| s.get(r))
    }
}
