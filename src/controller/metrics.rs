//! Prometheus metrics of the operator (prometheus-client, OpenMetrics text on `/metrics`).
//! Every label value comes from a closed set: phases, DSS operations, status classes, error
//! categories. Never object names, ids or error text.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    crd::Phase,
    dss::{Operation, Outcome, RequestObserver},
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
pub struct Metrics {
    registry: Registry,
    builds: Family<PhaseLabel, Gauge>,
    phases: Mutex<HashMap<String, Phase>>,
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
    schedule_lag: Histogram,
    slots_skipped: Counter,
    slots_missed: Family<ReasonLabel, Counter>,
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
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kube_dss");
        let builds = Family::<PhaseLabel, Gauge>::default();
        registry.register("builds", "DatasetBuilds by phase", builds.clone());
        let job_duration = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
            ])
        });
        registry.register(
            "job_duration_seconds",
            "Duration of DSS jobs from start request to terminal state, by outcome",
            job_duration.clone(),
        );
        let dss_requests = Family::<DssLabels, Counter>::default();
        registry.register(
            "dss_requests",
            "DSS API requests by operation and status class",
            dss_requests.clone(),
        );
        let dss_latency = Family::<OperationLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        registry.register(
            "dss_request_duration_seconds",
            "DSS API request latency",
            dss_latency.clone(),
        );
        let dss_throttled = Family::<OperationLabel, Counter>::default();
        registry.register(
            "dss_throttled",
            "DSS API requests that waited for the connection's budget",
            dss_throttled.clone(),
        );
        let reconciles = Family::<ControllerLabel, Counter>::default();
        registry.register("reconciles", "Reconciles by controller", reconciles.clone());
        let reconcile_errors = Family::<CategoryLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors by category",
            reconcile_errors.clone(),
        );
        let start_outcome_unknown = Counter::default();
        registry.register(
            "start_outcome_unknown",
            "Start requests whose outcome could not be resolved (several matching DSS jobs)",
            start_outcome_unknown.clone(),
        );
        let jobs_started = Counter::default();
        registry.register("jobs_started", "DSS jobs started", jobs_started.clone());
        let jobs_adopted = Counter::default();
        registry.register(
            "jobs_adopted",
            "DSS jobs adopted after a start whose response was lost",
            jobs_adopted.clone(),
        );
        let finalizer_forced = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "finalizer_forced_releases",
            "Finalizers released without DSS confirming the abort, by reason",
            finalizer_forced.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let schedule_lag = Histogram::new([
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
        ]);
        registry.register(
            "schedule_lag_seconds",
            "Time from a schedule's slot to the creation of its DatasetBuild (catch-up runs included)",
            schedule_lag.clone(),
        );
        let slots_skipped = Counter::default();
        registry.register(
            "schedule_slots_skipped",
            "Schedule slots skipped because they could not start within startingDeadlineSeconds",
            slots_skipped.clone(),
        );
        let slots_missed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "schedule_slots_missed",
            "Missed schedule slots the catch-up policy did not run, by reason (CatchUpLatest, MaxCatchUpRuns)",
            slots_missed.clone(),
        );
        Self {
            registry,
            builds,
            phases: Mutex::new(HashMap::new()),
            job_duration,
            dss_requests,
            dss_latency,
            dss_throttled,
            reconciles,
            reconcile_errors,
            start_outcome_unknown,
            jobs_started,
            jobs_adopted,
            finalizer_forced,
            leader,
            schedule_lag,
            slots_skipped,
            slots_missed,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Records the phase of a build (keyed by uid); `None` forgets a deleted build.
    pub fn set_phase(&self, uid: &str, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(uid.to_string(), p),
            None => phases.remove(uid),
        };
        for p in Phase::ALL {
            let n = phases.values().filter(|v| **v == p).count();
            self.builds
                .get_or_create(&PhaseLabel { phase: p.as_str() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A job reached a terminal state.
    pub fn job_finished(&self, outcome: &'static str, duration: Duration) {
        self.job_duration
            .get_or_create(&OutcomeLabel { outcome })
            .observe(duration.as_secs_f64());
    }

    /// A reconcile ran.
    pub fn reconciled(&self, controller: &'static str) {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
    }

    /// A reconcile failed.
    pub fn reconcile_error(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&CategoryLabel { category })
            .inc();
    }

    /// Several DSS jobs matched a lost start.
    pub fn start_outcome_unknown(&self) {
        self.start_outcome_unknown.inc();
    }

    /// A DSS job was started.
    pub fn job_started(&self) {
        self.jobs_started.inc();
    }

    /// A DSS job was adopted.
    pub fn job_adopted(&self) {
        self.jobs_adopted.inc();
    }

    /// A finalizer was released without DSS confirming the abort.
    pub fn finalizer_forced(&self, reason: &'static str) {
        self.finalizer_forced.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A schedule created the build of a slot `lag` after the slot's time.
    pub fn schedule_build_created(&self, lag: Duration) {
        self.schedule_lag.observe(lag.as_secs_f64());
    }

    /// Schedule slots were skipped (past `startingDeadlineSeconds`).
    pub fn schedule_slots_skipped(&self, n: u64) {
        self.slots_skipped.inc_by(n);
    }

    /// Missed schedule slots were not run; `reason` is `CatchUpLatest` or `MaxCatchUpRuns`.
    pub fn schedule_slots_missed(&self, reason: &'static str, n: u64) {
        self.slots_missed.get_or_create(&ReasonLabel { reason }).inc_by(n);
    }

    /// This replica gained or lost leadership.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// Feeds the DSS client's per-request reports into the metrics.
#[derive(Debug)]
pub struct DssObserver(pub Arc<Metrics>);

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
    fn phases_are_counted_per_build_and_forgotten_on_delete() {
        let m = Metrics::new();
        m.set_phase("a", Some(Phase::Running));
        m.set_phase("b", Some(Phase::Running));
        m.set_phase("a", Some(Phase::Succeeded));
        m.set_phase("b", None);
        let text = m.encode();
        assert!(text.contains("kube_dss_builds{phase=\"Succeeded\"} 1"), "{text}");
        assert!(text.contains("kube_dss_builds{phase=\"Running\"} 0"), "{text}");
    }
}
