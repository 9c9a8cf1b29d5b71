//! The act and record steps of a schedule reconcile: delete the builds a `Replace` removes, create
//! the builds of the slots the plan runs (oldest first), prune the history, write the whole status,
//! then publish the events and metrics of what the status recorded. A build that was created is
//! announced at once (a second attempt would find it and say nothing); skipped and missed slots are
//! announced only once the status that counts them is written, so a lost write never counts twice.

use std::time::Duration;

use jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Ctx, DEFAULT_FAILED_HISTORY, DEFAULT_SUCCESSFUL_HISTORY, Decision, MAX_WAIT, Valid,
    children::{self, Child, Created, Origin},
    manual,
    policy::{self, Wait},
    slots::MissedSlots,
    slots::{Due, Window},
    status::{self, Problem, Record},
};
use crate::{
    controller::{
        error::Error,
        events,
        run::contract::{STALLED, condition},
        run::vocabulary::{EventAction, EventReason},
    },
    crd::{CatchUp, DatasetBuild, DatasetBuildSchedule},
};

/// Events and metrics to publish once the status is written.
#[derive(Default)]
struct Later {
    events: Vec<(EventType, EventReason, String)>,
    /// The Warning about invalid input, with its `Stalled` reason.
    problem: Option<(&'static str, String)>,
    skipped: u64,
    missed: Option<(&'static str, u64)>,
}

/// Acts on a decision and records it; see the module doc.
pub(super) async fn run(
    schedule: &DatasetBuildSchedule,
    decision: Decision,
    mut children: Vec<Child>,
    builds: &Api<DatasetBuild>,
    ctx: &Ctx,
    now: Timestamp,
) -> Result<Action, Error> {
    let old = schedule.status.clone().unwrap_or_default();
    let mut record = Record {
        handled: old.last_handled_slot_time.map(|t| t.0),
        handled_schedule: old.last_handled_schedule.clone(),
        create_build: old.last_handled_create_build_annotation.clone(),
        ..Record::default()
    };
    let mut later = Later::default();
    let mut result = Ok(());
    let mut wake = None;
    match decision {
        Decision::Invalid(problem) => record.problem = Some(problem),
        Decision::Suspended(valid) => {
            result = manual::requested(schedule, &valid, builds, ctx, &mut children, &mut record).await;
        }
        Decision::Slots { valid, window, due } => {
            result = manual::requested(schedule, &valid, builds, ctx, &mut children, &mut record).await;
            record.handled = Some(window.after);
            record.handled_schedule = Some(valid.key.clone());
            record.next = due.next;
            let step = Slots {
                schedule,
                valid: &valid,
                builds,
                ctx,
            };
            match step
                .run(&window, &due, &mut children, &mut record, &mut later)
                .await
            {
                Ok(w) => wake = w,
                Err(e) => result = result.and(Err(e)),
            }
        }
    }
    if let Some(problem) = &record.problem {
        let was = schedule
            .status
            .as_ref()
            .and_then(|s| condition(&s.conditions, STALLED));
        if was.is_none_or(|c| c.status != "True" || c.message != problem.message) {
            later.problem = Some((problem.reason, problem.message.clone()));
        }
    }
    if let Err(e) = prune(schedule, &children, builds).await {
        result = result.and(Err(e));
    }
    let status = status::desired(schedule, &children, &record, now);
    if Some(&status) != schedule.status.as_ref() {
        let api: Api<DatasetBuildSchedule> =
            Api::namespaced(ctx.kube.clone(), &schedule.namespace().unwrap_or_default());
        match status::write(&api, schedule, &status, schedule.resource_version().as_deref()).await {
            // A newer copy exists: it is reconciled next, and decides again.
            Err(e) if e.is_conflict() => return Ok(Action::requeue(Duration::from_secs(1))),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    publish(schedule, ctx, later).await;
    result?;
    Ok(next_action(&record, wake))
}

/// The slot work of one reconcile.
struct Slots<'a> {
    schedule: &'a DatasetBuildSchedule,
    valid: &'a Valid,
    builds: &'a Api<DatasetBuild>,
    ctx: &'a Ctx,
}

impl Slots<'_> {
    /// Decides the missed and skipped slots, replaces or waits per the policy, creates the builds
    /// of the slots that run. Returns when to look again for a waiting slot.
    async fn run(
        &self,
        window: &Window,
        due: &Due,
        children: &mut Vec<Child>,
        record: &mut Record,
        later: &mut Later,
    ) -> Result<Option<Wake>, Error> {
        let spec = &self.schedule.spec;
        record.missed = due.missed;
        record.skipped = due.skipped;
        record.handled = record.handled.max(due.decided_through);
        self.announce_decided(window, due, later);
        let plan = policy::plan(
            &due.runnable,
            spec.concurrency_policy.unwrap_or_default(),
            children,
        );
        for name in &plan.delete {
            if let Some(child) = children.iter().find(|c| &c.name == name) {
                children::delete(self.builds, child).await?;
                let note = format!(
                    "deleted the active build {name} (its DSS job is aborted per its deletionPolicy) to start the slot {} (concurrencyPolicy: Replace)",
                    self.slot_text(plan.waiting.map_or(window.now, |w| w.0))
                );
                events::publish_about(
                    &self.ctx.recorder,
                    self.schedule,
                    &child.reference,
                    EventType::Normal,
                    EventReason::BuildReplaced,
                    EventAction::ReplaceBuild,
                    note,
                )
                .await;
            }
        }
        record.pending = plan.waiting.map(|(slot, _)| slot);
        if let Some((slot, Wait::Forbidden)) = plan.waiting {
            self.announce_forbidden(slot, children, later);
        }
        for &slot in &plan.create {
            if let Err(e) = self.create(slot, children, record).await {
                record.pending = Some(slot);
                return Err(e);
            }
            if record.problem.is_some() {
                record.pending = Some(slot);
                return Ok(None);
            }
        }
        let deadline = window.starting_deadline;
        Ok(plan.waiting.map(|(slot, wait)| Wake {
            replacing: wait == Wait::Replacing,
            skip_at: deadline.and_then(|d| slot.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok()),
        }))
    }

    /// Creates the build of one slot. An invalid template (or a build the apiserver refuses as
    /// invalid) is recorded as the problem, not returned.
    async fn create(
        &self,
        slot: Timestamp,
        children: &mut Vec<Child>,
        record: &mut Record,
    ) -> Result<(), Error> {
        let v = self.valid;
        let build =
            match children::build_for_slot(self.schedule, &v.parsed, &v.templates, slot, Origin::Schedule) {
                Ok(b) => b,
                Err(e) => {
                    record.problem = Some(Problem::template(e.to_string()));
                    return Ok(());
                }
            };
        match children::create(self.builds, &build, self.schedule.uid().as_deref()).await {
            Ok(Created::New(created)) => {
                let lag = Timestamp::now().duration_since(slot);
                self.ctx
                    .metrics
                    .schedule_build_created(Duration::try_from(lag).unwrap_or_default());
                let note = format!(
                    "created the build {} for the slot {} ({}s after it)",
                    created.name_any(),
                    self.slot_text(slot),
                    lag.as_secs().max(0)
                );
                events::publish_about(
                    &self.ctx.recorder,
                    self.schedule,
                    &created.object_ref(&()),
                    EventType::Normal,
                    EventReason::BuildCreated,
                    EventAction::CreateBuild,
                    note,
                )
                .await;
                children.extend(children::owned_children(self.schedule, [created.as_ref()]));
            }
            Ok(Created::Existed) => {}
            Ok(Created::Invalid(message)) => {
                let slot = self.slot_text(slot);
                let message = format!("the build of the slot {slot} is refused: {message}");
                record.problem = Some(Problem::template(message));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        record.handled = record.handled.max(Some(slot));
        record.created = record.created.max(Some(slot));
        Ok(())
    }

    /// Queues `ConcurrencyForbidden` when a slot starts to wait (not again while the same one does).
    fn announce_forbidden(&self, slot: Timestamp, children: &[Child], later: &mut Later) {
        let status = self.schedule.status.as_ref();
        if status.and_then(|s| s.pending_slot.as_ref()).map(|t| t.0) == Some(slot) {
            return;
        }
        let active: Vec<&str> = children
            .iter()
            .filter(|c| c.state == children::State::Active)
            .map(|c| c.name.as_str())
            .collect();
        let waits_for = if active.is_empty() {
            "created now".to_string()
        } else {
            active.join(", ")
        };
        let note = format!(
            "the slot {} waits for the active build {waits_for} to finish (concurrencyPolicy: Forbid)",
            self.slot_text(slot)
        );
        later
            .events
            .push((EventType::Normal, EventReason::ConcurrencyForbidden, note));
    }

    /// Queues the events and metrics of the skipped and missed slots.
    fn announce_decided(&self, window: &Window, due: &Due, later: &mut Later) {
        let at_least = if due.counts_capped { "at least " } else { "" };
        if due.skipped > 0 {
            let note = format!(
                "{at_least}{} slot(s) skipped: they could not start within startingDeadlineSeconds={} (the newest: {})",
                due.skipped,
                window.starting_deadline.map_or(0, |d| d.as_secs()),
                due.newest_skipped.map_or_else(String::new, |s| self.slot_text(s)),
            );
            later
                .events
                .push((EventType::Warning, EventReason::SlotSkipped, note));
            later.skipped = due.skipped;
        }
        if due.missed > 0 {
            if window.catch_up == CatchUp::All {
                let note = format!(
                    "{at_least}{} missed slot(s) are beyond maxCatchUpRuns={}: they are not run; the newest {} run, oldest first",
                    due.missed, window.max_catch_up_runs, window.max_catch_up_runs
                );
                later
                    .events
                    .push((EventType::Warning, EventReason::TooManyMissedSlots, note));
                later.missed = Some((MissedSlots::MaxCatchUpRuns.as_str(), due.missed));
            } else {
                later.missed = Some((MissedSlots::CatchUpLatest.as_str(), due.missed));
            }
        }
    }

    /// A slot as shown to users: its time in the schedule's zone.
    fn slot_text(&self, slot: Timestamp) -> String {
        slot.to_zoned(self.valid.parsed.tz().clone()).to_string()
    }
}

/// When to look again for a waiting slot.
#[derive(Clone, Copy, Debug)]
struct Wake {
    /// A replaced build is being deleted (its abort takes a moment).
    replacing: bool,
    /// The waiting slot passes its starting deadline.
    skip_at: Option<Timestamp>,
}

/// Deletes the finished builds beyond the history limits (their own finalizers handle their jobs).
async fn prune(
    schedule: &DatasetBuildSchedule,
    children: &[Child],
    builds: &Api<DatasetBuild>,
) -> Result<(), Error> {
    let limit = |n: Option<i32>, default| n.and_then(|n| usize::try_from(n).ok()).unwrap_or(default);
    let spec = &schedule.spec;
    let succeeded = limit(spec.successful_builds_history_limit, DEFAULT_SUCCESSFUL_HISTORY);
    let failed = limit(spec.failed_builds_history_limit, DEFAULT_FAILED_HISTORY);
    for child in children::beyond_history(children, succeeded, failed) {
        tracing::debug!(build = %child.name, "deleting a build beyond the history limits");
        children::delete(builds, child).await?;
    }
    Ok(())
}

async fn publish(schedule: &DatasetBuildSchedule, ctx: &Ctx, later: Later) {
    if later.skipped > 0 {
        ctx.metrics.schedule_slots_skipped(later.skipped);
    }
    if let Some((why, n)) = later.missed {
        ctx.metrics.schedule_slots_missed(why, n);
    }
    for (type_, reason, note) in later.events {
        events::publish(
            &ctx.recorder,
            schedule,
            type_,
            reason,
            EventAction::ScheduleSlots,
            note,
        )
        .await;
    }
    if let Some((reason, note)) = later.problem {
        let action = EventAction::ScheduleSlots.as_str();
        let reference = schedule.object_ref(&());
        events::publish_to(
            &ctx.recorder,
            &reference,
            EventType::Warning,
            reason,
            action,
            note,
        )
        .await;
    }
}

/// Requeue at the next slot, or sooner for a waiting slot; never later than [`MAX_WAIT`].
fn next_action(record: &Record, wake: Option<Wake>) -> Action {
    let now = Timestamp::now();
    let until = |t: Timestamp| Duration::try_from(t.duration_since(now)).unwrap_or_default();
    // A little past the slot, so that it is due (not a moment early) when the reconcile runs.
    let margin = Duration::from_millis(50);
    let mut wait = MAX_WAIT;
    if let Some(next) = record.next {
        wait = wait.min(until(next) + margin);
    }
    if let Some(wake) = wake {
        if wake.replacing {
            wait = wait.min(Duration::from_secs(2));
        }
        if let Some(t) = wake.skip_at {
            wait = wait.min(until(t) + Duration::from_secs(1));
        }
    }
    Action::requeue(wait)
}
