//! `ScenarioRun`: one run of a DSS scenario, with the same run control as a `DatasetBuild`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    AbortRequest, ConnectionRef, DeletionPolicy, Failure, OnSpecChange, Phase, RetryPolicy, StartRequest,
};

/// Runs a Dataiku DSS scenario (its build steps, checks, notifications) through the scenario's manual
/// trigger. The operator fires it once per distinct (scenario, params, rerunToken), follows the run it
/// started, records its outcome and steps in `.status`, and aborts it when the resource is deleted
/// (see `deletionPolicy`).
// Several printer columns repeat `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-dss.dev",
    version = "v1alpha1",
    kind = "ScenarioRun",
    namespaced,
    status = "ScenarioRunStatus",
    shortname = "scr",
    category = "dss",
    doc = "ScenarioRun runs a Dataiku DSS scenario once per run request, and reports its outcome and steps.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Outcome", type_ = "string", json_path = ".status.outcome"),
    printcolumn(name = "Run", type_ = "string", json_path = ".status.runId", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new(
        "!has(self.spec.startDeadlineSeconds) || !has(self.spec.activeDeadlineSeconds) || self.spec.startDeadlineSeconds <= self.spec.activeDeadlineSeconds"
    ).message("spec.startDeadlineSeconds must not be greater than spec.activeDeadlineSeconds")
)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioRunSpec {
    /// The DSSConnection (in this namespace) to run the scenario on. When omitted, the operator's
    /// default connection is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionRef>,

    /// Key of the DSS project of the scenario, for example `IMPALA`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]+$"), length(min = 1, max = 128))]
    pub project_key: String,

    /// Id of the scenario in the project.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('/')").message("scenarioId must not contain '/'"))]
    pub scenario_id: String,

    /// Parameters of the run, as a free-form object (what `DSSScenario.run(params)` sends). The key
    /// `kube-dss.dev/request` is the operator's own: it carries the run's request marker (a value set
    /// here is replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,

    /// Change this value to request one more run with the same parameters. Each distinct
    /// (scenario, params, rerunToken) runs exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rerun_token: Option<String>,

    /// What a new run request does while a run is active: `Wait` (default) or `Abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_spec_change: Option<OnSpecChange>,

    /// When true, no new run is started (an active one continues). Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Abort the run when it has been active for longer than this many seconds (reason
    /// `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub active_deadline_seconds: Option<i64>,

    /// Abort a fire whose run has still not started after this many seconds (reason
    /// `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub start_deadline_seconds: Option<i64>,

    /// New runs after a FAILED one, or after DSS cancelled the fire. Default: no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,

    /// When true, a run that ends with the WARNING outcome counts as failed. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_on_warnings: Option<bool>,

    /// What deleting this resource does to an active run: `Abort` (default) aborts it if it is still
    /// the scenario's current run, and waits for DSS to confirm; `Orphan` leaves it running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The observed state of a ScenarioRun. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioRunStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Summary of where the run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The trigger that fired the current run (`trigger.id` of the fire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,

    /// The fire of the current run (`runId` of the fire; not the scenario run's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_run_id: Option<String>,

    /// The scenario run the fire started, once DSS created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,

    /// Where the current run is as last observed: `FIRED` (no run yet), `CANCELLED` (DSS dropped the
    /// fire), `RUNNING`, or its outcome `SUCCESS`, `WARNING`, `FAILED`, `ABORTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,

    /// When the scenario run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Steps that ended with the WARNING outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings_count: Option<i64>,

    /// Runs started for the current run request (1 + retries): the attempt of `startRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,

    /// A start recorded before the fire was requested, so that a crash between the request and
    /// recording the fire never fires the scenario twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_request: Option<StartRequest>,

    /// No new run starts before this time: DSS refused the last fire for a reason that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,

    /// An abort the operator requested for the current run, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_request: Option<AbortRequest>,

    /// The rerunToken the current run serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rerun_token: Option<String>,

    /// The last value of the `kube-dss.dev/rerun` annotation that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rerun_annotation: Option<String>,

    /// The last value of the `kube-dss.dev/abort` annotation that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_abort_annotation: Option<String>,

    /// Why the run failed or was aborted; `activity` names the failing step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,

    /// The steps of the current run so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSummary>,

    /// Earlier runs of this resource, newest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ScenarioHistoryEntry>,

    /// Standard conditions: `Ready`, `Reconciling`, `Stalled`, `Succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One step of a scenario run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepSummary {
    /// The step's name (or its id).
    pub name: String,
    /// Its outcome once it ended: `SUCCESS`, `WARNING`, `FAILED`, `ABORTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The DSS jobs it ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_ids: Vec<String>,
}

/// An earlier run of this resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioHistoryEntry {
    /// The trigger that fired.
    pub trigger_id: String,
    /// The trigger fire.
    pub trigger_run_id: String,
    /// The scenario run, if the fire started one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Its last known outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}
