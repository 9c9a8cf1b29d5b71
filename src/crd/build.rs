//! `DatasetBuild`: a DSS job definition plus the controls of its runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::dss::{BuildType, ObjectType};

use super::{
    AbortRequest, ConnectionRef, DeletionPolicy, Failure, OnSpecChange, Phase, RetryPolicy, StartRequest,
};

/// Builds Dataiku DSS datasets (or folders, models, ...) by starting a DSS job with this definition.
/// The operator starts one DSS job per distinct (definition, rerunToken), records its id and state in
/// `.status`, and aborts it when the resource is deleted (see `deletionPolicy`).
// Several printer columns repeat `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-dss.dev",
    version = "v1alpha1",
    kind = "DatasetBuild",
    namespaced,
    status = "DatasetBuildStatus",
    shortname = "dsb",
    category = "dss",
    doc = "DatasetBuild runs a Dataiku DSS job that builds the listed outputs, and reports its state.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Job", type_ = "string", json_path = ".status.jobId", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new(
        "!has(self.spec.startDeadlineSeconds) || !has(self.spec.activeDeadlineSeconds) || self.spec.startDeadlineSeconds <= self.spec.activeDeadlineSeconds"
    ).message("spec.startDeadlineSeconds must not be greater than spec.activeDeadlineSeconds")
)]
#[serde(rename_all = "camelCase")]
pub struct DatasetBuildSpec {
    /// The DSSConnection (in this namespace) to run the job on. When omitted, the operator's default
    /// connection is used (flags `--dss-url` / `--dss-api-key-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionRef>,

    /// Key of the DSS project that runs the job, for example `IMPALA`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]+$"), length(min = 1, max = 128))]
    pub project_key: String,

    /// Build mode. Default: `NON_RECURSIVE_FORCED_BUILD` (build only the outputs).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub build_type: Option<BuildType>,

    /// What to build: at least one output.
    #[schemars(length(min = 1, max = 100))]
    pub outputs: Vec<BuildOutput>,

    /// Refresh the Hive metastore after the build. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_hive_metastore: Option<bool>,

    /// Let DSS update each recipe's output schema before running it. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_update_schema_before_each_recipe_run: Option<bool>,

    /// Change this value to request one more run of the same definition (for example a date, or a Git
    /// commit). Each distinct (definition, rerunToken) is built exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rerun_token: Option<String>,

    /// What a new run request (changed definition or rerunToken) does while a job is active:
    /// `Wait` (default) lets the active job finish, then starts the new one; `Abort` aborts it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_spec_change: Option<OnSpecChange>,

    /// When true, no new job is started (an active job continues). Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Abort the DSS job when it has been active for longer than this many seconds (reason
    /// `DeadlineExceeded`). Applies to the active run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub active_deadline_seconds: Option<i64>,

    /// Abort a job that DSS has still not started (state `NOT_STARTED`) after this many seconds
    /// (reason `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub start_deadline_seconds: Option<i64>,

    /// New jobs after a FAILED one. Default: no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,

    /// When true, a job that ends DONE with warnings counts as failed. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_on_warnings: Option<bool>,

    /// What deleting this resource does to an active DSS job: `Abort` (default) aborts it and waits
    /// for DSS to confirm; `Orphan` leaves it running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// One object to build.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildOutput {
    /// Dataset name, or the id of a managed folder, saved model, model evaluation store, ...
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('/')").message("outputs[].id must not contain '/'"))]
    pub id: String,

    /// Object type. Default: `DATASET`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<ObjectType>,

    /// DSS partition spec: dimension values joined with `|`, ranges with `/`, lists with `,`
    /// (for example `2024-01-01|FR`, `2024-01/2024-03`, `NP` for not partitioned). Default: `NP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new(r"self.matches('^[^|,/\\s]+([|,/][^|,/\\s]+)*$')").message(
        "outputs[].partition is not a DSS partition spec: use values joined by '|' (dimensions), '/' (ranges or several values) or ',' (several partitions), with no spaces or empty parts, e.g. '2024-01-01|FR' or 'NP'"
    ))]
    pub partition: Option<String>,

    /// Project of the object when it belongs to another project than `spec.projectKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]+$"), length(min = 1, max = 128))]
    pub project_key: Option<String>,
}

/// The observed state of a DatasetBuild. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetBuildStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Summary of where the build is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Id of the DSS job of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,

    /// The DSS job state as last polled (`NOT_STARTED`, `RUNNING`, `DONE`, `FAILED`, `ABORTED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,

    /// When DSS started the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the job reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Warnings DSS reported for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings_count: Option<i64>,

    /// Jobs started for the current run request (1 + retries): the attempt of `startRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,

    /// A job start in progress: recorded before the start request is sent to DSS, so that a crash
    /// between the request and recording the job id never starts a second job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_request: Option<StartRequest>,

    /// No new job starts before this time: DSS refused the last start for a reason that passes
    /// (rate limit, refused key), and the operator waits instead of retrying at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,

    /// An abort the operator requested for the current job, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_request: Option<AbortRequest>,

    /// The rerunToken the current job serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rerun_token: Option<String>,

    /// The last value of the `kube-dss.dev/rerun` annotation that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rerun_annotation: Option<String>,

    /// The last value of the `kube-dss.dev/abort` annotation that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_abort_annotation: Option<String>,

    /// Why the build failed or was aborted.
    // Boxed: most builds succeed, and without the failure inline a cached build fits a smaller
    // allocation (1,024 bytes instead of 1,280 with jemalloc's size classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Box<Failure>>,

    /// Earlier jobs of this resource, newest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,

    /// Standard conditions: `Ready`, `Reconciling`, `Stalled`, `Succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// An earlier job of this resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The DSS job id.
    pub job_id: String,
    /// Its last known state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When DSS started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}
