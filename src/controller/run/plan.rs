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
mod tests;

#[cfg(test)]
mod in_flight_tests;
