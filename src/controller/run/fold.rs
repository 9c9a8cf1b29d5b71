//! Folding what DSS reports about the current run into the status: its state, times and warnings,
//! and, when it ends, the outcome (warnings policy, deadlines and abort reasons included) with its
//! events.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    Draft,
    model::{Controls, Kind, Observation, Signal},
    plan::elapsed,
    vocabulary::{Ended, EventReason, RunState},
};
use crate::{
    crd::{AbortReason, Failure, FailureReason},
    dss::failure_message,
    text::{NOTE_MAX, message_and_log_end, truncate},
};

/// Records an observation of the current run; on a terminal state, records the outcome.
pub(crate) fn observed<K: Kind>(c: &Controls, d: &mut Draft<K>, obs: Observation<K>, now: Timestamp) {
    let Some(current) = d.status.current.as_mut() else {
        return;
    };
    let was_terminal = current.run_state().is_some_and(RunState::is_terminal);
    let state = K::run_state(&obs.state);
    current.state = Some(obs.state);
    if let Some(t) = obs.start_time {
        current.start_time = Some(Time(whole_seconds(t)));
    }
    current.warnings = Some(i64::try_from(obs.warnings).unwrap_or(i64::MAX));
    current.details = obs.details;
    if !state.is_terminal() || was_terminal {
        return;
    }
    current.completion_time = Some(Time(whole_seconds(obs.end_time.unwrap_or(now))));
    let name = K::describe(&current.handle);
    let age = d
        .status
        .start_request
        .as_ref()
        .map(|r| elapsed(r.requested_at.0, now))
        .unwrap_or_default();
    let words = K::WORDS;
    let outcome = match state {
        RunState::Succeeded if c.fail_on_warnings && obs.warnings > 0 => {
            let msg = format!(
                "{name} finished {} with {} warning(s) and spec.failOnWarnings is true",
                words.success, obs.warnings
            );
            d.fail(FailureReason::FailedWithWarnings, &msg);
            d.warn(words.failed_event, K::WORDS.poll, msg);
            Ended::Failed
        }
        RunState::Succeeded => {
            d.status.failure = None;
            let msg = format!("{name} finished {} ({} warning(s))", words.success, obs.warnings);
            d.normal(words.succeeded, K::WORDS.poll, msg);
            Ended::Done
        }
        RunState::Failed => {
            let details = obs.failure.unwrap_or_default();
            let (failure, note) = failed(details.reason.unwrap_or(words.failed), &name, details);
            d.status.failure = Some(failure);
            d.warn(words.failed_event, K::WORDS.poll, note);
            Ended::Failed
        }
        _ => {
            aborted(c, d, &name);
            Ended::Aborted
        }
    };
    d.signal(Signal::Finished { outcome, age });
}

/// DSS said the current run does not exist: it cannot be followed any more; say so instead of
/// polling forever.
pub(crate) fn gone<K: Kind>(d: &mut Draft<K>, message: &str, now: Timestamp) {
    let Some(current) = d.status.current.as_mut() else {
        return;
    };
    current.state = Some(K::unknown_state());
    current.completion_time = Some(Time(whole_seconds(now)));
    let name = K::describe(&current.handle);
    d.fail(
        K::WORDS.not_found,
        &format!("DSS no longer knows {name}: {message}"),
    );
    d.warn(
        K::WORDS.failed_event,
        K::WORDS.poll,
        format!("DSS no longer knows {name}"),
    );
}

/// The failure record of a failed run and the event note: the message, then the end of the log
/// tail (an event note is bounded, and the end of a log is where its final error is).
fn failed(reason: FailureReason, name: &str, details: super::model::FailureDetails) -> (Failure, String) {
    let cause = details
        .cause
        .clone()
        .or_else(|| details.log_tail.as_deref().and_then(failure_message))
        .unwrap_or_default();
    let message = match &details.location {
        Some(a) => format!("{name} failed in activity {a}: {cause}"),
        None => format!("{name} failed: {cause}"),
    };
    let note = match &details.log_tail {
        Some(t) => message_and_log_end(&message, t, NOTE_MAX),
        None => truncate(&message, NOTE_MAX),
    };
    let failure = Failure {
        reason,
        message: Some(message),
        activity: details.location,
        log_tail: details.log_tail,
    };
    (failure, note)
}

/// An aborted run: why it was aborted decides the outcome.
fn aborted<K: Kind>(c: &Controls, d: &mut Draft<K>, name: &str) {
    let reason = d.status.abort_request.as_ref().map(|a| a.reason);
    let superseded = !super::plan::serves_want(c, &d.status);
    match reason {
        Some(AbortReason::DeadlineExceeded) => {
            let msg = format!("{name} was aborted because a deadline passed");
            d.fail(FailureReason::DeadlineExceeded, &msg);
            d.warn(EventReason::DeadlineExceeded, K::WORDS.abort, msg);
        }
        // Superseded by a new run request, which starts next.
        Some(AbortReason::SpecChanged) if superseded => d.status.failure = None,
        Some(AbortReason::SpecChanged) => {
            // The spec change that asked for the abort was reverted: the wanted run was aborted.
            let msg = format!("{name} was aborted for a spec change that was then reverted");
            d.fail(K::WORDS.aborted, &msg);
        }
        Some(AbortReason::Requested) => {
            let msg = format!("{name} was aborted as the kube-dss.dev/abort annotation asked");
            d.fail(FailureReason::AbortRequested, &msg);
            d.normal(K::WORDS.aborted_event, K::WORDS.abort, msg);
        }
        Some(AbortReason::Deleted) | None => {
            let msg = format!("{name} was aborted outside the operator");
            d.fail(K::WORDS.aborted, &msg);
            d.warn(K::WORDS.aborted_event, K::WORDS.poll, msg);
        }
    }
}

/// Drops the fraction of a second: Kubernetes times have whole seconds, and a finer time would never
/// compare equal to what is read back (every poll would rewrite the status).
pub(crate) fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::super::{contract, testing::*, *};
    use crate::crd::{AbortReason, AbortRequest, FailureReason, Phase};

    /// (name, controls, status, observation, phase, failure reason, events)
    type Case<'a> = (
        &'a str,
        &'a Controls,
        S,
        Observation<TestKind>,
        Phase,
        Option<FailureReason>,
        Vec<(bool, &'static str)>,
    );

    fn check(cases: Vec<Case>) {
        let settings = Settings::default();
        for (name, c, status, obs, phase, failure, events) in cases {
            let d = decide(&input(c, &settings, 20), status, Fact::Observed(obs));
            assert_eq!(contract::phase(c, &d.status), phase, "{name}: phase");
            assert_eq!(
                d.status.failure.as_ref().map(|f| f.reason),
                failure,
                "{name}: failure"
            );
            assert_eq!(reasons(&d), events, "{name}: events");
        }
    }

    /// A running run whose abort was asked for `reason` (the status of the wanted request `fp`).
    fn aborting(fp: &str, reason: AbortReason) -> S {
        let mut s = started(fp, 0, Some("j1"), Some("RUNNING"));
        s.abort_request = Some(AbortRequest {
            reason,
            requested_at: Time(ts(5)),
        });
        s
    }

    #[test]
    fn observing_a_run_and_its_outcome() {
        let base = controls();
        let strict = Controls {
            fail_on_warnings: true,
            ..controls()
        };
        let running = || started(WANT, 0, Some("j1"), Some("RUNNING"));
        check(vec![
            (
                "a running run stays running",
                &base,
                running(),
                observation("RUNNING", 0),
                Phase::Running,
                None,
                vec![],
            ),
            (
                "a queued run is queued",
                &base,
                running(),
                observation("NOT_STARTED", 0),
                Phase::Queued,
                None,
                vec![],
            ),
            (
                "DONE succeeds",
                &base,
                running(),
                observation("DONE", 1),
                Phase::Succeeded,
                None,
                vec![(false, "JobSucceeded")],
            ),
            (
                "DONE with warnings fails under failOnWarnings",
                &strict,
                running(),
                observation("DONE", 2),
                Phase::Failed,
                Some(FailureReason::FailedWithWarnings),
                vec![(true, "JobFailed")],
            ),
            (
                "DONE without warnings succeeds under failOnWarnings",
                &strict,
                running(),
                observation("DONE", 0),
                Phase::Succeeded,
                None,
                vec![(false, "JobSucceeded")],
            ),
            (
                "FAILED fails",
                &base,
                running(),
                observation("FAILED", 0),
                Phase::Failed,
                Some(FailureReason::JobFailed),
                vec![(true, "JobFailed")],
            ),
            (
                "a terminal state seen again changes nothing",
                &base,
                started(WANT, 0, Some("j1"), Some("DONE")),
                observation("DONE", 0),
                Phase::Succeeded,
                None,
                vec![],
            ),
        ]);
    }

    #[test]
    fn an_aborted_run_ends_as_its_abort_reason_says() {
        let base = controls();
        let reverted = aborting(WANT, AbortReason::SpecChanged);
        check(vec![
            (
                "ABORTED outside the operator",
                &base,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                observation("ABORTED", 0),
                Phase::Aborted,
                Some(FailureReason::JobAborted),
                vec![(true, "JobAborted")],
            ),
            (
                "ABORTED after a deadline fails with DeadlineExceeded",
                &base,
                aborting(WANT, AbortReason::DeadlineExceeded),
                observation("ABORTED", 0),
                Phase::Failed,
                Some(FailureReason::DeadlineExceeded),
                vec![(true, "DeadlineExceeded")],
            ),
            (
                "ABORTED for a spec change is superseded: the new request starts",
                &base,
                aborting("old", AbortReason::SpecChanged),
                observation("ABORTED", 0),
                Phase::Starting,
                None,
                vec![],
            ),
            (
                "ABORTED for a spec change that was reverted is aborted",
                &base,
                reverted,
                observation("ABORTED", 0),
                Phase::Aborted,
                Some(FailureReason::JobAborted),
                vec![],
            ),
            (
                "ABORTED as the annotation asked",
                &base,
                aborting(WANT, AbortReason::Requested),
                observation("ABORTED", 0),
                Phase::Aborted,
                Some(FailureReason::AbortRequested),
                vec![(false, "JobAborted")],
            ),
        ]);
    }

    #[test]
    fn the_note_of_a_long_log_keeps_its_end_and_the_message_names_the_last_error() {
        let settings = Settings::default();
        let long = "x".repeat(3000);
        let tail = format!("{long}\n[t] [main] [ERROR] [dku] - ValueError: no column\n{long}\nclosing");
        let mut obs = observation("FAILED", 0);
        obs.failure = Some(FailureDetails {
            reason: None,
            location: None,
            cause: None,
            log_tail: Some(tail.clone()),
        });
        let d = decide(
            &input(&controls(), &settings, 20),
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            Fact::Observed(obs),
        );
        let f = d.status.failure.unwrap();
        assert_eq!(f.message.as_deref(), Some("job j1 failed: ValueError: no column"));
        assert_eq!(f.log_tail.as_deref(), Some(tail.as_str()));
        let note = &d.events[0].note;
        assert!(note.len() <= crate::text::NOTE_MAX, "{}", note.len());
        assert!(
            note.starts_with("job j1 failed: ValueError: no column\n…"),
            "{note}"
        );
        assert!(
            note.ends_with("xxx\nclosing"),
            "the note keeps the end of the log"
        );
    }

    #[test]
    fn a_failed_run_explains_itself() {
        let settings = Settings::default();
        let mut obs = observation("FAILED", 0);
        obs.failure = Some(FailureDetails {
            reason: None,
            location: Some("compute_x".into()),
            cause: Some("ERROR: boom".into()),
            log_tail: Some("reading\nERROR: boom\ncleanup".into()),
        });
        let d = decide(
            &input(&controls(), &settings, 20),
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            Fact::Observed(obs),
        );
        let f = d.status.failure.unwrap();
        assert_eq!(
            f.message.as_deref(),
            Some("job j1 failed in activity compute_x: ERROR: boom")
        );
        assert_eq!(f.activity.as_deref(), Some("compute_x"));
        assert!(
            d.events[0].note.ends_with("cleanup"),
            "the note carries the log tail"
        );
        assert_eq!(
            d.signals,
            vec![Signal::Finished {
                outcome: super::super::vocabulary::Ended::Failed,
                age: Duration::from_secs(20)
            }]
        );
    }
}
