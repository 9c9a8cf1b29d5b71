//! Record: write the whole status by server-side apply, only when it changed, with a resourceVersion
//! precondition on every write (a replica or a reconcile working from a stale copy can never roll the
//! status back and, say, erase a recorded run, which would start a second one); then publish the
//! events, count the signals and say when to look again.

use std::time::Duration;

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use rand::Rng;
use serde_json::json;

use super::{Pass, RunKind};
use crate::{
    controller::{
        error::Error,
        events::{self, Recorder},
        run::{Event, Next, Wake, plan},
    },
    crd::FIELD_MANAGER,
};

/// Writes the start request the core recorded, before it is sent. False when a newer copy of the
/// object exists (409): nothing may be sent then.
pub(crate) async fn record_start<K: RunKind>(
    pass: &mut Pass<'_, K>,
    api: &Api<K::Resource>,
) -> Result<bool, Error> {
    let status = pass.to_write();
    match write_status(api, pass.res, &status, pass.rv.as_deref()).await {
        Ok(rv) => {
            pass.rv = rv;
            pass.written = Some(status);
            Ok(true)
        }
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Records the status (only when it changed), publishes the events, counts the signals and returns
/// when to look again.
pub(crate) async fn record<K: RunKind>(
    pass: &mut Pass<'_, K>,
    api: &Api<K::Resource>,
    next: Next,
) -> Result<Action, Error> {
    let uid = pass.uid();
    let status = pass.to_write();
    if pass.written.as_ref() != Some(&status) {
        match write_status(api, pass.res, &status, pass.rv.as_deref()).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() && pass.started => rewrite_started(pass, api, &status, e).await?,
            Err(e) if e.is_conflict() => {
                // A newer copy exists: it is reconciled next; transitions are seen again there.
                tracing::debug!("status write lost a resourceVersion race; requeueing");
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            Err(e) => return Err(e),
        }
    }
    let ctx = pass.ctx;
    match plan::in_flight(&pass.status) {
        Some(request) if pass.queued => ctx.starts.queued(&uid, request),
        Some(_) => {}
        None => ctx.starts.forget(&uid),
    }
    if plan::active(&pass.status).is_none() {
        ctx.sightings.clear(&uid);
    }
    if pass.blocker.is_none() {
        ctx.shared.backoff.reset(&uid);
    }
    for signal in pass.signals.drain(..) {
        K::count(ctx.shared.metrics.as_ref(), signal);
    }
    for e in pass.events.drain(..) {
        publish(&ctx.shared.recorder, pass.res, e).await;
    }
    Ok(match next {
        Next::Wait(wake) => action(wake, || ctx.shared.backoff.next(&uid)),
        _ => Action::requeue(Duration::from_secs(1)),
    })
}

/// Publishes one of the core's events about `res`.
pub(crate) async fn publish<R: Resource<DynamicType = ()>>(recorder: &Recorder, res: &R, e: Event) {
    let type_ = if e.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    events::publish(recorder, res, type_, e.reason, e.action, e.note).await;
}

/// The object changed (an edit, a label) between recording the start request and recording the new
/// run. The status is ours alone: write it again on the newest version rather than lose the handle
/// of a run that now exists, provided the newest version still carries the request that was sent.
async fn rewrite_started<K: RunKind>(
    pass: &Pass<'_, K>,
    api: &Api<K::Resource>,
    status: &K::Status,
    conflict: Error,
) -> Result<(), Error> {
    // A plain GET: the status subresource is only ever written (the chart grants no read of it).
    let latest = api
        .get(&pass.res.name_any())
        .await
        .map_err(Error::kube("read object"))?;
    if K::read(&latest).start_request != pass.sent {
        return Err(conflict);
    }
    write_status(api, pass.res, status, latest.resource_version().as_deref()).await?;
    Ok(())
}

/// When to look again.
fn action(wake: Wake, backoff: impl FnOnce() -> Duration) -> Action {
    match wake {
        Wake::After(d) => Action::requeue(d),
        Wake::About(d) => Action::requeue(d.mul_f64(rand::rng().random_range(0.9..1.1))),
        Wake::OnChange => Action::await_change(),
        Wake::Backoff { at_least } => {
            let b = backoff();
            Action::requeue(at_least.map_or(b, |r| r.max(b)))
        }
    }
}

/// Writes the whole status by server-side apply and returns the new resourceVersion. With
/// `resource_version`, the write only succeeds if the object is unchanged since it was read (409
/// otherwise).
pub(crate) async fn write_status<R, S>(
    api: &Api<R>,
    res: &R,
    status: &S,
    resource_version: Option<&str>,
) -> Result<Option<String>, Error>
where
    R: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let mut metadata = json!({ "name": res.name_any() });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    let patch = json!({
        "apiVersion": R::api_version(&()),
        "kind": R::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &res.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|written| written.resource_version())
    .map_err(Error::kube("write status"))
}
