//! Builds asked for by hand: the `kube-dss.dev/create-build` annotation (stamped by the Argo CD action
//! `create-build`) asks for the build of the slot at its time, an RFC 3339 time taken down to the
//! schedule's naming unit, once per distinct value, as `kube-dss schedules run --slot` does. The same
//! naming rule applies, so a request can never double a slot that already has its build.

use jiff::Timestamp;
use kube::{Api, Resource, ResourceExt, runtime::events::EventType};

use super::{
    Ctx, Valid,
    children::{self, Child, Created, Origin},
    slots,
    status::{Problem, Record},
};
use crate::{
    controller::{
        error::Error,
        events,
        run::vocabulary::{EventAction, EventReason},
    },
    crd::{CREATE_BUILD_ANNOTATION, DatasetBuild, DatasetBuildSchedule},
};

/// Acts on a new `kube-dss.dev/create-build` value, recording it as handled in `record`.
pub(super) async fn requested(
    schedule: &DatasetBuildSchedule,
    valid: &Valid,
    builds: &Api<DatasetBuild>,
    ctx: &Ctx,
    children: &mut Vec<Child>,
    record: &mut Record,
) -> Result<(), Error> {
    let Some(value) = schedule.annotations().get(CREATE_BUILD_ANNOTATION) else {
        return Ok(());
    };
    if record.create_build.as_deref() == Some(value.as_str()) {
        return Ok(());
    }
    let Ok(at) = value.parse::<Timestamp>() else {
        let note = format!(
            "{CREATE_BUILD_ANNOTATION}={value:?} is not an RFC 3339 time such as 2024-03-30T02:00:00Z: nothing created"
        );
        let (reason, action) = (EventReason::CreateBuildRefused, EventAction::CreateBuild);
        events::publish(&ctx.recorder, schedule, EventType::Warning, reason, action, note).await;
        record.create_build = Some(value.clone());
        return Ok(());
    };
    let slot = slots::truncate(at, valid.parsed.unit());
    let slot_text = slot.to_zoned(valid.parsed.tz().clone()).to_string();
    let build =
        match children::build_for_slot(schedule, &valid.parsed, &valid.templates, slot, Origin::Manual) {
            Ok(b) => b,
            Err(e) => {
                // The request waits for the template to be fixed.
                record.problem = Some(Problem::template(e.to_string()));
                return Ok(());
            }
        };
    match children::create(builds, &build, schedule.uid().as_deref()).await? {
        Created::New(created) => {
            let note = format!(
                "created the build {} for the slot {slot_text}, as {CREATE_BUILD_ANNOTATION} asked",
                created.name_any()
            );
            publish_about(ctx, schedule, &created, EventReason::BuildCreated, note).await;
            children.extend(children::owned_children(schedule, [created.as_ref()]));
        }
        Created::Existed => {
            let note = format!(
                "the build {} of the slot {slot_text} exists already: nothing created (delete it to build that slot again)",
                build.name_any()
            );
            publish_about(ctx, schedule, &build, EventReason::BuildExists, note).await;
        }
        Created::Invalid(message) => {
            let message = format!("the build of the slot {slot_text} is refused: {message}");
            record.problem = Some(Problem::template(message));
            return Ok(());
        }
    }
    record.create_build = Some(value.clone());
    Ok(())
}

/// Publishes a Normal event about `schedule` whose request concerned `build`.
async fn publish_about(
    ctx: &Ctx,
    schedule: &DatasetBuildSchedule,
    build: &DatasetBuild,
    reason: EventReason,
    note: String,
) {
    let related = build.object_ref(&());
    events::publish_about(
        &ctx.recorder,
        schedule,
        &related,
        EventType::Normal,
        reason,
        EventAction::CreateBuild,
        note,
    )
    .await;
}
