//! The builds of a schedule: the build for a slot (pure: name, labels, owner, expanded template), which
//! builds are active, succeeded or failed, which old ones the history limits remove, and the few
//! apiserver calls on them (create, delete, a fresh list).
//!
//! A build is named `<schedule>-<slot>` (Unix minutes, or seconds for a 6-field schedule), so that a
//! crash, a second replica or `kube-dss schedules run` can never create two builds for one slot: the
//! second create is refused with 409 AlreadyExists, which means "done".

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams, Preconditions, PropagationPolicy},
};

use super::{
    slots::{Schedule, SlotUnit, slot_number},
    template::{Template, TemplateError, check_partition, check_rerun_token},
};
use crate::{
    controller::error::Error,
    crd::{
        DatasetBuild, DatasetBuildSchedule, INSTANTIATE_ANNOTATION, Phase, SCHEDULE_LABEL,
        SCHEDULED_TIME_ANNOTATION, SLOT_LABEL,
    },
};

/// The name of the build of `slot`.
pub(crate) fn child_name(schedule: &str, slot: Timestamp, unit: SlotUnit) -> String {
    format!("{schedule}-{}", slot_number(slot, unit))
}

/// The parsed placeholders of a template: checked once per reconcile, expanded per slot.
#[derive(Clone, Debug)]
pub(crate) struct Templates {
    partitions: Vec<Option<Template>>,
    rerun_token: Option<Template>,
}

impl Templates {
    /// Parses every templated field of the schedule's build template.
    pub(crate) fn parse(schedule: &DatasetBuildSchedule) -> Result<Templates, TemplateError> {
        let spec = &schedule.spec.build_template.spec;
        let partitions = spec
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                o.partition
                    .as_deref()
                    .map(|p| Template::parse(&format!("buildTemplate.spec.outputs[{i}].partition"), p))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let rerun_token = spec
            .rerun_token
            .as_deref()
            .map(|t| Template::parse("buildTemplate.spec.rerunToken", t))
            .transpose()?;
        Ok(Templates {
            partitions,
            rerun_token,
        })
    }
}

/// How a build was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// By the schedule, for a cron slot.
    Schedule,
    /// By `kube-dss schedules run`.
    Manual,
}

/// The build of `slot`: the template with its placeholders expanded in the schedule's time zone,
/// the schedule's labels, and the schedule as its controlling owner.
pub(crate) fn build_for_slot(
    schedule: &DatasetBuildSchedule,
    parsed: &Schedule,
    templates: &Templates,
    slot: Timestamp,
    origin: Origin,
) -> Result<DatasetBuild, TemplateError> {
    let name = schedule.name_any();
    let zoned = slot.to_zoned(parsed.tz().clone());
    let slot_text = zoned.to_string();
    let mut spec = schedule.spec.build_template.spec.clone();
    for (i, (output, template)) in spec.outputs.iter_mut().zip(&templates.partitions).enumerate() {
        if let Some(template) = template {
            let value = template.expand(&zoned)?;
            check_partition(&value).map_err(|problem| {
                expanded(
                    format!("buildTemplate.spec.outputs[{i}].partition"),
                    &value,
                    &slot_text,
                    problem,
                )
            })?;
            output.partition = Some(value);
        }
    }
    if let Some(template) = &templates.rerun_token {
        let value = template.expand(&zoned)?;
        check_rerun_token(&value).map_err(|problem| {
            expanded(
                "buildTemplate.spec.rerunToken".into(),
                &value,
                &slot_text,
                problem,
            )
        })?;
        spec.rerun_token = Some(value);
    }
    let meta = schedule.spec.build_template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels;
    labels.insert(SCHEDULE_LABEL.into(), name.clone());
    labels.insert(SLOT_LABEL.into(), slot.as_second().to_string());
    let mut annotations: BTreeMap<String, String> = meta.annotations;
    annotations.insert(SCHEDULED_TIME_ANNOTATION.into(), slot_text);
    if origin == Origin::Manual {
        annotations.insert(INSTANTIATE_ANNOTATION.into(), "manual".into());
    }
    Ok(DatasetBuild {
        metadata: ObjectMeta {
            name: Some(child_name(&name, slot, parsed.unit())),
            namespace: schedule.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: schedule.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

fn expanded(field: String, value: &str, slot: &str, problem: &str) -> TemplateError {
    TemplateError::Expanded {
        field,
        value: value.to_string(),
        slot: slot.to_string(),
        problem: problem.to_string(),
    }
}

/// Where a build of the schedule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Not finished (or its status describes an older spec, or it is being deleted).
    Active,
    /// Finished `Succeeded`.
    Succeeded,
    /// Finished `Failed` or `Aborted`.
    Failed,
}

/// A build of the schedule, as the decisions need it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Child {
    /// Its name.
    pub(crate) name: String,
    /// Its uid (deletes are conditioned on it).
    pub(crate) uid: Option<String>,
    /// Its slot (from the slot label).
    pub(crate) slot: Option<Timestamp>,
    /// Where it is.
    pub(crate) state: State,
    /// It is being deleted.
    pub(crate) deleting: bool,
    /// When it finished, for a succeeded build.
    pub(crate) completed: Option<Timestamp>,
    /// A reference for `status.active`.
    pub(crate) reference: ObjectReference,
}

/// The builds whose controlling owner is this schedule (by uid: not a namesake's old builds).
pub(crate) fn owned_children<'a>(
    schedule: &DatasetBuildSchedule,
    builds: impl IntoIterator<Item = &'a DatasetBuild>,
) -> Vec<Child> {
    let uid = schedule.uid();
    let mut children: Vec<Child> = builds
        .into_iter()
        .filter(|b| {
            b.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .map(child)
        .collect();
    children.sort_by(|a, b| (a.slot, &a.name).cmp(&(b.slot, &b.name)));
    children
}

fn child(build: &DatasetBuild) -> Child {
    let status = build.status.as_ref();
    let current = status.and_then(|s| s.observed_generation) >= build.metadata.generation;
    let state = match status.and_then(|s| s.phase) {
        Some(Phase::Succeeded) if current => State::Succeeded,
        Some(Phase::Failed | Phase::Aborted) if current => State::Failed,
        _ => State::Active,
    };
    let deleting = build.metadata.deletion_timestamp.is_some();
    Child {
        name: build.name_any(),
        uid: build.uid(),
        slot: build
            .labels()
            .get(SLOT_LABEL)
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| Timestamp::from_second(s).ok()),
        state: if deleting { State::Active } else { state },
        deleting,
        completed: status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
        reference: ObjectReference {
            api_version: Some(DatasetBuild::api_version(&()).into_owned()),
            kind: Some(DatasetBuild::kind(&()).into_owned()),
            name: build.metadata.name.clone(),
            namespace: build.metadata.namespace.clone(),
            uid: build.uid(),
            ..ObjectReference::default()
        },
    }
}

/// The finished builds beyond the history limits, oldest first: all but the newest `succeeded`
/// succeeded ones and the newest `failed` failed ones (by slot). Active builds are never removed.
pub(crate) fn beyond_history(children: &[Child], succeeded: usize, failed: usize) -> Vec<&Child> {
    let mut out = Vec::new();
    for (state, keep) in [(State::Succeeded, succeeded), (State::Failed, failed)] {
        let finished: Vec<&Child> = children.iter().filter(|c| c.state == state).collect();
        let excess = finished.len().saturating_sub(keep);
        out.extend(finished.into_iter().take(excess));
    }
    out.sort_by(|a, b| (a.slot, &a.name).cmp(&(b.slot, &b.name)));
    out
}

/// What creating a build came to.
#[derive(Debug)]
pub(crate) enum Created {
    /// Created now (as the apiserver returned it).
    New(Box<DatasetBuild>),
    /// It already exists and belongs to this schedule (another replica, a crash, or a manual run
    /// made it): the slot is done.
    Existed,
    /// The apiserver refused the build as invalid (422): the template is at fault.
    Invalid(String),
}

/// Creates `build`, reading an AlreadyExists as done when the existing build is this schedule's.
pub(crate) async fn create(
    api: &Api<DatasetBuild>,
    build: &DatasetBuild,
    owner_uid: Option<&str>,
) -> Result<Created, Error> {
    match api.create(&PostParams::default(), build).await {
        Ok(created) => Ok(Created::New(Box::new(created))),
        Err(kube::Error::Api(s)) if s.code == 422 => Ok(Created::Invalid(s.message)),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let name = build.name_any();
            let existing = api
                .get_opt(&name)
                .await
                .map_err(Error::kube("read an existing build"))?;
            let ours = existing.as_ref().is_some_and(|b| {
                b.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == owner_uid)
            });
            if ours {
                Ok(Created::Existed)
            } else {
                Err(Error::BuildNameTaken {
                    message: format!(
                        "a DatasetBuild named {name} exists and does not belong to this schedule: delete or rename it so the slot can run"
                    ),
                })
            }
        }
        Err(e) => Err(Error::kube("create a build")(e)),
    }
}

/// Deletes a build (only the one with this uid); its own finalizer then handles the DSS job per
/// its `deletionPolicy`. A build already gone is fine.
pub(crate) async fn delete(api: &Api<DatasetBuild>, child: &Child) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: child.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(&child.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube("delete a build")(e)),
    }
}

/// The schedule's builds as the apiserver has them now (not the watch cache), for decisions that
/// must see a build created a moment ago: whether one is active under Forbid or Replace.
pub(crate) async fn list_fresh(
    api: &Api<DatasetBuild>,
    schedule: &DatasetBuildSchedule,
) -> Result<Vec<Child>, Error> {
    let selector = format!("{SCHEDULE_LABEL}={}", schedule.name_any());
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list the schedule's builds"))?;
    Ok(owned_children(schedule, &list.items))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::DatasetBuildStatus;

    pub(crate) fn schedule(yaml_spec: &str) -> DatasetBuildSchedule {
        let mut s: DatasetBuildSchedule = serde_yaml::from_str(&format!(
            "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuildSchedule\nmetadata: {{name: nightly, namespace: data, uid: u-1, generation: 2}}\nspec:\n{yaml_spec}"
        ))
        .unwrap();
        s.metadata.creation_timestamp = Some(Time("2024-01-01T00:00:00Z".parse().unwrap()));
        s
    }

    const SPEC: &str = r#"
  schedule: "30 2 * * *"
  timeZone: Europe/Paris
  buildTemplate:
    metadata:
      labels: {team: data, kube-dss.dev/schedule: spoofed}
      annotations: {note: kept}
    spec:
      projectKey: P
      outputs:
      - {id: orders, partition: "${slot-1d:%Y-%m-%d}|FR"}
      - {id: totals}
      rerunToken: "${slot:%Y-%m-%dT%H:%M}"
"#;

    fn build(spec: &str, slot: &str, origin: Origin) -> Result<DatasetBuild, TemplateError> {
        let s = schedule(spec);
        let parsed = Schedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref()).unwrap();
        let templates = Templates::parse(&s)?;
        build_for_slot(&s, &parsed, &templates, slot.parse().unwrap(), origin)
    }

    #[test]
    fn the_build_of_a_slot() {
        // 2024-03-31 02:30 Paris does not exist: the slot is 03:00 CEST, 01:00 UTC.
        let b = build(SPEC, "2024-03-31T01:00:00Z", Origin::Schedule).unwrap();
        let slot: Timestamp = "2024-03-31T01:00:00Z".parse().unwrap();
        assert_eq!(b.name_any(), format!("nightly-{}", slot.as_second() / 60));
        assert_eq!(b.namespace().as_deref(), Some("data"));
        assert_eq!(b.spec.outputs[0].partition.as_deref(), Some("2024-03-30|FR"));
        assert_eq!(b.spec.outputs[1].partition, None);
        assert_eq!(b.spec.rerun_token.as_deref(), Some("2024-03-31T03:00"));
        let labels = b.labels();
        assert_eq!(
            labels.get(SCHEDULE_LABEL).map(String::as_str),
            Some("nightly"),
            "ours win"
        );
        assert_eq!(labels.get(SLOT_LABEL), Some(&slot.as_second().to_string()));
        assert_eq!(labels.get("team").map(String::as_str), Some("data"));
        let annotations = b.annotations();
        assert_eq!(annotations.get("note").map(String::as_str), Some("kept"));
        assert_eq!(
            annotations.get(SCHEDULED_TIME_ANNOTATION).map(String::as_str),
            Some("2024-03-31T03:00:00+02:00[Europe/Paris]")
        );
        assert!(!annotations.contains_key(INSTANTIATE_ANNOTATION));
        let owner = &b.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("DatasetBuildSchedule", "nightly", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
        let manual = build(SPEC, "2024-03-31T01:00:00Z", Origin::Manual).unwrap();
        assert_eq!(
            manual.name_any(),
            b.name_any(),
            "a manual run of a slot names the same build"
        );
        assert_eq!(
            manual
                .annotations()
                .get(INSTANTIATE_ANNOTATION)
                .map(String::as_str),
            Some("manual")
        );
    }

    #[test]
    fn six_field_schedules_name_builds_by_the_second() {
        let spec = SPEC.replace("30 2 * * *", "*/5 * * * * *");
        let b = build(&spec, "2024-06-01T10:00:05Z", Origin::Schedule).unwrap();
        let slot: Timestamp = "2024-06-01T10:00:05Z".parse().unwrap();
        assert_eq!(b.name_any(), format!("nightly-{}", slot.as_second()));
    }

    #[test]
    fn an_expansion_that_is_no_partition_is_refused() {
        let spec = SPEC.replace("${slot-1d:%Y-%m-%d}|FR", "${slot:%Y %m}");
        let err = build(&spec, "2024-06-01T10:00:00Z", Origin::Schedule)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("outputs[0].partition expands to \"2024 06\""),
            "{err}"
        );
        assert!(err.contains("white space"), "{err}");
    }

    fn child(name: &str, slot: i64, phase: Option<Phase>, current: bool, deleting: bool) -> DatasetBuild {
        let mut b: DatasetBuild = serde_yaml::from_str(&format!(
            "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuild\nmetadata: {{name: {name}, uid: {name}-uid, generation: 3, labels: {{kube-dss.dev/slot: '{slot}'}}, ownerReferences: [{{apiVersion: kube-dss.dev/v1alpha1, kind: DatasetBuildSchedule, name: nightly, uid: u-1, controller: true}}]}}\nspec: {{projectKey: P, outputs: [{{id: d}}]}}"
        ))
        .unwrap();
        b.status = Some(DatasetBuildStatus {
            phase,
            observed_generation: Some(if current { 3 } else { 2 }),
            ..DatasetBuildStatus::default()
        });
        if deleting {
            b.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        b
    }

    #[test]
    fn children_states_and_history() {
        let s = schedule(SPEC);
        let mut foreign = child("other-1", 1, Some(Phase::Succeeded), true, false);
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "u-old".into();
        let builds = [
            child("n-5", 5, Some(Phase::Running), true, false),
            child("n-1", 1, Some(Phase::Succeeded), true, false),
            child("n-2", 2, Some(Phase::Failed), true, false),
            child("n-3", 3, Some(Phase::Succeeded), true, false),
            child("n-4", 4, Some(Phase::Aborted), true, false),
            child("n-6", 6, Some(Phase::Succeeded), false, false),
            child("n-7", 7, Some(Phase::Succeeded), true, true),
            child("n-8", 8, Some(Phase::Succeeded), true, false),
            foreign,
        ];
        let children = owned_children(&s, &builds);
        let states: Vec<(&str, State)> = children.iter().map(|c| (c.name.as_str(), c.state)).collect();
        assert_eq!(
            states,
            vec![
                ("n-1", State::Succeeded),
                ("n-2", State::Failed),
                ("n-3", State::Succeeded),
                ("n-4", State::Failed),
                ("n-5", State::Active),
                // A status for an older spec, or a build being deleted, is not finished.
                ("n-6", State::Active),
                ("n-7", State::Active),
                ("n-8", State::Succeeded),
            ],
            "sorted by slot, a namesake's old build left out"
        );
        let names = |keep_ok, keep_failed| -> Vec<String> {
            beyond_history(&children, keep_ok, keep_failed)
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names(3, 1), vec!["n-2"]);
        assert_eq!(names(1, 1), vec!["n-1", "n-2", "n-3"]);
        assert_eq!(names(0, 0), vec!["n-1", "n-2", "n-3", "n-4", "n-8"]);
        assert_eq!(names(10, 10), Vec::<String>::new());
    }
}
