//! The planner's tables, by topic: starting, polling, deadlines and aborts, ended runs and retries.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::super::{
    plan::{self, Step},
    testing::*,
    *,
};
use crate::crd::{AbortReason, AbortRequest, FailureReason, OnSpecChange, Refusal, StartRequest};

/// (name, controls, status, now, the expected step), planned by a process that knows nothing of the
/// start request.
type Case<'a> = (&'a str, &'a Controls, S, i64, Step);

fn check(cases: Vec<Case>) {
    for (name, c, status, now, expected) in cases {
        assert_eq!(step(c, &status, unknown_sending(), now), expected, "{name}");
    }
}

/// `status` with its start request changed by `f`.
fn with_request(mut status: S, f: impl FnOnce(&mut StartRequest)) -> S {
    if let Some(r) = status.start_request.as_mut() {
        f(r);
    }
    status
}

fn suspended() -> Controls {
    Controls {
        suspend: true,
        ..controls()
    }
}

fn retrying() -> Controls {
    Controls {
        retry_limit: 2,
        ..controls()
    }
}

/// The first run failed, ending at 10.
fn failed_at_0() -> S {
    let mut s = started(WANT, 0, Some("j1"), Some("FAILED"));
    if let Some(c) = s.current.as_mut() {
        c.completion_time = Some(Time(ts(10)));
    }
    s
}

/// A start DSS refused with 429, not to be sent again before 30.
fn deferred() -> S {
    let mut s = with_request(started(WANT, 0, None, None), |r| {
        r.refused = Some(Refusal::RateLimited);
    });
    s.not_before = Some(Time(ts(30)));
    s
}

#[test]
fn starting_a_run() {
    let (base, suspended) = (controls(), suspended());
    let rejected = with_request(started(WANT, 0, None, None), |r| {
        r.refused = Some(Refusal::Rejected);
    });
    let rejected_old = with_request(rejected.clone(), |r| r.fingerprint = "old".into());
    let refused_retry = with_request(deferred(), |r| r.attempt = Some(2));
    let retrying = retrying();
    check(vec![
        (
            "new build starts a run",
            &base,
            S::default(),
            0,
            Step::Start { attempt: 1 },
        ),
        (
            "new build while suspended starts nothing",
            &suspended,
            S::default(),
            0,
            Step::Suspend,
        ),
        (
            "new rerun token after a done run starts one run",
            &base,
            started("old", 0, Some("j1"), Some("DONE")),
            50,
            Step::Start { attempt: 1 },
        ),
        (
            "new request while suspended starts nothing",
            &suspended,
            started("old", 0, Some("j1"), Some("DONE")),
            50,
            Step::Suspend,
        ),
        (
            "a rejected definition is not started again",
            &base,
            rejected,
            50,
            Step::Done,
        ),
        (
            "a rejected definition with a new token starts",
            &base,
            rejected_old,
            50,
            Step::Start { attempt: 1 },
        ),
        (
            "a refused start waits for notBefore",
            &base,
            deferred(),
            10,
            Step::Deferred {
                after: Duration::from_secs(20),
            },
        ),
        (
            "a refused start is retried after notBefore",
            &base,
            deferred(),
            31,
            Step::Start { attempt: 1 },
        ),
        (
            "a refused retry keeps its attempt number",
            &retrying,
            refused_retry,
            31,
            Step::Start { attempt: 2 },
        ),
    ]);
}

#[test]
fn polling_an_active_run() {
    let s = Settings::default();
    let (base, suspended) = (controls(), suspended());
    let abort_asked = Controls {
        abort_annotation: Some("now".into()),
        ..controls()
    };
    let mut aborting = started(WANT, 0, Some("j1"), Some("RUNNING"));
    aborting.abort_request = Some(AbortRequest {
        reason: AbortReason::DeadlineExceeded,
        requested_at: Time(ts(5)),
    });
    let mut abort_handled = started(WANT, 0, Some("j1"), Some("RUNNING"));
    abort_handled.handled.abort_annotation = Some("now".into());
    check(vec![
        (
            "young running run is polled fast",
            &base,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            2,
            Step::Poll { after: s.poll_min },
        ),
        (
            "old running run is polled slowly",
            &base,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            3600,
            Step::Poll { after: s.poll_max },
        ),
        (
            "run with an unknown state counts as active",
            &base,
            started(WANT, 0, Some("j1"), Some("COMPUTING")),
            2,
            Step::Poll { after: s.poll_min },
        ),
        (
            "spec change under Wait lets the run go on",
            &base,
            started("old", 0, Some("j1"), Some("RUNNING")),
            2,
            Step::Poll { after: s.poll_min },
        ),
        (
            "suspend does not stop an active run",
            &suspended,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            2,
            Step::Poll { after: s.poll_min },
        ),
        (
            "abort in progress is polled",
            &base,
            aborting,
            10,
            Step::Poll { after: s.abort_poll },
        ),
        (
            "an abort annotation already handled does nothing more",
            &abort_asked,
            abort_handled,
            5,
            Step::Poll { after: s.poll_min },
        ),
    ]);
}

#[test]
fn deadlines_and_aborts() {
    let abort_on_change = Controls {
        on_spec_change: OnSpecChange::Abort,
        ..controls()
    };
    let deadline = Controls {
        active_deadline: Some(Duration::from_secs(100)),
        ..controls()
    };
    let start_deadline = Controls {
        start_deadline: Some(Duration::from_secs(30)),
        ..controls()
    };
    let abort_asked = Controls {
        abort_annotation: Some("now".into()),
        ..controls()
    };
    let abort = |reason| Step::Abort { reason };
    check(vec![
        (
            "spec change under Abort aborts the run",
            &abort_on_change,
            started("old", 0, Some("j1"), Some("RUNNING")),
            2,
            abort(AbortReason::SpecChanged),
        ),
        (
            "active deadline aborts",
            &deadline,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            100,
            abort(AbortReason::DeadlineExceeded),
        ),
        (
            "poll wakes up at the active deadline",
            &deadline,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            99,
            Step::Poll {
                after: Duration::from_secs(1),
            },
        ),
        (
            "start deadline aborts a queued run",
            &start_deadline,
            started(WANT, 0, Some("j1"), Some("NOT_STARTED")),
            31,
            abort(AbortReason::DeadlineExceeded),
        ),
        (
            "start deadline spares a running run",
            &start_deadline,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            31,
            Step::Poll {
                after: Duration::from_millis(3875),
            },
        ),
        (
            "the abort annotation aborts the active run",
            &abort_asked,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            5,
            abort(AbortReason::Requested),
        ),
    ]);
}

#[test]
fn ended_runs_and_retries() {
    let (base, retrying) = (controls(), retrying());
    let third_attempt_failed = with_request(failed_at_0(), |r| r.attempt = Some(3));
    let mut lost = started(WANT, 0, Some("j1"), Some("UNKNOWN"));
    lost.failure = Some(crate::crd::Failure {
        reason: FailureReason::JobNotFound,
        message: None,
        activity: None,
        log_tail: None,
    });
    check(vec![
        (
            "done run of the wanted request is done",
            &base,
            started(WANT, 0, Some("j1"), Some("DONE")),
            50,
            Step::Done,
        ),
        (
            "aborted run of the wanted request is done",
            &base,
            started(WANT, 0, Some("j1"), Some("ABORTED")),
            50,
            Step::Done,
        ),
        (
            "failed run without retries is done",
            &base,
            failed_at_0(),
            500,
            Step::Done,
        ),
        (
            "failed run retries after the backoff",
            &retrying,
            failed_at_0(),
            70,
            Step::Start { attempt: 2 },
        ),
        (
            "failed run waits for the backoff",
            &retrying,
            failed_at_0(),
            40,
            Step::RetryLater {
                after: Duration::from_secs(30),
            },
        ),
        (
            "retries stop at the limit",
            &retrying,
            third_attempt_failed,
            500,
            Step::Done,
        ),
        (
            "a run DSS no longer knows is settled",
            &base,
            lost,
            50,
            Step::Done,
        ),
    ]);
}

#[test]
fn poll_interval_grows_with_age_within_bounds() {
    let s = Settings::default();
    assert_eq!(plan::poll_interval(Duration::ZERO, &s), s.poll_min);
    assert_eq!(
        plan::poll_interval(Duration::from_secs(40), &s),
        Duration::from_secs(5)
    );
    assert_eq!(plan::poll_interval(Duration::from_secs(4000), &s), s.poll_max);
}
