//! Test support for the run core's tables: a small kind whose states are the DSS job words, and
//! builders of controls, statuses and observations.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    plan::{self, Step},
    vocabulary::{RunState, Words},
    *,
};
use crate::crd::{DeletionPolicy, OnSpecChange, StartRequest};

/// A kind whose states are the DSS job words.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TestKind;

impl Kind for TestKind {
    type Handle = String;
    type State = String;
    type Details = ();
    // The job's words: the tables read them as a job's events and reasons.
    const WORDS: Words = crate::controller::job::JobKind::WORDS;
    fn run_state(state: &String) -> RunState {
        match state.as_str() {
            "NOT_STARTED" => RunState::Queued,
            "DONE" => RunState::Succeeded,
            "FAILED" => RunState::Failed,
            "ABORTED" => RunState::Aborted,
            _ => RunState::Running,
        }
    }
    fn accepted_state() -> String {
        "NOT_STARTED".into()
    }
    fn unknown_state() -> String {
        "UNKNOWN".into()
    }
    fn describe(handle: &String) -> String {
        format!("job {handle}")
    }
}

pub(crate) type S = RunStatus<TestKind>;

pub(crate) const WANT: &str = "fp-want";

pub(crate) fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

pub(crate) fn controls() -> Controls {
    Controls {
        want: WANT.into(),
        definition_hash: "def".into(),
        rerun_token: None,
        rerun_annotation: None,
        abort_annotation: None,
        adopt: None,
        on_spec_change: OnSpecChange::Wait,
        suspend: false,
        active_deadline: None,
        start_deadline: None,
        retry_limit: 0,
        retry_backoff: Duration::from_secs(60),
        fail_on_warnings: false,
        deletion_policy: DeletionPolicy::Abort,
        generation: Some(1),
    }
}

pub(crate) fn request(fp: &str, at: i64, attempt: i32) -> StartRequest {
    StartRequest {
        requested_at: Time(ts(at)),
        fingerprint: fp.into(),
        attempt: Some(attempt),
        definition_hash: Some("def".into()),
        refused: None,
    }
}

/// A status with a start request of `fp` at `at` and, when `job` is set, its run in `state`.
pub(crate) fn started(fp: &str, at: i64, job: Option<&str>, state: Option<&str>) -> S {
    S {
        start_request: Some(request(fp, at, 1)),
        current: job.map(|j| Current {
            handle: j.into(),
            state: state.map(Into::into),
            start_time: None,
            completion_time: None,
            warnings: None,
            details: (),
        }),
        ..S::default()
    }
}

pub(crate) fn process(sending: Sending) -> Process {
    Process {
        sending,
        lease: Lease::Unelected,
        alike_in_flight: false,
        watched: false,
    }
}

/// A start request this process knows nothing about, from before it began to act.
pub(crate) fn unknown_sending() -> Process {
    process(Sending::MaybeSent { since: ts(-1000) })
}

pub(crate) fn step(c: &Controls, s: &S, p: Process, now: i64) -> Step {
    plan::next_step(c, s, &p, ts(now), &Settings::default())
}

pub(crate) fn input<'a>(c: &'a Controls, settings: &'a Settings, now: i64) -> Input<'a> {
    Input {
        controls: c,
        process: unknown_sending(),
        now: ts(now),
        settings,
    }
}

pub(crate) fn observation(state: &str, warnings: u64) -> Observation<TestKind> {
    Observation {
        state: state.into(),
        start_time: Some(ts(1)),
        end_time: Some(ts(9)),
        warnings,
        failure: None,
        details: (),
    }
}

pub(crate) fn reasons(d: &Decision<TestKind>) -> Vec<(bool, &'static str)> {
    d.events.iter().map(|e| (e.warning, e.reason.as_str())).collect()
}

pub(crate) fn candidate(id: &str) -> Candidate<String> {
    Candidate {
        handle: id.into(),
        name: format!("job {id}"),
        initiated: Some(ts(1)),
    }
}
