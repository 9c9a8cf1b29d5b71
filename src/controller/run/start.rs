//! Starts: recording a start request before it is sent, and what each outcome of the send makes of
//! the status (accepted, retry later, rejected, outcome unknown).

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    Draft,
    fold::whole_seconds,
    model::{Controls, Current, Kind, Next, Past, Settings, Signal, StartOutcome, Wake},
    plan::later,
    vocabulary::{EventAction, EventReason, WaitingReason},
};
use crate::{
    controller::error::Category,
    crd::{FailureReason, Refusal, StartRequest},
};

/// Records a new start request for the wanted run request (the executor writes it, with the
/// resourceVersion precondition, before anything is sent). The current run goes to the history.
pub(crate) fn record<K: Kind>(
    c: &Controls,
    d: &mut Draft<K>,
    attempt: i32,
    now: Timestamp,
    settings: &Settings,
) {
    let s = &mut d.status;
    if let Some(current) = s.current.take() {
        s.history.insert(
            0,
            Past {
                handle: current.handle,
                state: current.state,
                start_time: current.start_time,
                completion_time: current.completion_time,
                details: current.details,
            },
        );
        s.history.truncate(settings.history_limit);
    }
    s.failure = None;
    s.abort_request = None;
    s.not_before = None;
    s.handled.rerun_token = c.rerun_token.clone();
    s.handled.rerun_annotation = c.rerun_annotation.clone();
    s.start_request = Some(StartRequest {
        requested_at: Time(now),
        fingerprint: c.want.clone(),
        attempt: Some(attempt),
        definition_hash: Some(c.definition_hash.clone()),
        refused: None,
    });
    d.blocker = None;
}

/// What the answer to a start request makes of the status, and the next step.
pub(crate) fn sent<K: Kind>(
    d: &mut Draft<K>,
    outcome: StartOutcome<K::Handle>,
    sent_at: Timestamp,
    now: Timestamp,
    settings: &Settings,
) -> Next {
    match outcome {
        StartOutcome::Accepted(handle) => {
            let name = K::describe(&handle);
            // From here on the request's time is the run's age (polling pace, deadlines): the time it
            // was sent, not the time it was recorded while waiting for its turn.
            let attempt = d.status.start_request.as_mut().map_or(1, |r| {
                r.requested_at = Time(whole_seconds(sent_at));
                r.attempt.unwrap_or(1)
            });
            // A run DSS just accepted has not started and has no warnings: recording that now saves
            // a status write at the first observation.
            d.status.current = Some(Current {
                handle,
                state: Some(K::accepted_state()),
                start_time: None,
                completion_time: None,
                warnings: Some(0),
                details: K::Details::default(),
            });
            let note = match attempt {
                1 => format!("started {name}"),
                n => format!("started {name} (attempt {n})"),
            };
            d.normal(K::WORDS.started, EventAction::StartJob, note);
            d.signal(Signal::Started);
            Next::Wait(Wake::After(settings.poll_min))
        }
        StartOutcome::RetryLater {
            refusal,
            after,
            message,
            category,
        } => {
            // DSS refused before creating anything: starting again later is safe.
            let after = after.max(Duration::from_secs(1));
            if let Some(r) = d.status.start_request.as_mut() {
                r.refused = Some(refusal);
            }
            d.status.not_before = Some(Time(whole_seconds(later(now, after))));
            d.block(
                WaitingReason::Trouble(Category::Dss(category)),
                format!("DSS refused to start the run: {message}"),
                false,
            );
            Next::Wait(Wake::After(after))
        }
        StartOutcome::Rejected { message } => {
            // DSS rejected the definition: only a new run request can help.
            if let Some(r) = d.status.start_request.as_mut() {
                r.refused = Some(Refusal::Rejected);
            }
            let msg = format!("DSS rejected the job definition: {message}");
            d.fail(FailureReason::StartRejected, &msg);
            d.warn(EventReason::StartRejected, EventAction::StartJob, msg);
            Next::Wait(Wake::OnChange)
        }
        StartOutcome::Unknown { message } => {
            // 5xx, timeout, reset: the run may or may not exist. Keep the start request; the crash
            // guard searches DSS once the grace period is over.
            d.block(
                WaitingReason::StartPending,
                format!("the start request's outcome is unknown ({message}); looking for the run in DSS"),
                false,
            );
            Next::Wait(Wake::After(settings.start_grace))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{
        contract,
        plan::{self, Step},
        testing::*,
        *,
    };
    use crate::{
        crd::{Phase, Refusal},
        dss,
    };

    #[test]
    fn start_outcomes() {
        let settings = Settings::default();
        let c = controls();
        let recorded = || started(WANT, 0, None, None);
        type Case<'a> = (&'a str, StartOutcome<String>, Phase, Next, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "accepted",
                StartOutcome::Accepted("j1".into()),
                Phase::Queued,
                Next::Wait(Wake::After(settings.poll_min)),
                None,
            ),
            (
                "rate limited: same attempt after notBefore",
                StartOutcome::RetryLater {
                    refusal: Refusal::RateLimited,
                    after: Duration::from_secs(15),
                    message: "429".into(),
                    category: dss::Category::RateLimited,
                },
                Phase::Pending,
                Next::Wait(Wake::After(Duration::from_secs(15))),
                Some("DssRateLimited"),
            ),
            (
                "rejected: not sent again",
                StartOutcome::Rejected {
                    message: "unknown dataset".into(),
                },
                Phase::Failed,
                Next::Wait(Wake::OnChange),
                None,
            ),
            (
                "unknown: the crash guard finds out",
                StartOutcome::Unknown {
                    message: "502".into(),
                },
                Phase::Starting,
                Next::Wait(Wake::After(settings.start_grace)),
                Some("StartPending"),
            ),
        ];
        for (name, outcome, phase, next, blocker) in cases {
            let d = decide(
                &input(&c, &settings, 3),
                recorded(),
                Fact::Started {
                    outcome,
                    sent_at: ts(2),
                },
            );
            assert_eq!(contract::phase(&c, &d.status), phase, "{name}: phase");
            assert_eq!(d.next, next, "{name}: next");
            assert_eq!(
                d.blocker.as_ref().map(|b| b.reason.as_str()),
                blocker,
                "{name}: blocker"
            );
        }
        // An accepted start counts its age from when it was sent, and waits for nothing more.
        let d = decide(
            &input(&c, &settings, 3),
            recorded(),
            Fact::Started {
                outcome: StartOutcome::Accepted("j1".into()),
                sent_at: ts(2),
            },
        );
        assert_eq!(
            d.status.start_request.as_ref().map(|r| r.requested_at.0),
            Some(ts(2))
        );
        assert_eq!(reasons(&d), vec![(false, "JobStarted")]);
        // After a refusal the next plan waits for notBefore, then sends the same attempt again.
        let refused = decide(
            &input(&c, &settings, 3),
            recorded(),
            Fact::Started {
                outcome: StartOutcome::RetryLater {
                    refusal: Refusal::RateLimited,
                    after: Duration::from_secs(10),
                    message: "429".into(),
                    category: dss::Category::RateLimited,
                },
                sent_at: ts(2),
            },
        );
        assert_eq!(
            plan::in_flight(&refused.status),
            None,
            "a refused request is not in flight"
        );
        assert_eq!(
            step(&c, &refused.status, unknown_sending(), 14),
            Step::Start { attempt: 1 }
        );
    }
}
