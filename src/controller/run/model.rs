//! The run core's types: what a kind of run is ([`Kind`]), what the core reads (the spec's
//! [`Controls`], the [`RunStatus`], what this process knows in [`Process`], the [`Fact`] the executor
//! learned) and what it returns (a [`Decision`]: the whole status, the events, the next step).

use std::{fmt::Debug, time::Duration};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::vocabulary::{EventAction, EventReason, RunState, WaitingReason, Words};
use crate::{
    controller::error::Category,
    crd::{AbortReason, AbortRequest, DeletionPolicy, Failure, OnSpecChange, StartRequest},
    dss,
};

/// A kind of run, as the run core sees it: its types and words, no IO (the executor's `RunKind`
/// adds that).
pub(crate) trait Kind: Clone + Debug + PartialEq + Send + Sync + Sized + 'static {
    /// What names the external run once DSS accepted the start (a job id, a trigger fire).
    type Handle: Clone + PartialEq + Debug + Send + Sync;
    /// The kind's own state of a run, as DSS reports it (kept as reported in the status).
    type State: Clone + PartialEq + Debug + Send + Sync;
    /// The kind's details of an observation beyond the state (step summaries, ...).
    type Details: Clone + PartialEq + Debug + Default + Send + Sync;

    /// The kind's words for the run core's messages and reasons.
    const WORDS: Words;

    /// The run-control state of one of the kind's states.
    fn run_state(state: &Self::State) -> RunState;

    /// The state of a run DSS has just accepted.
    fn accepted_state() -> Self::State;

    /// The state shown for a run DSS no longer knows.
    fn unknown_state() -> Self::State;

    /// How a run is named in messages (`DSS job <id>`).
    fn describe(handle: &Self::Handle) -> String;
}

/// The run controls of a spec, read once per reconcile. Each kind builds them by destructuring its
/// spec without `..`, so a new field cannot be forgotten.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Controls {
    /// Fingerprint of the wanted run request (definition, rerunToken, rerun annotation).
    pub(crate) want: String,
    /// Hash of the definition a start sends (to recognise it in DSS later).
    pub(crate) definition_hash: String,
    /// `spec.rerunToken`.
    pub(crate) rerun_token: Option<String>,
    /// The `kube-dss.dev/rerun` annotation.
    pub(crate) rerun_annotation: Option<String>,
    /// The `kube-dss.dev/abort` annotation.
    pub(crate) abort_annotation: Option<String>,
    /// The `kube-dss.dev/adopt-job` annotation: the run a user named to resolve a lost start.
    pub(crate) adopt: Option<String>,
    /// `spec.onSpecChange`.
    pub(crate) on_spec_change: OnSpecChange,
    /// `spec.suspend`.
    pub(crate) suspend: bool,
    /// `spec.activeDeadlineSeconds`.
    pub(crate) active_deadline: Option<Duration>,
    /// `spec.startDeadlineSeconds`.
    pub(crate) start_deadline: Option<Duration>,
    /// `spec.retry.limit` (0 when unset).
    pub(crate) retry_limit: i32,
    /// `spec.retry.backoffSeconds` (60 s when unset).
    pub(crate) retry_backoff: Duration,
    /// `spec.failOnWarnings`.
    pub(crate) fail_on_warnings: bool,
    /// `spec.deletionPolicy`.
    pub(crate) deletion_policy: DeletionPolicy,
    /// `metadata.generation`.
    pub(crate) generation: Option<i64>,
}

/// The run-control part of a status with the current and earlier external runs. Phase, attempts
/// and conditions are not kept here: they are derived when the status is written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunStatus<K: Kind> {
    /// The external run of the latest accepted start.
    pub(crate) current: Option<Current<K>>,
    /// The latest start request: the crash guard's record and the run request served.
    pub(crate) start_request: Option<StartRequest>,
    /// No start before this time (DSS refused the last one for a passing reason).
    pub(crate) not_before: Option<Time>,
    /// An abort the operator sent for the current run.
    pub(crate) abort_request: Option<AbortRequest>,
    /// The tokens and annotations the current run request was taken from.
    pub(crate) handled: Handled,
    /// Why the current run failed or was aborted.
    pub(crate) failure: Option<Failure>,
    /// Earlier runs, newest first, bounded.
    pub(crate) history: Vec<Past<K>>,
    /// The conditions as last written (their transition times are kept).
    pub(crate) conditions: Vec<Condition>,
}

impl<K: Kind> Default for RunStatus<K> {
    fn default() -> Self {
        Self {
            current: None,
            start_request: None,
            not_before: None,
            abort_request: None,
            handled: Handled::default(),
            failure: None,
            history: Vec::new(),
            conditions: Vec::new(),
        }
    }
}

/// The values of the spec and annotations the status last acted upon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Handled {
    /// `spec.rerunToken` of the current run request.
    pub(crate) rerun_token: Option<String>,
    /// The rerun annotation of the current run request.
    pub(crate) rerun_annotation: Option<String>,
    /// The last abort annotation acted upon.
    pub(crate) abort_annotation: Option<String>,
}

/// The external run of the latest accepted start, as last observed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Current<K: Kind> {
    /// Which run.
    pub(crate) handle: K::Handle,
    /// Its state as last observed (`None` until the first observation of an adopted run).
    pub(crate) state: Option<K::State>,
    /// When DSS started it.
    pub(crate) start_time: Option<Time>,
    /// When it reached a terminal state.
    pub(crate) completion_time: Option<Time>,
    /// Warnings DSS reported.
    pub(crate) warnings: Option<i64>,
    /// The kind's details of the last observation.
    pub(crate) details: K::Details,
}

impl<K: Kind> Current<K> {
    /// Its run-control state, when observed.
    pub(crate) fn run_state(&self) -> Option<RunState> {
        self.state.as_ref().map(K::run_state)
    }
}

/// An earlier run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Past<K: Kind> {
    /// Which run.
    pub(crate) handle: K::Handle,
    /// Its last known state.
    pub(crate) state: Option<K::State>,
    /// When DSS started it.
    pub(crate) start_time: Option<Time>,
    /// When it ended.
    pub(crate) completion_time: Option<Time>,
    /// The kind's details of its last observation.
    pub(crate) details: K::Details,
}

/// What this process alone knows about a recorded start request without a run (it dies with the
/// process; the status is the durable record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sending {
    /// This process recorded it and has not sent it: no run can exist for it.
    NotSent,
    /// It may have been sent, at the latest at `since` (the crash guard's grace runs from there).
    MaybeSent {
        /// The latest moment the request may have been sent.
        since: Timestamp,
    },
}

/// Whether this process is surely alone in acting (leader election).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lease {
    /// No leader election: other replicas may act.
    Unelected,
    /// The lease is held, and surely so for a while.
    Held,
    /// The lease may have passed to another replica.
    Unsure,
}

/// The in-process facts the core needs besides the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Process {
    /// What is known of a recorded start request without a run.
    pub(crate) sending: Sending,
    /// The leader lease.
    pub(crate) lease: Lease,
    /// Another build of this process sent a start of the same definition within the grace: its run
    /// may be listed before it is recorded, so a search must wait.
    pub(crate) alike_in_flight: bool,
    /// A watch of the kind follows the active run and wakes the object when it changes: the run
    /// needs no poll of its own, only a slow look in case a wake-up was lost.
    pub(crate) watched: bool,
}

/// What DSS reports for the current run, with the failure details the executor fetched for a run
/// it sees failed for the first time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observation<K: Kind> {
    /// The kind's state.
    pub(crate) state: K::State,
    /// When DSS started it.
    pub(crate) start_time: Option<Timestamp>,
    /// When it ended.
    pub(crate) end_time: Option<Timestamp>,
    /// Warnings so far.
    pub(crate) warnings: u64,
    /// For a failed run: where and why (log tail), when it could be read.
    pub(crate) failure: Option<FailureDetails>,
    /// The kind's details.
    pub(crate) details: K::Details,
}

/// Where a run failed and the end of its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FailureDetails {
    /// The failure reason when it is not the kind's plain failure (a cancelled trigger fire).
    pub(crate) reason: Option<crate::crd::FailureReason>,
    /// The failing activity (or step), when known.
    pub(crate) location: Option<String>,
    /// The line that says why (the last error line of the log).
    pub(crate) cause: Option<String>,
    /// The end of the log, bounded and redacted.
    pub(crate) log_tail: Option<String>,
}

/// Why a DSS call or the connection failed, classified by the executor from the error's own
/// category (never from its text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Trouble {
    /// The category (`DssUnreachable`, `SecretNotFound`, ...).
    pub(crate) category: Category,
    /// What went wrong, for the condition message.
    pub(crate) message: String,
    /// How long DSS asked to wait, if it did.
    pub(crate) retry_after: Option<Duration>,
}

/// How a start request ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StartOutcome<H> {
    /// DSS accepted it: the new run.
    Accepted(H),
    /// DSS refused it before creating anything, for a reason that passes: try again later.
    RetryLater {
        /// Rate limit or refused key.
        refusal: crate::crd::Refusal,
        /// How long to wait.
        after: Duration,
        /// DSS's words.
        message: String,
        /// The error category, for the condition.
        category: dss::Category,
    },
    /// DSS rejected the definition: only a new run request helps.
    Rejected {
        /// DSS's words.
        message: String,
    },
    /// The run may or may not exist (5xx, timeout, reset): the crash guard finds out.
    Unknown {
        /// What happened.
        message: String,
    },
}

/// What a search for the run of a lost start found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Search<H> {
    /// The matching runs (no other build's, no claimed one), with when DSS received each.
    Found(Vec<Candidate<H>>),
    /// The one match was claimed by another build of this process just now: search again.
    Raced,
}

/// A run that may be the one a lost start created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate<H> {
    /// Which run.
    pub(crate) handle: H,
    /// How it is named in messages.
    pub(crate) name: String,
    /// When DSS received its start.
    pub(crate) initiated: Option<Timestamp>,
}

/// What the executor learned, handed to the core for a decision.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fact<K: Kind> {
    /// Nothing new: decide from the status.
    Nothing,
    /// The connection cannot be used yet.
    Unavailable(Trouble),
    /// DSS reported the current run.
    Observed(Observation<K>),
    /// DSS said, in its own words, that the current run does not exist.
    Gone {
        /// DSS's words.
        message: String,
        /// When this process first heard DSS say so for this run, if before this look.
        first_seen: Option<Timestamp>,
    },
    /// A DSS call failed for a reason that may pass.
    Trouble(Trouble),
    /// The start gate is full: the recorded request waits for its turn.
    Queued,
    /// The object changed since it was read: look at the newer copy before sending.
    Superseded,
    /// A call failed for a reason already mended (a rotated key was re-read): look again soon.
    Retry {
        /// When.
        after: Duration,
    },
    /// A start request was sent at `sent_at` and answered.
    Started {
        /// The answer.
        outcome: StartOutcome<K::Handle>,
        /// When it was sent.
        sent_at: Timestamp,
    },
    /// A search for a lost start's run answered.
    Searched(Search<K::Handle>),
    /// An abort was sent.
    AbortSent(AbortReason),
}

/// When to look at the object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// After this long, exactly (deadlines, grace periods).
    After(Duration),
    /// After about this long (polls, spread by jitter).
    About(Duration),
    /// When the object changes.
    OnChange,
    /// After the object's error backoff (growing with repeated trouble), at least `at_least`.
    Backoff {
        /// What DSS asked for (`Retry-After`).
        at_least: Option<Duration>,
    },
}

/// The next thing the executor does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Record the status and wait.
    Wait(Wake),
    /// The status holds a new start request: record it, then send it (or queue it).
    Start,
    /// Send the start request this process recorded and has not sent (after a quorum read).
    Send,
    /// Abort the current run.
    Abort(AbortReason),
    /// Search DSS for the run of a lost start, with a listing taken at least the grace after
    /// `since`.
    Search {
        /// The latest moment the request may have been sent.
        since: Timestamp,
    },
}

/// Something that keeps a run from progressing, shown in its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blocker {
    /// Why.
    pub(crate) reason: WaitingReason,
    /// What is wrong and what to do.
    pub(crate) message: String,
    /// True when only a user can resolve it (`Stalled`), false when the operator keeps trying.
    pub(crate) stalled: bool,
}

/// An event to publish once the status is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// Warning or Normal.
    pub(crate) warning: bool,
    /// Why.
    pub(crate) reason: EventReason,
    /// What the operator was doing.
    pub(crate) action: EventAction,
    /// The note.
    pub(crate) note: String,
}

/// Something worth counting, for the executor's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A run was started.
    Started,
    /// A run was adopted.
    Adopted,
    /// A run ended, with its outcome and its age.
    Finished {
        /// How it ended.
        outcome: super::vocabulary::Ended,
        /// From the start request to the end.
        age: Duration,
    },
    /// A lost start matched several runs.
    OutcomeUnknown,
    /// A DSS call failed (its category).
    Trouble(Category),
}

/// The core's answer: the whole next status, what keeps it waiting, the events, what to count and
/// the next step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Decision<K: Kind> {
    /// The status to record.
    pub(crate) status: RunStatus<K>,
    /// What keeps the run waiting, if anything (shown in the conditions).
    pub(crate) blocker: Option<Blocker>,
    /// Events to publish once the status is recorded.
    pub(crate) events: Vec<Event>,
    /// What to count.
    pub(crate) signals: Vec<Signal>,
    /// What the executor does next.
    pub(crate) next: Next,
}

/// Tunables of the decisions.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// How long a start request may stay without a run before DSS is searched for it. Longer than
    /// the start call's timeout, so a live starter always records its run first.
    pub(crate) start_grace: Duration,
    /// Fastest poll of an active run.
    pub(crate) poll_min: Duration,
    /// Slowest poll of an active run.
    pub(crate) poll_max: Duration,
    /// Look at a watched run this often even when no change woke it (a wake-up lost with a
    /// restart of the watch, say).
    pub(crate) watched_poll: Duration,
    /// Poll of a run the operator asked to abort.
    pub(crate) abort_poll: Duration,
    /// Without leader election, how old a queued request may be and still be sent as recorded.
    pub(crate) unelected_send_window: Duration,
    /// How many earlier runs the history keeps.
    pub(crate) history_limit: usize,
    /// How long after DSS first said a run does not exist it is asked once more before the run
    /// fails: one answer is not enough to fail a build whose run may go on.
    pub(crate) gone_confirm: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            start_grace: Duration::from_secs(40),
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(8),
            watched_poll: Duration::from_secs(30),
            abort_poll: Duration::from_secs(2),
            unelected_send_window: Duration::from_secs(5),
            history_limit: 10,
            gone_confirm: Duration::from_secs(10),
        }
    }
}
