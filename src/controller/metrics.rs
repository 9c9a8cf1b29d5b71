//! Prometheus metrics of the operator (prometheus-client, OpenMetrics text on `/metrics`).
//! Every label value comes from a closed set: phases, DSS operations, status classes, error
//! categories. Never object names, ids or error text.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use kube::runtime::reflector::Store;

use crate::{
    crd::{DatasetBuild, Phase},
    dss::{Operation, Outcome, RequestObserver},
    sync::lock,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DssLabels {
    operation: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The operator's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    builds: Family<PhaseLabel, Gauge>,
    /// The DatasetBuild caches of every watch scope: the phase gauge is counted from them when scraped.
    build_stores: Mutex<Vec<Store<DatasetBuild>>>,
    job_duration: Family<OutcomeLabel, Histogram>,
    dss_requests: Family<DssLabels, Counter>,
    dss_latency: Family<OperationLabel, Histogram>,
    dss_throttled: Family<OperationLabel, Counter>,
    reconciles: Family<ControllerLabel, Counter>,
    reconcile_errors: Family<CategoryLabel, Counter>,
    start_outcome_unknown: Counter,
    jobs_started: Counter,
    jobs_adopted: Counter,
    finalizer_forced: Family<ReasonLabel, Counter>,
    leader: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric family under the `kube_dss` prefix.
    pub(crate) fn new() -> Self {
        let mut r = Registry::with_prefix("kube_dss");
        let job_buckets = || {
            Histogram::new([
                1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
            ])
        };
        let request_buckets = || {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        };
        Self {
            builds: registered(&mut r, "builds", "DatasetBuilds by phase", Family::default()),
            build_stores: Mutex::new(Vec::new()),
            job_duration: registered(
                &mut r,
                "job_duration_seconds",
                "Duration of DSS jobs from start request to terminal state, by outcome",
                Family::new_with_constructor(job_buckets),
            ),
            dss_requests: registered(
                &mut r,
                "dss_requests",
                "DSS API requests by operation and status class",
                Family::default(),
            ),
            dss_latency: registered(
                &mut r,
                "dss_request_duration_seconds",
                "DSS API request latency",
                Family::new_with_constructor(request_buckets),
            ),
            dss_throttled: registered(
                &mut r,
                "dss_throttled",
                "DSS API requests that waited for the connection's budget",
                Family::default(),
            ),
            reconciles: registered(
                &mut r,
                "reconciles",
                "Reconciles by controller",
                Family::default(),
            ),
            reconcile_errors: registered(
                &mut r,
                "reconcile_errors",
                "Reconcile errors by category",
                Family::default(),
            ),
            start_outcome_unknown: registered(
                &mut r,
                "start_outcome_unknown",
                "Start requests whose outcome could not be resolved (several matching DSS jobs)",
                Counter::default(),
            ),
            jobs_started: registered(&mut r, "jobs_started", "DSS jobs started", Counter::default()),
            jobs_adopted: registered(
                &mut r,
                "jobs_adopted",
                "DSS jobs adopted after a start whose response was lost",
                Counter::default(),
            ),
            finalizer_forced: registered(
                &mut r,
                "finalizer_forced_releases",
                "Finalizers released without DSS confirming the abort, by reason",
                Family::default(),
            ),
            leader: registered(
                &mut r,
                "leader",
                "1 while this replica holds the leader lease",
                Gauge::default(),
            ),
            registry: r,
        }
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        self.count_phases();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts the builds of `store` in the phase gauge (at every scrape).
    pub(crate) fn watch_builds(&self, store: Store<DatasetBuild>) {
        lock(&self.build_stores).push(store);
    }

    /// Sets the phase gauge from the caches: derived when scraped, never kept per build.
    fn count_phases(&self) {
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

    /// A job reached a terminal state.
    pub(crate) fn job_finished(&self, outcome: &'static str, duration: Duration) {
        self.job_duration
            .get_or_create(&OutcomeLabel { outcome })
            .observe(duration.as_secs_f64());
    }

    /// A reconcile ran.
    pub(crate) fn reconciled(&self, controller: &'static str) {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
    }

    /// A reconcile failed.
    pub(crate) fn reconcile_error(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&CategoryLabel { category })
            .inc();
    }

    /// Several DSS jobs matched a lost start.
    pub(crate) fn start_outcome_unknown(&self) {
        self.start_outcome_unknown.inc();
    }

    /// A DSS job was started.
    pub(crate) fn job_started(&self) {
        self.jobs_started.inc();
    }

    /// A DSS job was adopted.
    pub(crate) fn job_adopted(&self) {
        self.jobs_adopted.inc();
    }

    /// A finalizer was released without DSS confirming the abort.
    pub(crate) fn finalizer_forced(&self, reason: &'static str) {
        self.finalizer_forced.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// This replica gained or lost leadership.
    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// Registers `metric` and returns it (a family shares its state with its clones).
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// Feeds the DSS client's per-request reports into the metrics.
#[derive(Debug)]
pub(crate) struct DssObserver(pub(crate) Arc<Metrics>);

impl RequestObserver for DssObserver {
    fn observe(&self, operation: Operation, outcome: Outcome, elapsed: Duration) {
        let op = operation.as_str();
        let status_class = outcome.as_str();
        self.0
            .dss_requests
            .get_or_create(&DssLabels {
                operation: op,
                status_class,
            })
            .inc();
        self.0
            .dss_latency
            .get_or_create(&OperationLabel { operation: op })
            .observe(elapsed.as_secs_f64());
    }

    fn throttled(&self, operation: Operation, _wait: Duration) {
        self.0
            .dss_throttled
            .get_or_create(&OperationLabel {
                operation: operation.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_counted_from_the_build_caches_when_scraped() {
        use kube::runtime::watcher::Event;
        let m = Metrics::new();
        let (store, mut writer) = kube::runtime::reflector::store::<DatasetBuild>();
        let build = |name: &str, phase: Phase| -> DatasetBuild {
            let mut b: DatasetBuild = serde_json::from_value(serde_json::json!({
                "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"projectKey": "P", "outputs": [{"id": "d"}]},
            }))
            .unwrap();
            b.status = Some(crate::crd::DatasetBuildStatus {
                phase: Some(phase),
                ..Default::default()
            });
            b
        };
        writer.apply_watcher_event(&Event::Apply(build("a", Phase::Running)));
        writer.apply_watcher_event(&Event::Apply(build("b", Phase::Running)));
        writer.apply_watcher_event(&Event::Apply(build("a", Phase::Succeeded)));
        m.watch_builds(store);
        let text = m.encode();
        assert!(text.contains("kube_dss_builds{phase=\"Succeeded\"} 1"), "{text}");
        assert!(text.contains("kube_dss_builds{phase=\"Running\"} 1"), "{text}");
        writer.apply_watcher_event(&Event::Delete(build("b", Phase::Running)));
        assert!(m.encode().contains("kube_dss_builds{phase=\"Running\"} 0"));
    }
}
