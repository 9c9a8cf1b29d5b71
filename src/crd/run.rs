//! What every kind of run shares: the run controls of a spec (connection, retries, policies) and the
//! run-control part of a status (phase, start request, abort request, failure). `DatasetBuild` is the
//! first kind of run; its DSS-job specifics live in `build.rs`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The annotation that requests one more run without editing Git (its value is the request: change it
/// to request another run). Argo CD and Flux ignore annotations they do not manage.
pub const RERUN_ANNOTATION: &str = "kube-dss.dev/rerun";

/// The annotation that aborts the active run without deleting the resource, once per distinct value.
pub const ABORT_ANNOTATION: &str = "kube-dss.dev/abort";

/// The annotation that resolves `StartOutcomeUnknown`: its value names the run to adopt (a DSS job id).
pub const ADOPT_ANNOTATION: &str = "kube-dss.dev/adopt-job";

/// A reference to a DSSConnection in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.__namespace__)").message(
    "connectionRef.namespace is not allowed: a DatasetBuild or ScenarioRun can only use a DSSConnection in its own namespace"
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

/// Summary phase of a run, derived by the operator from the run's facts.
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

/// A start recorded before the request went to DSS: the crash guard's record, and the run request
/// the status serves (its fingerprint and attempt).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// When the start request was recorded (before it was sent); once DSS accepted it, when it was
    /// sent.
    pub requested_at: Time,
    /// Fingerprint of the run request being started (definition, rerunToken, rerun annotation).
    pub fingerprint: String,
    /// The attempt this start belongs to: 1, then one more per retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// Hash of the job definition that was sent (outputs, type, flags), so a lost start is matched
    /// against what was requested even if the spec changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_hash: Option<String>,
    /// Set when DSS refused this request before creating anything, so it is not in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// Why DSS refused a start request without creating a job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Refusal {
    /// DSS answered 429: the same attempt is sent again after `status.notBefore`.
    RateLimited,
    /// DSS refused the API key: the same attempt is sent again after `status.notBefore`.
    Unauthorized,
    /// DSS rejected the definition (4xx): it is not sent again until the run request changes.
    Rejected,
}

/// An abort requested by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortRequest {
    /// Why the operator aborts the job.
    pub reason: AbortReason,
    /// When the abort was sent.
    pub requested_at: Time,
}

/// Why the operator aborts a job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AbortReason {
    /// `activeDeadlineSeconds` or `startDeadlineSeconds` passed.
    DeadlineExceeded,
    /// A new run request arrived with `onSpecChange: Abort`.
    SpecChanged,
    /// The resource was deleted with `deletionPolicy: Abort`.
    Deleted,
    /// The `kube-dss.dev/abort` annotation asked for it.
    Requested,
}

impl AbortReason {
    /// The PascalCase name recorded in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::SpecChanged => "SpecChanged",
            Self::Deleted => "Deleted",
            Self::Requested => "Requested",
        }
    }
}

/// Why a run failed or was aborted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The cause, also the reason of the `Stalled` condition.
    pub reason: FailureReason,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The DSS activity (of a job) or the step (of a scenario run) that failed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// The last lines of the DSS log (of the job, or of the failing step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// The causes of a failed or aborted run (a closed set: condition reasons, event notes, health checks).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum FailureReason {
    /// The DSS job ended `FAILED`.
    JobFailed,
    /// The DSS job was aborted outside the operator.
    JobAborted,
    /// DSS no longer knows the job.
    JobNotFound,
    /// A deadline passed and the operator aborted the job.
    DeadlineExceeded,
    /// The job ended `DONE` with warnings and `failOnWarnings` is true.
    FailedWithWarnings,
    /// DSS rejected the job definition.
    StartRejected,
    /// The `kube-dss.dev/abort` annotation aborted the job.
    AbortRequested,
    /// The scenario run ended `FAILED`.
    ScenarioFailed,
    /// The scenario run was aborted outside the operator.
    ScenarioAborted,
    /// DSS no longer knows the scenario run (or its trigger fire).
    ScenarioRunNotFound,
    /// DSS cancelled the trigger fire (the scenario was already running, or another trigger fired).
    TriggerCancelled,
}

impl FailureReason {
    /// The PascalCase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobFailed => "JobFailed",
            Self::JobAborted => "JobAborted",
            Self::JobNotFound => "JobNotFound",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::FailedWithWarnings => "FailedWithWarnings",
            Self::StartRejected => "StartRejected",
            Self::AbortRequested => "AbortRequested",
            Self::ScenarioFailed => "ScenarioFailed",
            Self::ScenarioAborted => "ScenarioAborted",
            Self::ScenarioRunNotFound => "ScenarioRunNotFound",
            Self::TriggerCancelled => "TriggerCancelled",
        }
    }

    /// The phase a run with this failure shows.
    pub fn phase(self) -> Phase {
        match self {
            Self::JobAborted | Self::ScenarioAborted | Self::AbortRequested => Phase::Aborted,
            Self::JobFailed
            | Self::JobNotFound
            | Self::DeadlineExceeded
            | Self::FailedWithWarnings
            | Self::StartRejected
            | Self::ScenarioFailed
            | Self::ScenarioRunNotFound
            | Self::TriggerCancelled => Phase::Failed,
        }
    }
}

/// A reason compares equal to its PascalCase name, as it reads in the status.
impl PartialEq<&str> for FailureReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
