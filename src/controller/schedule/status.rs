//! The status of a schedule, computed whole from what a reconcile decided (pure), and its write.
//!
//! Conditions: `Ready` is True while the schedule is valid and not suspended; `Stalled` is present
//! (True) only while the input is invalid, with the reason and a message that says what to fix, and
//! goes as soon as the spec is fixed. No `Reconciling`: a schedule is never "in progress" (kstatus
//! reads it as Current once observed).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::children::{Child, State};
use crate::{
    controller::{
        error::Error,
        run::contract::{READY, STALLED, remove_condition, set_condition},
    },
    crd::{DatasetBuildSchedule, DatasetBuildScheduleStatus, FIELD_MANAGER},
};

/// Invalid input: the `Stalled` reason and what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// PascalCase: `InvalidSchedule`, `InvalidTimeZone`, `InvalidTemplate`.
    pub(crate) reason: &'static str,
    /// What is wrong.
    pub(crate) message: String,
}

impl Problem {
    /// The build template cannot make a valid build.
    pub(crate) fn template(message: String) -> Problem {
        Problem {
            reason: "InvalidTemplate",
            message,
        }
    }
}

/// What one reconcile decided, to be recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// The new last handled slot.
    pub(crate) handled: Option<Timestamp>,
    /// The schedule (and zone) it was computed with.
    pub(crate) handled_schedule: Option<String>,
    /// The newest slot the schedule created a build for in this reconcile.
    pub(crate) created: Option<Timestamp>,
    /// Slots newly counted as missed.
    pub(crate) missed: u64,
    /// Slots newly counted as skipped.
    pub(crate) skipped: u64,
    /// The slot waiting for an active build.
    pub(crate) pending: Option<Timestamp>,
    /// The next slot.
    pub(crate) next: Option<Timestamp>,
    /// Invalid input.
    pub(crate) problem: Option<Problem>,
    /// The last `kube-dss.dev/create-build` value acted upon.
    pub(crate) create_build: Option<String>,
}

/// The whole new status.
pub(crate) fn desired(
    schedule: &DatasetBuildSchedule,
    children: &[Child],
    record: &Record,
    now: Timestamp,
) -> DatasetBuildScheduleStatus {
    let old = schedule.status.clone().unwrap_or_default();
    let generation = schedule.metadata.generation;
    let add = |count: Option<i64>, n: u64| {
        let total = count
            .unwrap_or(0)
            .saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
        (total > 0).then_some(total)
    };
    let newest_success = children
        .iter()
        .filter(|c| c.state == State::Succeeded)
        .filter_map(|c| c.completed)
        .max();
    let active: Vec<_> = children
        .iter()
        .filter(|c| c.state == State::Active)
        .map(|c| c.reference.clone())
        .collect();
    let mut status = DatasetBuildScheduleStatus {
        observed_generation: generation,
        last_schedule_time: later(old.last_schedule_time.map(|t| t.0), record.created).map(Time),
        last_successful_time: later(old.last_successful_time.map(|t| t.0), newest_success).map(Time),
        next_schedule_time: record.next.map(Time),
        active_count: Some(i32::try_from(active.len()).unwrap_or(i32::MAX)),
        active,
        missed_slots: add(old.missed_slots, record.missed),
        skipped_slots: add(old.skipped_slots, record.skipped),
        last_handled_slot_time: record.handled.map(Time),
        last_handled_schedule: record.handled_schedule.clone(),
        last_handled_create_build_annotation: record.create_build.clone(),
        pending_slot: record.pending.map(Time),
        conditions: old.conditions,
    };
    let conditions = &mut status.conditions;
    match (&record.problem, schedule.spec.suspend == Some(true)) {
        (Some(p), _) => {
            set_condition(conditions, READY, "False", p.reason, &p.message, generation, now);
            set_condition(conditions, STALLED, "True", p.reason, &p.message, generation, now);
        }
        (None, true) => {
            let msg = "spec.suspend is true: no build is created";
            set_condition(conditions, READY, "False", "Suspended", msg, generation, now);
            remove_condition(conditions, STALLED);
        }
        (None, false) => {
            let msg = format!(
                "a build is created for every slot of '{}' in {}",
                schedule.spec.schedule,
                schedule.spec.time_zone.as_deref().unwrap_or("UTC")
            );
            set_condition(conditions, READY, "True", "Scheduled", &msg, generation, now);
            remove_condition(conditions, STALLED);
        }
    }
    conditions.sort_by_key(|c| if c.type_ == READY { 0 } else { 1 });
    status
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    a.max(b)
}

/// Writes the whole status by server-side apply, conditioned on `resource_version`: a reconcile
/// working from a stale copy gets a 409 and can never roll the last handled slot back (which could
/// run a slot twice once its build is gone).
pub(crate) async fn write(
    api: &Api<DatasetBuildSchedule>,
    schedule: &DatasetBuildSchedule,
    status: &DatasetBuildScheduleStatus,
    resource_version: Option<&str>,
) -> Result<(), Error> {
    let mut metadata = json!({ "name": schedule.name_any() });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    let patch = json!({
        "apiVersion": DatasetBuildSchedule::api_version(&()),
        "kind": DatasetBuildSchedule::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &schedule.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(Error::kube("write schedule status"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;

    use super::*;
    use crate::controller::run::contract::condition;

    fn schedule(suspend: bool, status: Option<DatasetBuildScheduleStatus>) -> DatasetBuildSchedule {
        let mut s: DatasetBuildSchedule = serde_yaml::from_str(&format!(
            "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuildSchedule\nmetadata: {{name: n, generation: 4}}\nspec: {{schedule: '@daily', suspend: {suspend}, buildTemplate: {{spec: {{projectKey: P, outputs: [{{id: d}}]}}}}}}"
        ))
        .unwrap();
        s.status = status;
        s
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn child(name: &str, state: State, completed: Option<i64>) -> Child {
        Child {
            name: name.into(),
            uid: None,
            slot: None,
            state,
            deleting: false,
            completed: completed.map(t),
            reference: ObjectReference {
                name: Some(name.into()),
                ..ObjectReference::default()
            },
        }
    }

    #[test]
    fn conditions_follow_validity_and_suspension() {
        let problem = Record {
            problem: Some(Problem {
                reason: "InvalidTemplate",
                message: "bad placeholder".into(),
            }),
            ..Record::default()
        };
        let stalled = desired(&schedule(false, None), &[], &problem, t(100));
        let ready = condition(&stalled.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidTemplate")
        );
        let st = condition(&stalled.conditions, STALLED).unwrap();
        assert_eq!(
            (st.status.as_str(), st.message.as_str()),
            ("True", "bad placeholder")
        );
        assert_eq!(stalled.observed_generation, Some(4));

        // Fixed: Stalled goes at once, Ready flips (and only then its transition time moves).
        let fixed = desired(
            &schedule(false, Some(stalled.clone())),
            &[],
            &Record::default(),
            t(200),
        );
        assert!(condition(&fixed.conditions, STALLED).is_none());
        let ready = condition(&fixed.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Scheduled")
        );
        assert_eq!(ready.last_transition_time.0, t(200));
        let again = desired(
            &schedule(false, Some(fixed.clone())),
            &[],
            &Record::default(),
            t(300),
        );
        assert_eq!(
            condition(&again.conditions, READY)
                .unwrap()
                .last_transition_time
                .0,
            t(200)
        );

        let suspended = desired(&schedule(true, Some(fixed)), &[], &Record::default(), t(400));
        let ready = condition(&suspended.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Suspended")
        );
        assert!(condition(&suspended.conditions, STALLED).is_none());
    }

    #[test]
    fn counts_add_up_and_times_only_move_forward() {
        let old = DatasetBuildScheduleStatus {
            missed_slots: Some(2),
            last_schedule_time: Some(Time(t(500))),
            last_successful_time: Some(Time(t(450))),
            ..DatasetBuildScheduleStatus::default()
        };
        let record = Record {
            handled: Some(t(600)),
            created: Some(t(600)),
            missed: 3,
            skipped: 1,
            next: Some(t(700)),
            ..Record::default()
        };
        let children = [
            child("a", State::Succeeded, Some(400)),
            child("b", State::Succeeded, Some(550)),
            child("c", State::Active, None),
            child("d", State::Failed, Some(580)),
        ];
        let s = desired(&schedule(false, Some(old)), &children, &record, t(650));
        assert_eq!(s.missed_slots, Some(5));
        assert_eq!(s.skipped_slots, Some(1));
        assert_eq!(s.last_schedule_time, Some(Time(t(600))));
        assert_eq!(s.last_successful_time, Some(Time(t(550))));
        assert_eq!(s.last_handled_slot_time, Some(Time(t(600))));
        assert_eq!(s.next_schedule_time, Some(Time(t(700))));
        assert_eq!(s.active_count, Some(1));
        assert_eq!(s.active[0].name.as_deref(), Some("c"));
        let quiet = desired(&schedule(false, None), &[], &Record::default(), t(650));
        assert_eq!((quiet.missed_slots, quiet.skipped_slots), (None, None));
    }
}
