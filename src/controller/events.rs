//! Kubernetes events: only on transitions, through one shared recorder so repeats aggregate.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource,
    runtime::events::{Event, EventType, Recorder},
};

use super::error::truncate;

/// Event reasons (PascalCase, closed set).
pub mod reason {
    /// A DSS job was started.
    pub const JOB_STARTED: &str = "JobStarted";
    /// A job whose start response was lost was found in DSS and adopted.
    pub const JOB_ADOPTED: &str = "JobAdopted";
    /// The job finished DONE.
    pub const JOB_SUCCEEDED: &str = "JobSucceeded";
    /// The job failed.
    pub const JOB_FAILED: &str = "JobFailed";
    /// The job was aborted.
    pub const JOB_ABORTED: &str = "JobAborted";
    /// A deadline passed and the job was aborted.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// A new run request aborted the active job (`onSpecChange: Abort`).
    pub const SPEC_CHANGED: &str = "SpecChanged";
    /// A retry of a failed job is scheduled.
    pub const RETRY_SCHEDULED: &str = "RetryScheduled";
    /// Several DSS jobs match a lost start.
    pub const START_OUTCOME_UNKNOWN: &str = "StartOutcomeUnknown";
    /// DSS refused the job definition.
    pub const START_REJECTED: &str = "StartRejected";
    /// The finalizer was released.
    pub const FINALIZER_RELEASED: &str = "FinalizerReleased";
    /// An abort was sent because the resource is being deleted.
    pub const ABORT_REQUESTED: &str = "AbortRequested";
    /// The connection authenticated.
    pub const CONNECTED: &str = "Connected";
    /// The connection failed.
    pub const CONNECTION_FAILED: &str = "ConnectionFailed";
}

/// Publishes one event; failures are logged, never fatal (an event is a report, not a state).
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: impl Into<String>,
) {
    publish_to(recorder, &obj.object_ref(&()), type_, reason, action, note).await;
}

/// Publishes one event about the object `reference` points at (for callers that hold no object).
pub async fn publish_to(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: impl Into<String>,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(&note.into(), 1024)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %err, reason, "could not publish an event");
    }
}
