//! The status contract (design.md 4), derived and never stored by hand: the phase from the run's
//! facts, the attempts from the start request, and the conditions every consumer (kubectl wait,
//! kstatus, Flux, Argo CD) reads, with transition times kept unless a condition's status flips.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::{
    model::{Blocker, Controls, Kind, RunStatus},
    plan::{in_flight, retry_due, serves_want},
    vocabulary::RunState,
};
use crate::crd::{Phase, Refusal};

/// Condition types.
pub(crate) const READY: &str = "Ready";
/// Present (True) only while the operator is working towards the desired state.
pub(crate) const RECONCILING: &str = "Reconciling";
/// Present (True) only when the run cannot progress without a change.
pub(crate) const STALLED: &str = "Stalled";
/// True when the current run succeeded, False when it failed or was aborted, Unknown before.
pub(crate) const SUCCEEDED: &str = "Succeeded";

/// The phase, derived from the run's facts.
pub(crate) fn phase<K: Kind>(c: &Controls, s: &RunStatus<K>) -> Phase {
    if in_flight(s).is_some() {
        return Phase::Starting;
    }
    let idle = if c.suspend {
        Phase::Suspended
    } else {
        Phase::Pending
    };
    if let Some(f) = &s.failure {
        // A failed run whose retry is due is on its way to the next run.
        return if retry_due(c, s) { idle } else { f.reason.phase() };
    }
    let Some(current) = &s.current else {
        // No run: never started, or refused before DSS created one (`notBefore` ahead).
        let rejected = s.start_request.as_ref().and_then(|r| r.refused) == Some(Refusal::Rejected);
        return if rejected { Phase::Failed } else { idle };
    };
    match current.run_state() {
        None | Some(RunState::Queued) => Phase::Queued,
        Some(RunState::Running) => Phase::Running,
        // The run served an earlier request: the next one starts (or waits for `suspend`).
        Some(_) if !serves_want(c, s) => idle,
        Some(RunState::Succeeded) => Phase::Succeeded,
        Some(RunState::Failed) => Phase::Failed,
        // Aborted for a spec change: superseded by the request that starts next.
        Some(RunState::Aborted) => idle,
    }
}

/// What a reconcile writes besides the run core's status: the derived fields.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Derived {
    /// The phase.
    pub(crate) phase: Phase,
    /// Runs started for the current run request (the start request's attempt).
    pub(crate) attempts: Option<i32>,
    /// The conditions.
    pub(crate) conditions: Vec<Condition>,
    /// The generation this status describes.
    pub(crate) observed_generation: Option<i64>,
}

/// Derives the phase, attempts and conditions of a status about to be written.
pub(crate) fn derive<K: Kind>(
    c: &Controls,
    s: &RunStatus<K>,
    blocker: Option<&Blocker>,
    now: Timestamp,
) -> Derived {
    let phase = phase(c, s);
    let mut conditions = s.conditions.clone();
    let name = s.current.as_ref().map(|r| K::describe(&r.handle));
    let (ready, reconciling, stalled, succeeded) = shape(phase, s, blocker, name.as_deref());
    let g = c.generation;
    for (type_, value) in [
        (READY, Some(ready)),
        (RECONCILING, reconciling),
        (STALLED, stalled),
        (SUCCEEDED, Some(succeeded)),
    ] {
        match value {
            Some((status, reason, message)) => {
                set_condition(&mut conditions, type_, status, reason, &message, g, now)
            }
            None => remove_condition(&mut conditions, type_),
        }
    }
    // A stable order keeps status writes byte-identical when nothing changed.
    conditions.sort_by_key(|x| rank(&x.type_));
    Derived {
        phase,
        attempts: s.start_request.as_ref().map(|r| r.attempt.unwrap_or(1)),
        conditions,
        observed_generation: g,
    }
}

/// (status, reason, message) of a condition.
type Value<'a> = (&'static str, &'a str, String);

/// The four conditions in the one shape every consumer reads:
/// - success: Ready=True, Succeeded=True;
/// - failure / abort: Ready=False, Succeeded=False, Stalled=True;
/// - stuck until a user acts: Ready=False, Succeeded=Unknown, Stalled=True;
/// - suspended: Ready=False, Succeeded=Unknown;
/// - in progress: Ready=False, Reconciling=True, Succeeded=Unknown.
fn shape<'a, K: Kind>(
    phase: Phase,
    s: &'a RunStatus<K>,
    blocker: Option<&'a Blocker>,
    name: Option<&str>,
) -> (Value<'a>, Option<Value<'a>>, Option<Value<'a>>, Value<'a>) {
    let run = name.unwrap_or("-");
    match (phase, blocker) {
        (Phase::Succeeded, _) => {
            let msg = format!("{run} finished {}", K::WORDS.success);
            (
                ("True", Phase::Succeeded.as_str(), msg.clone()),
                None,
                None,
                ("True", K::WORDS.succeeded.as_str(), msg),
            )
        }
        (Phase::Failed | Phase::Aborted, _) => {
            let (reason, msg) = match &s.failure {
                Some(f) => (
                    f.reason.as_str(),
                    f.message
                        .clone()
                        .unwrap_or_else(|| phase_message(phase, run, K::WORDS.success)),
                ),
                None => (phase.as_str(), phase_message(phase, run, K::WORDS.success)),
            };
            let v = ("False", reason, msg);
            (v.clone(), None, Some(("True", reason, v.2.clone())), v)
        }
        (_, Some(b)) if b.stalled => {
            let r = b.reason.as_str();
            (
                ("False", r, b.message.clone()),
                None,
                Some(("True", r, b.message.clone())),
                ("Unknown", r, b.message.clone()),
            )
        }
        (Phase::Suspended, _) => {
            let msg = "spec.suspend is true: no new run is started".to_string();
            let reason = Phase::Suspended.as_str();
            (
                ("False", reason, msg.clone()),
                None,
                None,
                ("Unknown", reason, msg),
            )
        }
        (_, blocker) => {
            let (reason, msg) = match blocker {
                Some(b) => (b.reason.as_str(), b.message.clone()),
                None => (phase.as_str(), phase_message(phase, run, K::WORDS.success)),
            };
            let v = ("False", reason, msg);
            (
                v.clone(),
                Some(("True", reason, v.2.clone())),
                None,
                ("Unknown", reason, v.2),
            )
        }
    }
}

fn phase_message(phase: Phase, run: &str, success: &str) -> String {
    match phase {
        Phase::Pending => "waiting to start a run".to_string(),
        Phase::Starting => "starting a run".to_string(),
        Phase::Queued => format!("{run} is queued"),
        Phase::Running => format!("{run} is running"),
        Phase::Succeeded => format!("{run} finished {success}"),
        Phase::Failed => format!("{run} failed"),
        Phase::Aborted => format!("{run} was aborted"),
        Phase::Suspended => "suspended".to_string(),
    }
}

fn rank(type_: &str) -> usize {
    [READY, RECONCILING, STALLED, SUCCEEDED]
        .iter()
        .position(|t| *t == type_)
        .unwrap_or(usize::MAX)
}

/// Sets a condition, keeping `lastTransitionTime` unless the status flips.
pub(crate) fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let message = crate::text::truncate(message, 1024);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status != status {
            existing.last_transition_time = Time(now);
        }
        existing.status = status.to_string();
        existing.reason = reason.to_string();
        existing.message = message;
        existing.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        });
    }
}

/// Removes a condition.
pub(crate) fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Looks up a condition.
pub(crate) fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::super::{contract, testing::*, vocabulary::WaitingReason, *};
    use crate::crd::{FailureReason, Phase};

    #[test]
    fn phases_are_derived_from_facts() {
        let base = controls();
        let suspended = Controls {
            suspend: true,
            ..controls()
        };
        let retrying = Controls {
            retry_limit: 1,
            ..controls()
        };
        let mut failed = started(WANT, 0, Some("j1"), Some("FAILED"));
        failed.failure = Some(crate::crd::Failure {
            reason: FailureReason::JobFailed,
            message: None,
            activity: None,
            log_tail: None,
        });
        let cases: Vec<(&str, &Controls, S, Phase)> = vec![
            ("nothing yet", &base, S::default(), Phase::Pending),
            (
                "nothing yet, suspended",
                &suspended,
                S::default(),
                Phase::Suspended,
            ),
            (
                "a start in flight",
                &base,
                started(WANT, 0, None, None),
                Phase::Starting,
            ),
            (
                "an adopted run not yet observed",
                &base,
                started(WANT, 0, Some("j1"), None),
                Phase::Queued,
            ),
            (
                "a running run, suspended",
                &suspended,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                Phase::Running,
            ),
            ("a failed run", &base, failed.clone(), Phase::Failed),
            ("a failed run with a retry due", &retrying, failed, Phase::Pending),
            (
                "an earlier request's done run, suspended",
                &suspended,
                started("old", 0, Some("j1"), Some("DONE")),
                Phase::Suspended,
            ),
        ];
        for (name, c, s, phase) in cases {
            assert_eq!(contract::phase(c, &s), phase, "{name}");
        }
    }

    #[test]
    fn conditions_follow_the_contract() {
        let c = controls();
        let types = |d: &contract::Derived| -> Vec<(String, String)> {
            d.conditions
                .iter()
                .map(|x| (x.type_.clone(), x.status.clone()))
                .collect()
        };
        let running = contract::derive(&c, &started(WANT, 0, Some("j1"), Some("RUNNING")), None, ts(1));
        assert_eq!(
            types(&running),
            vec![
                ("Ready".into(), "False".into()),
                ("Reconciling".into(), "True".into()),
                ("Succeeded".into(), "Unknown".into())
            ]
        );
        let mut done = started(WANT, 0, Some("j1"), Some("DONE"));
        done.conditions = running.conditions.clone();
        let ok = contract::derive(&c, &done, None, ts(2));
        assert_eq!(
            types(&ok),
            vec![
                ("Ready".into(), "True".into()),
                ("Succeeded".into(), "True".into())
            ]
        );
        assert_eq!(ok.conditions[1].reason, "JobSucceeded");
        assert_eq!(
            ok.conditions[0].last_transition_time,
            Time(ts(2)),
            "Ready flipped"
        );
        assert_eq!(ok.attempts, Some(1));
        let stuck = Blocker {
            reason: WaitingReason::StartOutcomeUnknown,
            message: "m".into(),
            stalled: true,
        };
        let d = contract::derive(&c, &started(WANT, 0, None, None), Some(&stuck), ts(3));
        assert_eq!(
            contract::condition(&d.conditions, contract::STALLED).map(|x| x.reason.as_str()),
            Some("StartOutcomeUnknown")
        );
        assert!(contract::condition(&d.conditions, contract::RECONCILING).is_none());
    }
}
