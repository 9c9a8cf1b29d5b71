//! Prometheus metrics of the operator (prometheus-client, OpenMetrics text on `/metrics`).
//! Every label value comes from a closed set: phases, DSS operations, status classes, error
//! categories, condition reasons. Never object names, ids or error text.
//!
//! Series whose label values are known in advance are created at zero when the operator starts, so
//! that `rate()` and `increase()` in the chart's alerts see the first event (a counter series that
//! appears at 1 has no earlier sample to grow from) and dashboards show zeros rather than gaps.
//! The gauges of builds and connections are counted from the watch caches when scraped ([`scrape`]).

mod scrape;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use kube::runtime::reflector::Store;

use super::{
    run::{cleanup::Forced, vocabulary::Ended},
    schedule::slots::MissedSlots,
};
use crate::{
    crd::{DSSConnection, DatasetBuild, Phase},
    dss::{Category, Operation, Outcome, RequestObserver},
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    ready: &'static str,
    /// The reason of the Ready condition, as the operator wrote it (from its closed set).
    reason: String,
}

/// Buckets of `job_duration_seconds`: a second to six hours.
const JOB_DURATION_BUCKETS: [f64; 11] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// Buckets of `dss_request_duration_seconds`: 5 ms to 30 s.
const DSS_LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of `schedule_lag_seconds`: 100 ms to a day (a catch-up run can be that late).
const SCHEDULE_LAG_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

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
    connections: Family<ConnectionLabels, Gauge>,
    /// The DSSConnection caches of every watch scope, counted when scraped.
    connection_stores: Mutex<Vec<Store<DSSConnection>>>,
    /// Every (ready, reason) pair seen: a pair no connection has any more reads 0.
    connection_labels: Mutex<HashSet<ConnectionLabels>>,
    schedules: ScheduleMetrics,
    scenarios: ScenarioMetrics,
}

/// The ScenarioRun families.
struct ScenarioMetrics {
    started: Counter,
    adopted: Counter,
    duration: Family<OutcomeLabel, Histogram>,
}

impl ScenarioMetrics {
    fn register(r: &mut Registry) -> Self {
        Self {
            started: register(
                r,
                "scenario_runs_started",
                "DSS scenario runs fired",
                Counter::default(),
            ),
            adopted: register(
                r,
                "scenario_runs_adopted",
                "DSS scenario runs adopted after a fire whose response was lost",
                Counter::default(),
            ),
            duration: register(
                r,
                "scenario_run_duration_seconds",
                "Duration of DSS scenario runs from start request to terminal state, by outcome",
                Family::new_with_constructor(|| Histogram::new(JOB_DURATION_BUCKETS)),
            ),
        }
    }
}

/// The DatasetBuildSchedule families.
struct ScheduleMetrics {
    lag: Histogram,
    skipped: Counter,
    missed: Family<ReasonLabel, Counter>,
}

impl ScheduleMetrics {
    fn register(r: &mut Registry) -> Self {
        Self {
            lag: register(
                r,
                "schedule_lag_seconds",
                "Time from a schedule's slot to the creation of its DatasetBuild (catch-up runs included)",
                Histogram::new(SCHEDULE_LAG_BUCKETS),
            ),
            skipped: register(
                r,
                "schedule_slots_skipped",
                "Schedule slots skipped because they could not start within startingDeadlineSeconds",
                Counter::default(),
            ),
            missed: register(
                r,
                "schedule_slots_missed",
                "Missed schedule slots the catch-up policy did not run, by reason (CatchUpLatest, MaxCatchUpRuns)",
                Family::default(),
            ),
        }
    }
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
        let mut registry = Registry::with_prefix("kube_dss");
        let r = &mut registry;
        let metrics = Self {
            builds: register(r, "builds", "DatasetBuilds by phase", Family::default()),
            build_stores: Mutex::new(Vec::new()),
            job_duration: register(
                r,
                "job_duration_seconds",
                "Duration of DSS jobs from start request to terminal state, by outcome",
                Family::new_with_constructor(|| Histogram::new(JOB_DURATION_BUCKETS)),
            ),
            dss_requests: register(
                r,
                "dss_requests",
                "DSS API requests by operation and status class",
                Family::default(),
            ),
            dss_latency: register(
                r,
                "dss_request_duration_seconds",
                "DSS API request latency",
                Family::new_with_constructor(|| Histogram::new(DSS_LATENCY_BUCKETS)),
            ),
            dss_throttled: register(
                r,
                "dss_throttled",
                "DSS API requests that waited for the connection's budget",
                Family::default(),
            ),
            reconciles: register(r, "reconciles", "Reconciles by controller", Family::default()),
            reconcile_errors: register(
                r,
                "reconcile_errors",
                "Reconcile errors by category",
                Family::default(),
            ),
            start_outcome_unknown: register(
                r,
                "start_outcome_unknown",
                "Start requests whose outcome could not be resolved (several matching DSS jobs)",
                Counter::default(),
            ),
            jobs_started: register(r, "jobs_started", "DSS jobs started", Counter::default()),
            jobs_adopted: register(
                r,
                "jobs_adopted",
                "DSS jobs adopted after a start whose response was lost",
                Counter::default(),
            ),
            finalizer_forced: register(
                r,
                "finalizer_forced_releases",
                "Finalizers released without DSS confirming the abort, by reason",
                Family::default(),
            ),
            leader: register(
                r,
                "leader",
                "1 while this replica holds the leader lease",
                Gauge::default(),
            ),
            connections: register(
                r,
                "connections",
                "DSSConnections by their Ready condition (true, false) and its reason",
                Family::default(),
            ),
            connection_stores: Mutex::new(Vec::new()),
            connection_labels: Mutex::new(HashSet::new()),
            schedules: ScheduleMetrics::register(r),
            scenarios: ScenarioMetrics::register(r),
            registry,
        };
        metrics.create_known_series();
        metrics
    }

    /// Creates at zero every series whose labels come from a set known in advance.
    fn create_known_series(&self) {
        for phase in Phase::ALL {
            let _ = self.builds.get_or_create(&PhaseLabel {
                phase: phase.as_str(),
            });
        }
        for outcome in Ended::ALL.map(Ended::as_str) {
            let _ = self.scenarios.duration.get_or_create(&OutcomeLabel { outcome });
            let _ = self.job_duration.get_or_create(&OutcomeLabel { outcome });
        }
        for operation in Operation::ALL {
            let operation = operation.as_str();
            for outcome in Outcome::ALL {
                let _ = self.dss_requests.get_or_create(&DssLabels {
                    operation,
                    status_class: outcome.as_str(),
                });
            }
            let _ = self.dss_throttled.get_or_create(&OperationLabel { operation });
        }
        for reason in Forced::ALL.map(Forced::as_str) {
            let _ = self.finalizer_forced.get_or_create(&ReasonLabel { reason });
        }
        for category in Category::ALL.map(Category::as_str) {
            let _ = self.reconcile_errors.get_or_create(&CategoryLabel { category });
        }
        for reason in MissedSlots::ALL.map(MissedSlots::as_str) {
            let _ = self.schedules.missed.get_or_create(&ReasonLabel { reason });
        }
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        self.count_phases();
        self.count_connections();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
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

    /// A DSS scenario run was fired.
    pub(crate) fn scenario_run_started(&self) {
        self.scenarios.started.inc();
    }

    /// A DSS scenario run was adopted.
    pub(crate) fn scenario_run_adopted(&self) {
        self.scenarios.adopted.inc();
    }

    /// A DSS scenario run reached a terminal state.
    pub(crate) fn scenario_run_finished(&self, outcome: &'static str, duration: Duration) {
        self.scenarios
            .duration
            .get_or_create(&OutcomeLabel { outcome })
            .observe(duration.as_secs_f64());
    }

    /// A DSS job was adopted.
    pub(crate) fn job_adopted(&self) {
        self.jobs_adopted.inc();
    }

    /// A finalizer was released without DSS confirming the abort.
    pub(crate) fn finalizer_forced(&self, reason: &'static str) {
        self.finalizer_forced.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A schedule created the build of a slot `lag` after the slot's time.
    pub(crate) fn schedule_build_created(&self, lag: Duration) {
        self.schedules.lag.observe(lag.as_secs_f64());
    }

    /// Schedule slots were skipped (past `startingDeadlineSeconds`).
    pub(crate) fn schedule_slots_skipped(&self, n: u64) {
        self.schedules.skipped.inc_by(n);
    }

    /// Missed schedule slots were not run; `reason` is a [`MissedSlots`] label.
    pub(crate) fn schedule_slots_missed(&self, reason: &'static str, n: u64) {
        self.schedules
            .missed
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    /// This replica gained or lost leadership.
    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// Registers a metric under `name` and returns it (metrics are shared handles).
fn register<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
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
mod tests;
