//! The gauges counted from the watch caches when scraped: builds by phase, connections by their
//! Ready condition. Derived at every scrape, never kept per object.

use std::collections::HashMap;

use kube::runtime::reflector::Store;

use super::{ConnectionLabels, Metrics, PhaseLabel};
use crate::{
    controller::run::contract::{READY, condition},
    crd::{DSSConnection, DatasetBuild, Phase},
    sync::lock,
};

impl Metrics {
    /// Counts the builds of `store` in the phase gauge (at every scrape).
    pub(crate) fn watch_builds(&self, store: Store<DatasetBuild>) {
        lock(&self.build_stores).push(store);
    }

    /// Counts the connections of `store` in the connections gauge (at every scrape).
    pub(crate) fn watch_connections(&self, store: Store<DSSConnection>) {
        lock(&self.connection_stores).push(store);
    }

    /// Sets the phase gauge from the caches: derived when scraped, never kept per build.
    pub(super) fn count_phases(&self) {
        let mut counts = [0i64; Phase::ALL.len()];
        for store in lock(&self.build_stores).iter() {
            for build in store.state() {
                if let Some(p) = build.status.as_ref().and_then(|s| s.phase)
                    && let Some(i) = Phase::ALL.iter().position(|x| *x == p)
                {
                    counts[i] += 1;
                }
            }
        }
        for (p, n) in Phase::ALL.iter().zip(counts) {
            self.builds
                .get_or_create(&PhaseLabel { phase: p.as_str() })
                .set(n);
        }
    }

    /// Sets the connections gauge from the caches, by their Ready condition and its reason.
    pub(super) fn count_connections(&self) {
        let mut seen = lock(&self.connection_labels);
        let mut counts: HashMap<ConnectionLabels, i64> = seen.iter().map(|l| (l.clone(), 0)).collect();
        for store in lock(&self.connection_stores).iter() {
            for conn in store.state() {
                let ready = conn.status.as_ref().and_then(|s| condition(&s.conditions, READY));
                if let Some(c) = ready {
                    let ready = if c.status == "True" { "true" } else { "false" };
                    let labels = ConnectionLabels {
                        ready,
                        reason: c.reason.clone(),
                    };
                    *counts.entry(labels).or_default() += 1;
                }
            }
        }
        for (labels, n) in counts {
            self.connections.get_or_create(&labels).set(n);
            seen.insert(labels);
        }
    }
}
