//! The DatasetBuildSchedule controller: one `DatasetBuild` per cron slot, in the schedule's time zone,
//! with a catch-up of missed slots, a concurrency policy and history limits. It runs beside the
//! DatasetBuild controller, which then runs each build like any other.
//!
//! Pipeline of a reconcile ([`apply`]): validate (cron, time zone, placeholders: invalid input sets
//! `Stalled`) -> observe (the schedule's builds, from the watch cache) -> decide ([`slots::slots_due`],
//! then [`policy::plan`]; when anything is due, both again on a fresh read of the schedule and its
//! builds) -> act (create, replace and prune builds: [`execute`], [`children`]) -> record the whole status
//! ([`status`], with a resourceVersion precondition) -> publish events.
//!
//! Deleting a schedule deletes its builds (finalizer `kube-dss.dev/delete-builds`; each build's own
//! finalizer then handles its DSS job per its deletionPolicy), unless the deletion orphans them.

pub(crate) mod children;
mod execute;
mod manual;
mod policy;
pub(crate) mod slots;
mod status;
pub(crate) mod template;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;

use self::{
    children::{Child, Templates},
    slots::{Due, Schedule, Window},
    status::Problem,
};
use super::{
    backoff::ErrorBackoff,
    error::{Error, from_finalizer},
    events,
    execute::now_seconds,
    metrics::Metrics,
    run::vocabulary::EventAction,
};
use crate::crd::{
    CatchUp, ConcurrencyPolicy, DatasetBuild, DatasetBuildSchedule, SCHEDULE_FINALIZER, SCHEDULE_LABEL,
};

/// Defaults of the spec (documented on the CRD fields).
const DEFAULT_MAX_CATCH_UP_RUNS: usize = 31;
const DEFAULT_SUCCESSFUL_HISTORY: usize = 3;
const DEFAULT_FAILED_HISTORY: usize = 1;
/// The longest wait between two reconciles of a schedule (a safety net: slots and builds wake it).
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Shared state of the schedule reconciler.
pub(crate) struct Ctx {
    kube: Client,
    recorder: events::Recorder,
    metrics: Arc<Metrics>,
    backoff: ErrorBackoff,
    /// The builds that carry the schedule label, from the watch cache.
    builds: Store<DatasetBuild>,
}

/// The DatasetBuildSchedule controller of one watch scope: the future that runs it until
/// `shutdown`, and a future that resolves once its caches are synced.
pub(crate) fn controller(
    client: Client,
    namespace: Option<&str>,
    recorder: events::Recorder,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (
    impl Future<Output = ()> + Send + use<>,
    impl Future<Output = ()> + Send + use<>,
) {
    let (schedules, builds): (Api<DatasetBuildSchedule>, Api<DatasetBuild>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let wc = watcher::Config::default().any_semantic();
    // Only builds that carry the schedule label are watched (and cached without managedFields).
    let (build_store, writer) = reflector::store();
    let owned = watcher(builds, wc.clone().labels(SCHEDULE_LABEL))
        .default_backoff()
        .modify(|b: &mut DatasetBuild| {
            b.managed_fields_mut().clear();
            b.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .touched_objects();
    let ctl = Controller::new(schedules, wc)
        .owns_stream(owned)
        .with_config(controller::Config::default().concurrency(8));
    let schedule_store = ctl.store();
    let ctx = Arc::new(Ctx {
        kube: client,
        recorder,
        metrics,
        backoff: ErrorBackoff::default(),
        builds: build_store.clone(),
    });
    let ready = async move {
        synced(&schedule_store).await;
        synced(&build_store).await;
    };
    let report_ctx = ctx.clone();
    let run = ctl
        .graceful_shutdown_on(super::process::stopped(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(move |res| report(res, report_ctx.clone()));
    (run, ready)
}

/// Resolves once `store` has its first full list. The controller's runner waits on the same store,
/// and a store wakes only its latest waiter: re-poll with a timeout instead of parking once.
async fn synced<K: kube::Resource + Clone>(store: &Store<K>)
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
            Ok(Ok(())) => return,
            // The store's writer is gone: the controller stopped and will never be ready.
            Ok(Err(_)) => std::future::pending::<()>().await,
            Err(_) => {}
        }
    }
}

/// Reconciles one schedule (its finalizer first).
async fn reconcile(schedule: Arc<DatasetBuildSchedule>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.metrics.reconciled("datasetbuildschedule");
    let uid = schedule.uid().unwrap_or_default();
    let api: Api<DatasetBuildSchedule> =
        Api::namespaced(ctx.kube.clone(), &schedule.namespace().unwrap_or_default());
    let result = finalizer(&api, SCHEDULE_FINALIZER, schedule, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &ctx).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer);
    match result {
        Ok(action) => {
            ctx.backoff.reset(&uid);
            Ok(action)
        }
        // Another replica changed the finalizers between this copy and the patch (the helper's
        // JSON patch test failed): the next reconcile sees its change. Not worth a Warning.
        Err(Error::Kube {
            operation: "patch finalizer",
            source: kube::Error::Api(s),
        }) if s.code == 422 || s.code == 409 => Ok(Action::requeue(Duration::from_secs(1))),
        Err(e) => Err(e),
    }
}

fn error_policy(schedule: Arc<DatasetBuildSchedule>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.reconcile_error(err.category());
    Action::requeue(ctx.backoff.next(&schedule.uid().unwrap_or_default()))
}

/// Logs every reconcile outcome and turns failures into Warning events.
async fn report(
    res: Result<(ObjectRef<DatasetBuildSchedule>, Action), controller::Error<Error, watcher::Error>>,
    ctx: Arc<Ctx>,
) {
    match res {
        Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
        Err(controller::Error::ReconcilerFailed(err, obj)) => {
            tracing::warn!(object = %obj, category = err.category(), error = %err.chain(), "reconcile failed");
            let reference = (*obj).into();
            let note = err.chain();
            events::publish_to(
                &ctx.recorder,
                &reference,
                EventType::Warning,
                err.category(),
                EventAction::Reconcile.as_str(),
                note,
            )
            .await;
        }
        // A schedule deleted while its reconcile was queued.
        Err(err @ controller::Error::ObjectNotFound(_)) => tracing::debug!(error = %err, "schedule gone"),
        Err(err) => tracing::warn!(error = %err, "schedule controller error"),
    }
}

/// A schedule whose input is valid.
struct Valid {
    parsed: Schedule,
    templates: Templates,
    /// The schedule and zone, to tell an edit (`status.lastHandledSchedule`).
    key: String,
}

/// What the pure part concluded for one copy of the schedule.
enum Decision {
    Invalid(Problem),
    Suspended(Box<Valid>),
    Slots {
        valid: Box<Valid>,
        window: Window,
        due: Due,
    },
}

impl Decision {
    /// Something is to be created, skipped or missed: act on a fresh read, not on the cache.
    fn is_due(&self) -> bool {
        matches!(self, Decision::Slots { due, .. } if !due.runnable.is_empty() || due.decided_through.is_some())
    }
}

fn validate(schedule: &DatasetBuildSchedule, now: Timestamp) -> Result<Valid, Problem> {
    let spec = &schedule.spec;
    let invalid = |e: slots::InvalidSchedule| Problem {
        reason: e.reason(),
        message: e.to_string(),
    };
    let parsed = Schedule::parse(&spec.schedule, spec.time_zone.as_deref()).map_err(invalid)?;
    if parsed.after(now).map_err(invalid)?.is_none() {
        return Err(invalid(slots::InvalidSchedule::NeverDue(spec.schedule.clone())));
    }
    let templates = Templates::parse(schedule).map_err(|e| Problem::template(e.to_string()))?;
    let key = format!(
        "{} {}",
        spec.schedule.trim(),
        spec.time_zone.as_deref().unwrap_or("UTC")
    );
    Ok(Valid {
        parsed,
        templates,
        key,
    })
}

/// The slots to decide on: after the last handled one (or the creation of the schedule), or from
/// now when `schedule` or `timeZone` was edited since.
fn window(schedule: &DatasetBuildSchedule, key: &str, now: Timestamp) -> Window {
    let spec = &schedule.spec;
    let status = schedule.status.clone().unwrap_or_default();
    let created = schedule.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let handled = status.last_handled_slot_time.map_or(created, |t| t.0);
    let edited = status.last_handled_schedule.as_deref().is_some_and(|k| k != key);
    let policy = spec.concurrency_policy.unwrap_or_default();
    Window {
        after: if edited { handled.max(now) } else { handled },
        now,
        starting_deadline: spec
            .starting_deadline_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
        // Under Replace each run would abort the one before: only the newest slot is worth running.
        catch_up: if policy == ConcurrencyPolicy::Replace {
            CatchUp::Latest
        } else {
            spec.catch_up.unwrap_or_default()
        },
        max_catch_up_runs: spec
            .max_catch_up_runs
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_CATCH_UP_RUNS),
    }
}

/// Decides on a copy of the schedule and the builds it has.
fn decide(schedule: &DatasetBuildSchedule, children: &[Child], now: Timestamp) -> Decision {
    let valid = match validate(schedule, now) {
        Ok(v) => v,
        Err(problem) => return Decision::Invalid(problem),
    };
    if schedule.spec.suspend == Some(true) {
        return Decision::Suspended(Box::new(valid));
    }
    let window = window(schedule, &valid.key, now);
    // A build can exist for a slot the status does not record as handled (the write that would have
    // was refused): such a slot is built, never missed nor skipped.
    let built: BTreeSet<Timestamp> = children.iter().filter_map(|c| c.slot).collect();
    match slots::slots_due(&valid.parsed, &window, &built) {
        Ok(due) => Decision::Slots {
            valid: Box::new(valid),
            window,
            due,
        },
        Err(e) => Decision::Invalid(Problem {
            reason: e.reason(),
            message: e.to_string(),
        }),
    }
}

/// One reconcile of a live schedule.
async fn apply(schedule: &DatasetBuildSchedule, ctx: &Ctx) -> Result<Action, Error> {
    let now = now_seconds();
    let ns = schedule.namespace().unwrap_or_default();
    let builds: Api<DatasetBuild> = Api::namespaced(ctx.kube.clone(), &ns);
    let cached = children::owned_children(schedule, ctx.builds.state().iter().map(|b| b.as_ref()));
    let decision = decide(schedule, &cached, now);
    if decision.is_due() {
        // The cache may lag behind this operator's own last write (or another replica's): decide
        // again on what the apiserver has now, so a slot is never acted on twice.
        let api: Api<DatasetBuildSchedule> = Api::namespaced(ctx.kube.clone(), &ns);
        let fresh = api
            .get(&schedule.name_any())
            .await
            .map_err(Error::kube("read the schedule"))?;
        if fresh.uid() != schedule.uid() || fresh.metadata.deletion_timestamp.is_some() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let children = children::list_fresh(&builds, &fresh).await?;
        let decision = decide(&fresh, &children, now);
        return execute::run(&fresh, decision, children, &builds, ctx, now).await;
    }
    execute::run(schedule, decision, cached, &builds, ctx, now).await
}

/// Deletion: the schedule's builds go too (each per its deletionPolicy), unless orphaned.
async fn cleanup(schedule: &DatasetBuildSchedule, ctx: &Ctx) -> Result<Action, Error> {
    if schedule.finalizers().iter().any(|f| f == "orphan") {
        return Ok(Action::await_change());
    }
    let builds: Api<DatasetBuild> =
        Api::namespaced(ctx.kube.clone(), &schedule.namespace().unwrap_or_default());
    for child in children::list_fresh(&builds, schedule).await? {
        if !child.deleting {
            children::delete(&builds, &child).await?;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::DatasetBuildScheduleStatus;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn schedule(extra: &str, status: Option<DatasetBuildScheduleStatus>) -> DatasetBuildSchedule {
        let mut s: DatasetBuildSchedule = serde_yaml::from_str(&format!(
            "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuildSchedule\nmetadata: {{name: n}}\nspec:\n  schedule: '0 * * * *'\n  buildTemplate: {{spec: {{projectKey: P, outputs: [{{id: d, partition: '${{slot:%Y-%m-%d}}'}}]}}}}\n{extra}"
        ))
        .unwrap();
        s.metadata.creation_timestamp = Some(Time(t("2024-06-01T00:30:00Z")));
        s.status = status;
        s
    }

    fn handled(at: &str, key: &str) -> Option<DatasetBuildScheduleStatus> {
        Some(DatasetBuildScheduleStatus {
            last_handled_slot_time: Some(Time(t(at))),
            last_handled_schedule: Some(key.into()),
            ..DatasetBuildScheduleStatus::default()
        })
    }

    fn runnable(d: &Decision) -> Vec<Timestamp> {
        match d {
            Decision::Slots { due, .. } => due.runnable.clone(),
            _ => panic!("not a slot decision"),
        }
    }

    #[test]
    fn decisions_on_the_whole_schedule() {
        let now = t("2024-06-01T03:10:00Z");
        // A new schedule counts its slots from its creation.
        let fresh = decide(&schedule("", None), &[], now);
        assert_eq!(runnable(&fresh), vec![t("2024-06-01T03:00:00Z")]);
        assert!(fresh.is_due());
        // Nothing due after the last handled slot: no fresh read needed.
        let quiet = decide(
            &schedule("", handled("2024-06-01T03:00:00Z", "0 * * * * UTC")),
            &[],
            now,
        );
        assert!(runnable(&quiet).is_empty() && !quiet.is_due());
        // An edit of the schedule applies from its next slot: the edited schedule's slots between
        // the last handled one and now are not missed slots.
        let edited = decide(
            &schedule("", handled("2024-06-01T01:00:00Z", "*/5 * * * * UTC")),
            &[],
            now,
        );
        assert!(runnable(&edited).is_empty() && !edited.is_due());
        let same = decide(
            &schedule("", handled("2024-06-01T01:00:00Z", "0 * * * * UTC")),
            &[],
            now,
        );
        assert_eq!(runnable(&same), vec![t("2024-06-01T03:00:00Z")]);
        // Suspended: nothing is decided (and so the slots wait for the resume).
        assert!(matches!(
            decide(&schedule("  suspend: true\n", None), &[], now),
            Decision::Suspended(_)
        ));
        // Replace runs only the newest missed slot, whatever catchUp says.
        let replace = decide(
            &schedule(
                "  concurrencyPolicy: Replace\n  catchUp: All\n",
                handled("2024-06-01T00:00:00Z", "0 * * * * UTC"),
            ),
            &[],
            now,
        );
        assert_eq!(runnable(&replace), vec![t("2024-06-01T03:00:00Z")]);
    }

    #[test]
    fn a_built_slot_the_status_does_not_record_is_not_skipped() {
        // The build of 01:00 exists, but the status write that recorded it was refused.
        let now = t("2024-06-01T03:10:00Z");
        let s = schedule("  startingDeadlineSeconds: 600\n", None);
        let skipped = |d: &Decision| match d {
            Decision::Slots { due, .. } => due.skipped,
            _ => panic!("not a slot decision"),
        };
        assert_eq!(skipped(&decide(&s, &[], now)), 2, "01:00 and 02:00 are too late");
        let built = Child {
            name: "n-28615740".into(),
            uid: None,
            slot: Some(t("2024-06-01T01:00:00Z")),
            state: children::State::Succeeded,
            deleting: false,
            completed: None,
            reference: Default::default(),
        };
        let d = decide(&s, &[built], now);
        assert_eq!(skipped(&d), 1, "only 02:00: 01:00 was built");
        assert_eq!(runnable(&d), vec![t("2024-06-01T03:00:00Z")]);
    }

    #[test]
    fn invalid_input_is_a_problem_with_a_reason() {
        let now = t("2024-06-01T03:10:00Z");
        let cases = [
            ("  timeZone: Mars/Olympus\n", "InvalidTimeZone", "Mars/Olympus"),
            ("  timeZone: Europe/Paris\n", "", ""),
        ];
        for (extra, reason, says) in cases {
            match decide(&schedule(extra, None), &[], now) {
                Decision::Invalid(p) => {
                    assert_eq!(p.reason, reason, "{extra}");
                    assert!(p.message.contains(says), "{}", p.message);
                }
                _ => assert!(reason.is_empty(), "{extra} should be refused"),
            }
        }
        let mut bad = schedule("", None);
        bad.spec.schedule = "0 0 30 2 *".into();
        assert!(
            matches!(decide(&bad, &[], now), Decision::Invalid(p) if p.reason == "InvalidSchedule" && p.message.contains("no slot in the future"))
        );
        let mut bad = schedule("", None);
        bad.spec.build_template.spec.rerun_token = Some("${slot:%Y".into());
        assert!(
            matches!(decide(&bad, &[], now), Decision::Invalid(p) if p.reason == "InvalidTemplate" && p.message.contains("rerunToken"))
        );
    }
}
