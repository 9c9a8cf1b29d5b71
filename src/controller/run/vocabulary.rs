//! The closed vocabularies of run control: where a run is ([`RunState`]), why a run waits
//! ([`WaitingReason`]), and what events say ([`EventReason`], [`EventAction`]). Each string is written
//! once, in an `as_str()`. Failure, abort and refusal reasons are part of the CRDs (`crd::run`).

use crate::{controller::error::Category, crd::FailureReason};

/// Where an external run is, in run-control terms. Each kind maps its own states onto these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RunState {
    /// Accepted by DSS, not started yet.
    Queued,
    /// Running (also any state DSS may add that is not terminal).
    Running,
    /// Finished successfully (warnings are counted apart).
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Aborted (by the operator or outside it).
    Aborted,
}

impl RunState {
    /// Whether the run will not change any more.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted)
    }
}

/// How a run ended, for the duration metrics (a closed set of labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ended {
    /// It succeeded (failOnWarnings aside).
    Done,
    /// It failed.
    Failed,
    /// It was aborted.
    Aborted,
}

impl Ended {
    /// Every outcome, for metric pre-registration.
    pub(crate) const ALL: [Ended; 3] = [Self::Done, Self::Failed, Self::Aborted];

    /// The label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }
}

/// Why a run waits (the reason of `Reconciling`, or of `Stalled` when only a user can help).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WaitingReason {
    /// The start request is recorded and waits for the connection's request budget.
    StartQueued,
    /// A start request's outcome is unknown; DSS is searched for the run once the grace is over.
    StartPending,
    /// Several DSS runs (or none named by the adopt annotation) match a lost start.
    StartOutcomeUnknown,
    /// The last run failed and a retry is due later.
    RetryScheduled,
    /// DSS said, in its own words, that the current run does not exist; the operator looks once
    /// more before it fails the run (a DSS restoring its state, a load balancer on a stale node).
    RunNotFound,
    /// The connection cannot be used, or DSS answered with an error: the reason is its category
    /// (`ConnectionNotFound`, `SecretNotFound`, `DssUnreachable`, `DssRateLimited`, ...).
    Trouble(Category),
}

impl WaitingReason {
    /// The PascalCase reason.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::StartQueued => "StartQueued",
            Self::StartPending => "StartPending",
            Self::StartOutcomeUnknown => "StartOutcomeUnknown",
            Self::RetryScheduled => "RetryScheduled",
            Self::RunNotFound => "RunNotFound",
            Self::Trouble(category) => category.as_str(),
        }
    }
}

/// Event reasons (PascalCase, a closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EventReason {
    /// A DSS job was started.
    JobStarted,
    /// A job whose start response was lost was found in DSS and adopted.
    JobAdopted,
    /// The job finished DONE.
    JobSucceeded,
    /// The job failed.
    JobFailed,
    /// The job was aborted.
    JobAborted,
    /// A deadline passed and the run was aborted.
    DeadlineExceeded,
    /// A new run request aborted the active run (`onSpecChange: Abort`).
    SpecChanged,
    /// Several DSS runs match a lost start.
    StartOutcomeUnknown,
    /// DSS rejected what a start asked for.
    StartRejected,
    /// The finalizer was released.
    FinalizerReleased,
    /// An abort was sent because the resource is being deleted, or because it was asked for.
    AbortRequested,
    /// The connection authenticated.
    Connected,
    /// The connection failed.
    ConnectionFailed,
    /// A scenario run was fired.
    ScenarioStarted,
    /// A scenario run whose fire response was lost was found in DSS and adopted.
    ScenarioAdopted,
    /// The scenario run ended SUCCESS (or WARNING).
    ScenarioSucceeded,
    /// The scenario run failed, or DSS cancelled its fire.
    ScenarioFailed,
    /// The scenario run was aborted.
    ScenarioAborted,
    /// A schedule created the build of a slot.
    BuildCreated,
    /// A schedule skipped slots past its starting deadline.
    SlotSkipped,
    /// `catchUp: All` had more missed slots than `maxCatchUpRuns`.
    TooManyMissedSlots,
    /// A due slot waits for an active build (`concurrencyPolicy: Forbid`).
    ConcurrencyForbidden,
    /// A schedule deleted its active build to start a new slot (`concurrencyPolicy: Replace`).
    BuildReplaced,
    /// A build asked for by hand exists already for its slot: nothing was created.
    BuildExists,
    /// A `kube-dss.dev/create-build` request could not be read.
    CreateBuildRefused,
}

impl EventReason {
    /// The PascalCase reason.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::JobStarted => "JobStarted",
            Self::JobAdopted => "JobAdopted",
            Self::JobSucceeded => "JobSucceeded",
            Self::JobFailed => "JobFailed",
            Self::JobAborted => "JobAborted",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::SpecChanged => "SpecChanged",
            Self::StartOutcomeUnknown => "StartOutcomeUnknown",
            Self::StartRejected => "StartRejected",
            Self::FinalizerReleased => "FinalizerReleased",
            Self::AbortRequested => "AbortRequested",
            Self::Connected => "Connected",
            Self::ConnectionFailed => "ConnectionFailed",
            Self::ScenarioStarted => "ScenarioStarted",
            Self::ScenarioAdopted => "ScenarioAdopted",
            Self::ScenarioSucceeded => "ScenarioSucceeded",
            Self::ScenarioFailed => "ScenarioFailed",
            Self::ScenarioAborted => "ScenarioAborted",
            Self::BuildCreated => "BuildCreated",
            Self::SlotSkipped => "SlotSkipped",
            Self::TooManyMissedSlots => "TooManyMissedSlots",
            Self::ConcurrencyForbidden => "ConcurrencyForbidden",
            Self::BuildReplaced => "BuildReplaced",
            Self::BuildExists => "BuildExists",
            Self::CreateBuildRefused => "CreateBuildRefused",
        }
    }
}

/// Event actions: what the operator was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EventAction {
    /// Starting a DSS job.
    StartJob,
    /// Observing a DSS job.
    PollJob,
    /// Aborting a DSS job.
    AbortJob,
    /// Adopting a DSS job whose start response was lost.
    AdoptJob,
    /// Firing a DSS scenario.
    StartScenario,
    /// Observing a DSS scenario run.
    PollScenario,
    /// Aborting a DSS scenario run.
    AbortScenario,
    /// Adopting a DSS scenario run whose fire response was lost.
    AdoptScenario,
    /// Releasing the finalizer.
    ReleaseFinalizer,
    /// Checking a connection.
    CheckConnection,
    /// A reconcile failed.
    Reconcile,
    /// A schedule created a build.
    CreateBuild,
    /// A schedule deleted its active build for a new slot.
    ReplaceBuild,
    /// A schedule decided about its slots.
    ScheduleSlots,
}

impl EventAction {
    /// The PascalCase action.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::StartJob => "StartJob",
            Self::PollJob => "PollJob",
            Self::AbortJob => "AbortJob",
            Self::AdoptJob => "AdoptJob",
            Self::StartScenario => "StartScenario",
            Self::PollScenario => "PollScenario",
            Self::AbortScenario => "AbortScenario",
            Self::AdoptScenario => "AdoptScenario",
            Self::ReleaseFinalizer => "ReleaseFinalizer",
            Self::CheckConnection => "CheckConnection",
            Self::Reconcile => "Reconcile",
            Self::CreateBuild => "CreateBuild",
            Self::ReplaceBuild => "ReplaceBuild",
            Self::ScheduleSlots => "ScheduleSlots",
        }
    }
}

/// The words a kind of run uses where the run core speaks of "a run": its failure reasons, its
/// event reasons and actions. The core picks from this table; the strings stay in the enums above.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Words {
    /// How a successful end reads in messages (`DONE` for a job, `SUCCESS` for a scenario run).
    pub(crate) success: &'static str,
    /// What DSS rejects when it refuses a start, in messages (`the job definition`).
    pub(crate) request: &'static str,
    /// The run ended failed.
    pub(crate) failed: FailureReason,
    /// The run was aborted outside the operator.
    pub(crate) aborted: FailureReason,
    /// DSS no longer knows the run.
    pub(crate) not_found: FailureReason,
    /// Events: started, adopted, succeeded, failed, aborted.
    pub(crate) started: EventReason,
    pub(crate) adopted: EventReason,
    pub(crate) succeeded: EventReason,
    pub(crate) failed_event: EventReason,
    pub(crate) aborted_event: EventReason,
    /// Event actions: starting, observing, aborting and adopting a run.
    pub(crate) start: EventAction,
    pub(crate) poll: EventAction,
    pub(crate) abort: EventAction,
    pub(crate) adopt: EventAction,
}
