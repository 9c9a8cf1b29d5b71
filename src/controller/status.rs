//! The status contract (design.md 4), computed without IO: conditions from the phase, transition
//! times kept unless a condition's status flips, and DSS observations folded into the status.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::{
    crd::{DatasetBuildStatus, Failure, HistoryEntry, Phase},
    dss::JobState,
};

/// Condition types.
pub const READY: &str = "Ready";
/// Present (True) only while the operator is working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// Present (True) only when the build cannot progress without a change.
pub const STALLED: &str = "Stalled";
/// True when the current run succeeded, False when it failed or was aborted, Unknown before.
pub const SUCCEEDED: &str = "Succeeded";

/// How many earlier jobs `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// Sets a condition, keeping `lastTransitionTime` unless the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let message = crate::controller::error::truncate(message, 1024);
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
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Looks up a condition.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Something that keeps a build from progressing, reported in its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// PascalCase reason.
    pub reason: String,
    /// What is wrong and what to do.
    pub message: String,
    /// True when only a change by the user resolves it (`Stalled`), false when the operator keeps
    /// retrying (`Reconciling`).
    pub stalled: bool,
}

/// Rewrites the conditions from the phase, the failure and an optional blocker, in the one shape every
/// consumer (kubectl wait, kstatus, Flux, Argo CD) reads:
/// - success: Ready=True, Succeeded=True;
/// - failure / abort: Ready=False, Succeeded=False, Stalled=True;
/// - in progress: Ready=False, Reconciling=True, Succeeded=Unknown;
/// - suspended: Ready=False, Succeeded=Unknown.
pub fn summarize(
    status: &mut DatasetBuildStatus,
    generation: Option<i64>,
    blocker: Option<&Blocker>,
    now: Timestamp,
) {
    let phase = status.phase.unwrap_or(Phase::Pending);
    status.observed_generation = generation;
    let conditions = &mut status.conditions;
    let phase_message = phase_message(phase, status.job_id.as_deref(), status.state.as_deref());
    match (phase, blocker) {
        (Phase::Succeeded, _) => {
            let msg = format!(
                "DSS job {} finished DONE",
                status.job_id.as_deref().unwrap_or("?")
            );
            set_condition(conditions, READY, "True", "Succeeded", &msg, generation, now);
            set_condition(
                conditions,
                SUCCEEDED,
                "True",
                "JobSucceeded",
                &msg,
                generation,
                now,
            );
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        (Phase::Failed | Phase::Aborted, _) => {
            let (reason, message) = match &status.failure {
                Some(f) => (
                    f.reason.clone(),
                    f.message.clone().unwrap_or_else(|| phase_message.clone()),
                ),
                None => (phase.as_str().to_string(), phase_message.clone()),
            };
            set_condition(conditions, READY, "False", &reason, &message, generation, now);
            set_condition(conditions, SUCCEEDED, "False", &reason, &message, generation, now);
            set_condition(conditions, STALLED, "True", &reason, &message, generation, now);
            remove_condition(conditions, RECONCILING);
        }
        (_, Some(b)) if b.stalled => {
            set_condition(conditions, READY, "False", &b.reason, &b.message, generation, now);
            set_condition(
                conditions, SUCCEEDED, "Unknown", &b.reason, &b.message, generation, now,
            );
            set_condition(
                conditions, STALLED, "True", &b.reason, &b.message, generation, now,
            );
            remove_condition(conditions, RECONCILING);
        }
        (Phase::Suspended, _) => {
            let msg = "spec.suspend is true: no new job is started";
            set_condition(conditions, READY, "False", "Suspended", msg, generation, now);
            set_condition(
                conditions,
                SUCCEEDED,
                "Unknown",
                "Suspended",
                msg,
                generation,
                now,
            );
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        (_, blocker) => {
            let (reason, message) = match blocker {
                Some(b) => (b.reason.clone(), b.message.clone()),
                None => (phase.as_str().to_string(), phase_message.clone()),
            };
            set_condition(conditions, READY, "False", &reason, &message, generation, now);
            set_condition(
                conditions,
                RECONCILING,
                "True",
                &reason,
                &message,
                generation,
                now,
            );
            set_condition(
                conditions, SUCCEEDED, "Unknown", &reason, &message, generation, now,
            );
            remove_condition(conditions, STALLED);
        }
    }
    // A stable order keeps status writes byte-identical when nothing changed.
    conditions.sort_by_key(|c| condition_rank(&c.type_));
}

fn condition_rank(type_: &str) -> usize {
    [READY, RECONCILING, STALLED, SUCCEEDED]
        .iter()
        .position(|t| *t == type_)
        .unwrap_or(usize::MAX)
}

fn phase_message(phase: Phase, job_id: Option<&str>, state: Option<&str>) -> String {
    let job = job_id.unwrap_or("-");
    match phase {
        Phase::Pending => "waiting to start a DSS job".to_string(),
        Phase::Starting => "starting a DSS job".to_string(),
        Phase::Queued => format!("DSS job {job} is queued (NOT_STARTED)"),
        Phase::Running => format!("DSS job {job} is {}", state.unwrap_or("RUNNING")),
        Phase::Succeeded => format!("DSS job {job} finished DONE"),
        Phase::Failed => format!("DSS job {job} failed"),
        Phase::Aborted => format!("DSS job {job} was aborted"),
        Phase::Suspended => "suspended".to_string(),
    }
}

/// The phase of an active (non-terminal) job in a given DSS state.
pub fn active_phase(state: &JobState) -> Phase {
    match state {
        JobState::NotStarted => Phase::Queued,
        _ => Phase::Running,
    }
}

/// Moves the current job (if any) into the history, newest first, bounded.
pub fn push_history(status: &mut DatasetBuildStatus) {
    if let Some(job_id) = status.job_id.take() {
        status.history.insert(
            0,
            HistoryEntry {
                job_id,
                state: status.state.clone(),
                start_time: status.start_time.clone(),
                completion_time: status.completion_time.clone(),
            },
        );
        status.history.truncate(HISTORY_LIMIT);
    }
    status.state = None;
    status.start_time = None;
    status.completion_time = None;
    status.warnings_count = None;
    status.failure = None;
}

/// Converts DSS times into Kubernetes times (whole seconds, as the apiserver stores them).
pub fn time_from_chrono(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<Time> {
    let t = t?;
    Timestamp::from_second(t.timestamp()).ok().map(Time)
}

/// Drops the fraction of a second: Kubernetes times have whole seconds.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The current time in whole seconds.
pub fn now_seconds() -> Timestamp {
    whole_seconds(Timestamp::now())
}

/// A failure record.
pub fn failure(reason: &str, message: impl Into<String>) -> Failure {
    Failure {
        reason: reason.to_string(),
        message: Some(message.into()),
        activity: None,
        log_tail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let mut c = Vec::new();
        set_condition(&mut c, READY, "False", "Running", "a", Some(1), ts(100));
        set_condition(&mut c, READY, "False", "Queued", "b", Some(2), ts(200));
        assert_eq!(c[0].last_transition_time, Time(ts(100)));
        assert_eq!(c[0].reason, "Queued");
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(&mut c, READY, "True", "Succeeded", "c", Some(2), ts(300));
        assert_eq!(c[0].last_transition_time, Time(ts(300)));
    }

    #[test]
    fn success_has_ready_and_succeeded_true_and_nothing_else() {
        let mut s = DatasetBuildStatus {
            phase: Some(Phase::Running),
            ..Default::default()
        };
        summarize(&mut s, Some(3), None, ts(1));
        assert_eq!(condition(&s.conditions, RECONCILING).unwrap().status, "True");
        assert_eq!(condition(&s.conditions, SUCCEEDED).unwrap().status, "Unknown");
        s.phase = Some(Phase::Succeeded);
        summarize(&mut s, Some(3), None, ts(2));
        let types: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![(READY, "True"), (SUCCEEDED, "True")]);
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn failure_is_stalled_with_the_failure_reason() {
        let mut s = DatasetBuildStatus {
            phase: Some(Phase::Failed),
            failure: Some(failure("DeadlineExceeded", "too slow")),
            ..Default::default()
        };
        summarize(&mut s, Some(1), None, ts(1));
        let stalled = condition(&s.conditions, STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "DeadlineExceeded")
        );
        assert_eq!(condition(&s.conditions, SUCCEEDED).unwrap().status, "False");
        assert_eq!(condition(&s.conditions, READY).unwrap().status, "False");
        assert!(condition(&s.conditions, RECONCILING).is_none());
    }

    #[test]
    fn blockers_are_reconciling_or_stalled() {
        let mut s = DatasetBuildStatus {
            phase: Some(Phase::Pending),
            ..Default::default()
        };
        let waiting = Blocker {
            reason: "ConnectionNotFound".into(),
            message: "m".into(),
            stalled: false,
        };
        summarize(&mut s, Some(1), Some(&waiting), ts(1));
        assert_eq!(
            condition(&s.conditions, RECONCILING).unwrap().reason,
            "ConnectionNotFound"
        );
        assert!(condition(&s.conditions, STALLED).is_none());
        let stuck = Blocker {
            reason: "StartOutcomeUnknown".into(),
            message: "m".into(),
            stalled: true,
        };
        summarize(&mut s, Some(1), Some(&stuck), ts(2));
        assert_eq!(
            condition(&s.conditions, STALLED).unwrap().reason,
            "StartOutcomeUnknown"
        );
        assert!(condition(&s.conditions, RECONCILING).is_none());
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let mut s = DatasetBuildStatus::default();
        for i in 0..(HISTORY_LIMIT + 3) {
            s.job_id = Some(format!("j{i}"));
            s.state = Some("DONE".into());
            push_history(&mut s);
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].job_id, format!("j{}", HISTORY_LIMIT + 2));
        assert!(s.job_id.is_none() && s.state.is_none());
    }
}
