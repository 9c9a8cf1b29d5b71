//! The planner: from the spec's controls, the status (with the latest observation already folded in),
//! what this process knows and `now`, the next step. Pure: no client, no clock.
//!
//! The desired state is "this run request has been run once" (design.md 3): one external run per
//! request, retries only as `spec.retry` allows, a new request handled per `onSpecChange`, deadlines
//! enforced on the active run, the abort annotation honoured once per value.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{
    model::{Controls, Current, Kind, Lease, Process, RunStatus, Sending, Settings},
    vocabulary::RunState,
};
use crate::crd::{AbortReason, OnSpecChange, Refusal, StartRequest};

/// The next thing to do for a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A start request is recorded without a run and its starter had time to record it: search DSS
    /// for the run (crash guard).
    ResolveStart {
        /// The latest moment the request may have been sent.
        since: Timestamp,
    },
    /// The start request this process recorded and has not sent still stands: send it (`fresh`), or
    /// record it again first because it is too old to be sent as it is.
    Send {
        /// Whether it may be sent as recorded.
        fresh: bool,
        /// The attempt it records.
        attempt: i32,
    },
    /// A start request is recent: its starter may still record the run. Look again later.
    WaitForStarter {
        /// When to look again.
        after: Duration,
    },
    /// Start a run for the wanted run request.
    Start {
        /// 1 for a new run request, more for retries.
        attempt: i32,
    },
    /// Abort the active run.
    Abort {
        /// Why.
        reason: AbortReason,
    },
    /// The run is active: observe it again later.
    Poll {
        /// When.
        after: Duration,
    },
    /// The last run failed; a retry is due later.
    RetryLater {
        /// When.
        after: Duration,
    },
    /// DSS refused the last start for a reason that passes: no start before `notBefore`.
    Deferred {
        /// When.
        after: Duration,
    },
    /// No run is active and `suspend` forbids starting one.
    Suspend,
    /// The desired state is reached: nothing to do until the spec changes.
    Done,
}

/// Time from `since` to `now`, zero when `now` is earlier.
pub(crate) fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    let ms = now.as_millisecond().saturating_sub(since.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `t` plus `d`, saturating.
pub(crate) fn later(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// Poll interval for a run of a given age: fast at first (short runs end soon), backing off to
/// `poll_max` (an eighth of the age, bounded).
pub(crate) fn poll_interval(age: Duration, settings: &Settings) -> Duration {
    (age / 8).clamp(settings.poll_min, settings.poll_max)
}

/// The recorded start request when it is in flight: no run recorded for it, and DSS did not refuse it.
pub(crate) fn in_flight<K: Kind>(s: &RunStatus<K>) -> Option<&StartRequest> {
    match (&s.start_request, &s.current) {
        (Some(r), None) if r.refused.is_none() => Some(r),
        _ => None,
    }
}

/// The current run when it has not ended (a failure recorded for it, such as DSS no longer knowing
/// it, settles it too).
pub(crate) fn active<K: Kind>(s: &RunStatus<K>) -> Option<&Current<K>> {
    s.current
        .as_ref()
        .filter(|c| s.failure.is_none() && !c.run_state().is_some_and(RunState::is_terminal))
}

/// Whether the recorded start request is the wanted run request.
pub(crate) fn serves_want<K: Kind>(c: &Controls, s: &RunStatus<K>) -> bool {
    s.start_request.as_ref().is_some_and(|r| r.fingerprint == c.want)
}

/// The attempt of the recorded start request (1 when it predates attempts).
pub(crate) fn attempt<K: Kind>(s: &RunStatus<K>) -> Option<i32> {
    s.start_request.as_ref().map(|r| r.attempt.unwrap_or(1))
}

/// Whether the wanted request's run failed and `spec.retry` allows another run.
pub(crate) fn retry_due<K: Kind>(c: &Controls, s: &RunStatus<K>) -> bool {
    serves_want(c, s)
        && s.current.as_ref().and_then(Current::run_state) == Some(RunState::Failed)
        && attempt(s).is_some_and(|a| a <= c.retry_limit)
}

/// Whether a queued start request recorded at `request.requested_at` may be sent as it is: while the
/// lease is surely held, or without leader election only within a short window (the start call then
/// ends before a resolver elsewhere, which waits the grace from the recorded time, may search).
pub(crate) fn fresh(request: &StartRequest, lease: Lease, now: Timestamp, settings: &Settings) -> bool {
    match lease {
        Lease::Held => true,
        Lease::Unsure => false,
        Lease::Unelected => elapsed(request.requested_at.0, now) <= settings.unelected_send_window,
    }
}

/// Decides the next step.
pub(crate) fn next_step<K: Kind>(
    c: &Controls,
    s: &RunStatus<K>,
    p: &Process,
    now: Timestamp,
    settings: &Settings,
) -> Step {
    if let Some(request) = in_flight(s) {
        if withdraws(c, s, p) {
            // Nothing was sent for it: plan as if it were gone (the caller drops it).
            let rest = RunStatus {
                start_request: None,
                ..s.clone()
            };
            return next_step(c, &rest, p, now, settings);
        }
        return crash_guard(request, p, now, settings);
    }
    if let Some(current) = active(s) {
        return while_active(c, s, current, p.watched, now, settings);
    }
    // DSS asked us to wait (rate limit) or refused the key: no start before `notBefore`.
    if let Some(not_before) = &s.not_before
        && not_before.0 > now
    {
        return Step::Deferred {
            after: elapsed(now, not_before.0),
        };
    }
    let refused = s.start_request.as_ref().and_then(|r| r.refused);
    if !serves_want(c, s) || matches!(refused, Some(Refusal::RateLimited | Refusal::Unauthorized)) {
        // A start DSS refused before creating a run is tried again as the same attempt, so refusals
        // never grant extra retries.
        let attempt = if serves_want(c, s) {
            attempt(s).unwrap_or(1)
        } else {
            1
        };
        return if c.suspend {
            Step::Suspend
        } else {
            Step::Start { attempt }
        };
    }
    // The wanted request was rejected, or its run ended: retry a FAILED one if allowed.
    if retry_due(c, s) {
        let ended = s
            .current
            .as_ref()
            .and_then(|r| r.completion_time.as_ref())
            .map_or(now, |t| t.0);
        let waited = elapsed(ended, now);
        if waited < c.retry_backoff {
            return Step::RetryLater {
                after: c.retry_backoff - waited,
            };
        }
        let attempt = attempt(s).unwrap_or(1) + 1;
        return if c.suspend {
            Step::Suspend
        } else {
            Step::Start { attempt }
        };
    }
    Step::Done
}

/// Whether the start request this process recorded and never sent no longer stands (the run request
/// changed, or the run was suspended): it is dropped, as nothing can exist for it.
pub(crate) fn withdraws<K: Kind>(c: &Controls, s: &RunStatus<K>, p: &Process) -> bool {
    p.sending == Sending::NotSent && in_flight(s).is_some_and(|r| r.fingerprint != c.want || c.suspend)
}

/// A start request without a run: send it if this process queued it, else wait for its starter,
/// then search.
fn crash_guard(request: &StartRequest, p: &Process, now: Timestamp, settings: &Settings) -> Step {
    let since = match p.sending {
        Sending::NotSent => {
            return Step::Send {
                fresh: fresh(request, p.lease, now, settings),
                attempt: request.attempt.unwrap_or(1),
            };
        }
        Sending::MaybeSent { since } => since.max(request.requested_at.0),
    };
    let waited = elapsed(since, now);
    if waited < settings.start_grace {
        return Step::WaitForStarter {
            after: settings.start_grace - waited,
        };
    }
    if p.alike_in_flight {
        // Another build's start of the same definition may be listed before it is recorded.
        return Step::WaitForStarter {
            after: Duration::from_secs(2),
        };
    }
    Step::ResolveStart { since }
}

/// An active run: deadlines, the abort annotation, a new run request under `onSpecChange: Abort`.
/// A watched run is looked at when its watch wakes it (and slowly in case a wake-up was lost); any
/// other is polled on its own, faster while it is young.
fn while_active<K: Kind>(
    c: &Controls,
    s: &RunStatus<K>,
    current: &Current<K>,
    watched: bool,
    now: Timestamp,
    settings: &Settings,
) -> Step {
    if s.abort_request.is_some() {
        return Step::Poll {
            after: settings.abort_poll,
        };
    }
    if c.abort_annotation.is_some() && c.abort_annotation != s.handled.abort_annotation {
        return Step::Abort {
            reason: AbortReason::Requested,
        };
    }
    let started = s.start_request.as_ref().map(|r| r.requested_at.0);
    let age = started.map(|t| elapsed(t, now)).unwrap_or_default();
    let mut next = if watched {
        settings.watched_poll
    } else {
        poll_interval(age, settings)
    };
    if started.is_some() {
        let queued = matches!(current.run_state(), None | Some(RunState::Queued));
        let deadlines = [c.active_deadline, c.start_deadline.filter(|_| queued)];
        for limit in deadlines.into_iter().flatten() {
            if age >= limit {
                return Step::Abort {
                    reason: AbortReason::DeadlineExceeded,
                };
            }
            next = next.min(limit - age);
        }
    }
    if !serves_want(c, s) && c.on_spec_change == OnSpecChange::Abort {
        return Step::Abort {
            reason: AbortReason::SpecChanged,
        };
    }
    Step::Poll {
        after: next.max(Duration::from_millis(100)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::super::{
        plan::{self, Step},
        testing::*,
        *,
    };
    use crate::crd::{AbortReason, AbortRequest, FailureReason, OnSpecChange, Refusal};

    #[test]
    fn the_planner_table() {
        let s = Settings::default();
        let base = controls();
        let suspended = Controls {
            suspend: true,
            ..controls()
        };
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
        let retrying = Controls {
            retry_limit: 2,
            ..controls()
        };
        let abort_asked = Controls {
            abort_annotation: Some("now".into()),
            ..controls()
        };
        let mut failed_at_0 = started(WANT, 0, Some("j1"), Some("FAILED"));
        if let Some(c) = failed_at_0.current.as_mut() {
            c.completion_time = Some(Time(ts(10)));
        }
        let mut aborting = started(WANT, 0, Some("j1"), Some("RUNNING"));
        aborting.abort_request = Some(AbortRequest {
            reason: AbortReason::DeadlineExceeded,
            requested_at: Time(ts(5)),
        });
        let mut rejected = started(WANT, 0, None, None);
        if let Some(r) = rejected.start_request.as_mut() {
            r.refused = Some(Refusal::Rejected);
        }
        let mut rejected_old = rejected.clone();
        if let Some(r) = rejected_old.start_request.as_mut() {
            r.fingerprint = "old".into();
        }
        let mut deferred = started(WANT, 0, None, None);
        if let Some(r) = deferred.start_request.as_mut() {
            r.refused = Some(Refusal::RateLimited);
        }
        deferred.not_before = Some(Time(ts(30)));
        let mut refused_retry = deferred.clone();
        if let Some(r) = refused_retry.start_request.as_mut() {
            r.attempt = Some(2);
        }
        let mut lost = started(WANT, 0, Some("j1"), Some("UNKNOWN"));
        lost.failure = Some(crate::crd::Failure {
            reason: FailureReason::JobNotFound,
            message: None,
            activity: None,
            log_tail: None,
        });
        let mut third_attempt_failed = failed_at_0.clone();
        if let Some(r) = third_attempt_failed.start_request.as_mut() {
            r.attempt = Some(3);
        }
        let mut abort_handled = started(WANT, 0, Some("j1"), Some("RUNNING"));
        abort_handled.handled.abort_annotation = Some("now".into());

        let cases: Vec<(&str, &Controls, S, i64, Step)> = vec![
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
                "recent start request without run waits for its starter",
                &base,
                started(WANT, 0, None, None),
                10,
                Step::WaitForStarter {
                    after: s.start_grace - Duration::from_secs(10),
                },
            ),
            (
                "old start request without run searches DSS",
                &base,
                started(WANT, 0, None, None),
                41,
                Step::ResolveStart { since: ts(0) },
            ),
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
                failed_at_0.clone(),
                500,
                Step::Done,
            ),
            (
                "failed run retries after the backoff",
                &retrying,
                failed_at_0.clone(),
                70,
                Step::Start { attempt: 2 },
            ),
            (
                "failed run waits for the backoff",
                &retrying,
                failed_at_0.clone(),
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
                "spec change under Wait lets the run go on",
                &base,
                started("old", 0, Some("j1"), Some("RUNNING")),
                2,
                Step::Poll { after: s.poll_min },
            ),
            (
                "spec change under Abort aborts the run",
                &abort_on_change,
                started("old", 0, Some("j1"), Some("RUNNING")),
                2,
                Step::Abort {
                    reason: AbortReason::SpecChanged,
                },
            ),
            (
                "suspend does not stop an active run",
                &suspended,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                2,
                Step::Poll { after: s.poll_min },
            ),
            (
                "active deadline aborts",
                &deadline,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                100,
                Step::Abort {
                    reason: AbortReason::DeadlineExceeded,
                },
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
                Step::Abort {
                    reason: AbortReason::DeadlineExceeded,
                },
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
                "abort in progress is polled",
                &base,
                aborting,
                10,
                Step::Poll { after: s.abort_poll },
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
                deferred.clone(),
                10,
                Step::Deferred {
                    after: Duration::from_secs(20),
                },
            ),
            (
                "a refused start is retried after notBefore",
                &base,
                deferred,
                31,
                Step::Start { attempt: 1 },
            ),
            (
                "a run DSS no longer knows is settled",
                &base,
                lost,
                50,
                Step::Done,
            ),
            (
                "a refused retry keeps its attempt number",
                &retrying,
                refused_retry,
                31,
                Step::Start { attempt: 2 },
            ),
            (
                "the abort annotation aborts the active run",
                &abort_asked,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                5,
                Step::Abort {
                    reason: AbortReason::Requested,
                },
            ),
            (
                "an abort annotation already handled does nothing more",
                &abort_asked,
                abort_handled,
                5,
                Step::Poll { after: s.poll_min },
            ),
        ];
        for (name, c, status, now, expected) in cases {
            assert_eq!(step(c, &status, unknown_sending(), now), expected, "{name}");
        }
    }

    #[test]
    fn start_requests_this_process_has_not_sent() {
        let s = Settings::default();
        let base = controls();
        let suspended = Controls {
            suspend: true,
            ..controls()
        };
        let recorded = started(WANT, 0, None, None);
        let mut retry = started(WANT, 0, None, None);
        if let Some(r) = retry.start_request.as_mut() {
            r.attempt = Some(2);
        }
        let held = Process {
            lease: Lease::Held,
            ..process(Sending::NotSent)
        };
        let unsure = Process {
            lease: Lease::Unsure,
            ..process(Sending::NotSent)
        };
        let alike = Process {
            alike_in_flight: true,
            ..process(Sending::MaybeSent { since: ts(0) })
        };
        let cases: Vec<(&str, &Controls, S, Process, i64, Step)> = vec![
            (
                "a queued start is sent as recorded while the lease is held, however long it waited",
                &base,
                recorded.clone(),
                held,
                300,
                Step::Send {
                    fresh: true,
                    attempt: 1,
                },
            ),
            (
                "without leader election a queued start is sent as recorded only while recent",
                &base,
                recorded.clone(),
                process(Sending::NotSent),
                5,
                Step::Send {
                    fresh: true,
                    attempt: 1,
                },
            ),
            (
                "without leader election an older queued start is recorded again first",
                &base,
                recorded.clone(),
                process(Sending::NotSent),
                6,
                Step::Send {
                    fresh: false,
                    attempt: 1,
                },
            ),
            (
                "when the lease may have passed a queued start is recorded again first",
                &base,
                recorded.clone(),
                unsure,
                1,
                Step::Send {
                    fresh: false,
                    attempt: 1,
                },
            ),
            (
                "a queued retry keeps its attempt",
                &base,
                retry,
                held,
                5,
                Step::Send {
                    fresh: true,
                    attempt: 2,
                },
            ),
            (
                "a queued start of an older run request is withdrawn for the new one",
                &base,
                started("old", 0, None, None),
                process(Sending::NotSent),
                5,
                Step::Start { attempt: 1 },
            ),
            (
                "a queued start of a suspended build is withdrawn",
                &suspended,
                recorded.clone(),
                process(Sending::NotSent),
                5,
                Step::Suspend,
            ),
            (
                "the grace runs from when the request was sent",
                &base,
                recorded.clone(),
                process(Sending::MaybeSent { since: ts(100) }),
                110,
                Step::WaitForStarter {
                    after: s.start_grace - Duration::from_secs(10),
                },
            ),
            (
                "and from when this process began to act",
                &base,
                recorded.clone(),
                process(Sending::MaybeSent { since: ts(30) }),
                41,
                Step::WaitForStarter {
                    after: s.start_grace - Duration::from_secs(11),
                },
            ),
            (
                "a request sent long ago is searched for",
                &base,
                recorded.clone(),
                process(Sending::MaybeSent { since: ts(100) }),
                140,
                Step::ResolveStart { since: ts(100) },
            ),
            (
                "a search waits while a start of the same definition is in flight here",
                &base,
                recorded,
                alike,
                140,
                Step::WaitForStarter {
                    after: Duration::from_secs(2),
                },
            ),
            (
                "a recorded run makes the sending state irrelevant",
                &base,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                process(Sending::NotSent),
                2,
                Step::Poll { after: s.poll_min },
            ),
        ];
        for (name, c, status, p, now, expected) in cases {
            assert_eq!(step(c, &status, p, now), expected, "{name}");
        }
        let not_sent = process(Sending::NotSent);
        assert!(
            plan::withdraws(&base, &started("old", 0, None, None), &not_sent),
            "a superseded queued start is dropped"
        );
        assert!(
            plan::withdraws(&suspended, &started(WANT, 0, None, None), &not_sent),
            "so is a suspended one"
        );
        assert!(
            !plan::withdraws(&base, &started(WANT, 0, None, None), &not_sent),
            "a standing one is kept"
        );
        let maybe_sent = process(Sending::MaybeSent { since: ts(0) });
        assert!(
            !plan::withdraws(&base, &started("old", 0, None, None), &maybe_sent),
            "a maybe-sent one is searched for"
        );
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
}
