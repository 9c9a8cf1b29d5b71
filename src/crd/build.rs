//! `DatasetBuild`: a DSS job definition plus the controls of its runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

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

/// A reference to a DSSConnection in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.__namespace__)").message(
    "connectionRef.namespace is not allowed: a DatasetBuild can only use a DSSConnection in its own namespace"
))]
pub struct ConnectionRef {
    /// Name of the DSSConnection.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Not supported: a build only uses a connection of its own namespace. Present only so that a
    /// manifest setting it is refused with a clear message instead of the field being dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// DSS build modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildType {
    /// Build only the listed outputs.
    #[default]
    NonRecursiveForcedBuild,
    /// Also rebuild out-of-date upstream datasets ("smart" build).
    RecursiveBuild,
    /// Rebuild every upstream dataset.
    RecursiveForcedBuild,
    /// Build only missing upstream data.
    RecursiveMissingOnlyBuild,
}

impl BuildType {
    /// The DSS name of the build mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonRecursiveForcedBuild => "NON_RECURSIVE_FORCED_BUILD",
            Self::RecursiveBuild => "RECURSIVE_BUILD",
            Self::RecursiveForcedBuild => "RECURSIVE_FORCED_BUILD",
            Self::RecursiveMissingOnlyBuild => "RECURSIVE_MISSING_ONLY_BUILD",
        }
    }
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

/// Kinds of DSS objects a job can build.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ObjectType {
    /// A dataset.
    #[default]
    Dataset,
    /// A managed folder.
    ManagedFolder,
    /// A saved model.
    SavedModel,
    /// A streaming endpoint.
    StreamingEndpoint,
    /// A model evaluation store.
    ModelEvaluationStore,
    /// A knowledge bank.
    RetrievableKnowledge,
}

impl ObjectType {
    /// The DSS name of the object type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "DATASET",
            Self::ManagedFolder => "MANAGED_FOLDER",
            Self::SavedModel => "SAVED_MODEL",
            Self::StreamingEndpoint => "STREAMING_ENDPOINT",
            Self::ModelEvaluationStore => "MODEL_EVALUATION_STORE",
            Self::RetrievableKnowledge => "RETRIEVABLE_KNOWLEDGE",
        }
    }
}

/// How a new run request is handled while a job is active.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum OnSpecChange {
    /// Let the active job finish, then start the new run.
    #[default]
    Wait,
    /// Abort the active job, then start the new run.
    Abort,
}

/// What deletion does to an active DSS job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Abort the DSS job and wait until DSS confirms a terminal state.
    #[default]
    Abort,
    /// Leave the DSS job running.
    Orphan,
}

/// Retries after a FAILED job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// How many new jobs may follow a FAILED one for the same run request. Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub limit: Option<i32>,
    /// Seconds to wait after a failure before the next job. Default: 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86_400))]
    pub backoff_seconds: Option<i64>,
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

    /// Jobs started for the current run request (1 + retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,

    /// Fingerprint of the job definition the current job runs (definition and rerunToken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,

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

    /// Why the build failed or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,

    /// Earlier jobs of this resource, newest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,

    /// Standard conditions: `Ready`, `Reconciling`, `Stalled`, `Succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Summary phase of a DatasetBuild.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Phase {
    /// Accepted, no job started yet.
    Pending,
    /// A job start is in progress.
    Starting,
    /// DSS accepted the job and has not started it yet (`NOT_STARTED`).
    Queued,
    /// The job is running.
    Running,
    /// The job finished `DONE`.
    Succeeded,
    /// The job failed (or finished with warnings under `failOnWarnings`), or the build cannot run.
    Failed,
    /// The job was aborted.
    Aborted,
    /// `suspend` is true and no job is active.
    Suspended,
}

impl Phase {
    /// The phase name as shown in `.status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Starting => "Starting",
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Aborted => "Aborted",
            Self::Suspended => "Suspended",
        }
    }

    /// Every phase, for metrics.
    pub const ALL: [Phase; 8] = [
        Self::Pending,
        Self::Starting,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Aborted,
        Self::Suspended,
    ];
}

/// A job start recorded before the request went to DSS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// When the start request was recorded (before it was sent).
    pub requested_at: Time,
    /// Fingerprint of the definition being started.
    pub fingerprint: String,
    /// The attempt this start belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// Hash of the job definition that was sent (outputs, type, flags), so a lost start is matched
    /// against what was requested even if the spec changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_hash: Option<String>,
}

/// An abort requested by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortRequest {
    /// `DeadlineExceeded` or `SpecChanged`.
    pub reason: String,
    /// When the abort was sent.
    pub requested_at: Time,
}

/// Why a build failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// A PascalCase cause: `JobFailed`, `JobAborted`, `DeadlineExceeded`, `FailedWithWarnings`,
    /// `StartOutcomeUnknown`, `StartRejected`, ...
    pub reason: String,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The DSS activity that failed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// The last lines of the DSS job log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
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
