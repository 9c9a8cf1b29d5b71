//! Cleanup: the deletion path. The run core names the step (`run::cleanup`); this performs it: look
//! for a lost start's run, ask DSS for the run's state, abort it, and finally let the finalizer go.
//! Bounded: past `--finalizer-timeout-seconds` with DSS unreachable or the credentials gone, the core
//! releases anyway, with a Warning event and a metric.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{Look, RunKind, record::write_status};
use crate::{
    controller::{
        connections::Resolved,
        context::RunContext,
        error::Error,
        events,
        run::{
            Current, RunStatus, Search, Trouble,
            cleanup::{self, Cleanup, Deleting, Forced, Learned},
            contract,
            fold::whole_seconds,
            plan::elapsed,
            vocabulary::{EventAction, EventReason},
        },
    },
    crd::{AbortReason, AbortRequest},
};

/// The most DSS calls one cleanup pass makes (search, status, abort).
const MAX_STEPS: usize = 6;

/// Aborts the run (Abort policy), confirms a terminal state, then lets the finalizer go.
pub(crate) async fn cleanup<K: RunKind>(
    res: &K::Resource,
    api: &Api<K::Resource>,
    ctx: &RunContext<K>,
) -> Result<Action, Error> {
    let controls = K::controls(res);
    let status = K::read(res);
    let uid = res.uid().unwrap_or_default();
    let settings = &ctx.shared.settings;
    let process = ctx.starts.process(&uid, &status, settings.run.start_grace);
    let now = Timestamp::now();
    let since = res.meta().deletion_timestamp.as_ref().map_or(now, |t| t.0);
    let overdue = elapsed(since, now) > settings.finalizer_timeout;
    let mut state = cleanup::deleting(&controls, &status, &process);
    let mut learned = Learned::Nothing;
    let mut conn = None;
    let mut last_error = None;
    for _ in 0..MAX_STEPS {
        let step = cleanup::next(
            &state,
            learned,
            overdue,
            status.abort_request.is_some(),
            now,
            &settings.run,
        );
        tracing::debug!(?step, "cleanup");
        learned = match step {
            Cleanup::Release {
                note,
                warning,
                forced,
            } => return release(ctx, res, &uid, note, warning, forced).await,
            Cleanup::Observe(next) => {
                state = next;
                look(ctx, res, &mut conn, &state, &mut last_error).await
            }
            Cleanup::Abort => abort(ctx, res, &mut conn, &state, &mut last_error).await,
            Cleanup::Search { since } => search(ctx, res, &mut conn, &status, since, &mut last_error).await,
            Cleanup::Wait { after, record_abort } => {
                if record_abort {
                    record_deleted(ctx, res, api, &controls, status.clone(), &state).await;
                }
                let job_id = match &state {
                    Deleting::Active { name, .. } => name.clone(),
                    _ => "(start in flight)".to_string(),
                };
                return Err(Error::AbortPending {
                    job_id,
                    retry_after: after,
                });
            }
            Cleanup::Backoff(trouble) => {
                return Err(last_error.unwrap_or(Error::Finalizer(trouble.message)));
            }
        };
    }
    Ok(Action::requeue(settings.run.abort_poll))
}

/// Lets the finalizer go, saying why when it matters.
async fn release<K: RunKind>(
    ctx: &RunContext<K>,
    res: &K::Resource,
    uid: &str,
    note: Option<String>,
    warning: bool,
    forced: Option<Forced>,
) -> Result<Action, Error> {
    if let Some(note) = note {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let (reason, action) = (EventReason::FinalizerReleased, EventAction::ReleaseFinalizer);
        events::publish(&ctx.shared.recorder, res, type_, reason, action, note).await;
    }
    if let Some(forced) = forced {
        ctx.shared.metrics.finalizer_forced(forced.as_str());
    }
    ctx.shared.backoff.reset(uid);
    ctx.starts.forget(uid);
    Ok(Action::await_change())
}

/// Resolves the connection once per pass.
async fn connection<K: RunKind>(
    ctx: &RunContext<K>,
    res: &K::Resource,
    conn: &mut Option<Resolved>,
) -> Result<Resolved, Error> {
    if let Some(c) = conn {
        return Ok(c.clone());
    }
    let ns = res.namespace().unwrap_or_default();
    let resolved = ctx.shared.connections.resolve(&ns, K::connection(res)).await?;
    *conn = Some(resolved.clone());
    Ok(resolved)
}

/// What a failed step teaches; a refused key is re-read for the next try.
async fn failed<K: RunKind, H>(
    ctx: &RunContext<K>,
    conn: Option<&Resolved>,
    err: Error,
    last: &mut Option<Error>,
) -> Learned<H> {
    let credentials = matches!(err, Error::Connection { .. });
    if let (Some(conn), Error::Dss { source, .. }) = (conn, &err)
        && source.is_unauthorized()
    {
        let _ = ctx.shared.connections.refresh_key(conn, None).await;
    }
    let trouble = Trouble {
        category: err.class(),
        message: err.chain(),
        retry_after: None,
    };
    *last = Some(err);
    Learned::Failed { trouble, credentials }
}

/// Asks DSS whether the run is still going.
async fn look<K: RunKind>(
    ctx: &RunContext<K>,
    res: &K::Resource,
    conn: &mut Option<Resolved>,
    state: &Deleting<K::Handle>,
    last: &mut Option<Error>,
) -> Learned<K::Handle> {
    let Deleting::Active { handle, .. } = state else {
        return Learned::Nothing;
    };
    let c = match connection(ctx, res, conn).await {
        Ok(c) => c,
        Err(e) => return failed(ctx, None, e, last).await,
    };
    let current = Current::<K> {
        handle: handle.clone(),
        state: None,
        start_time: None,
        completion_time: None,
        warnings: None,
        details: K::Details::default(),
    };
    match K::observe(ctx, &c, res, &current, std::time::Duration::ZERO, Look::Confirm).await {
        Ok(obs) if K::run_state(&obs.state).is_terminal() => Learned::Ended,
        Ok(_) => Learned::Running,
        Err(e) if e.is_not_found() => Learned::Ended,
        Err(e) => failed(ctx, Some(&c), Error::dss("job status")(e), last).await,
    }
}

/// Sends the abort.
async fn abort<K: RunKind>(
    ctx: &RunContext<K>,
    res: &K::Resource,
    conn: &mut Option<Resolved>,
    state: &Deleting<K::Handle>,
    last: &mut Option<Error>,
) -> Learned<K::Handle> {
    let Deleting::Active { handle, .. } = state else {
        return Learned::Nothing;
    };
    let c = match connection(ctx, res, conn).await {
        Ok(c) => c,
        Err(e) => return failed(ctx, None, e, last).await,
    };
    match K::abort(ctx, &c, res, handle).await {
        Ok(()) => Learned::AbortSent,
        Err(e) => failed(ctx, Some(&c), Error::dss("abort job")(e), last).await,
    }
}

/// Looks for the run of a start request in flight.
async fn search<K: RunKind>(
    ctx: &RunContext<K>,
    res: &K::Resource,
    conn: &mut Option<Resolved>,
    status: &RunStatus<K>,
    since: Timestamp,
    last: &mut Option<Error>,
) -> Learned<K::Handle> {
    let Some(request) = &status.start_request else {
        return Learned::Searched(Search::Found(Vec::new()));
    };
    let c = match connection(ctx, res, conn).await {
        Ok(c) => c,
        Err(e) => return failed(ctx, None, e, last).await,
    };
    match K::search(ctx, &c, res, status, request, since).await {
        Ok(found) => match found.as_slice() {
            [one] if !ctx.starts.claim(&K::key(&one.handle)) => Learned::Searched(Search::Raced),
            _ => Learned::Searched(Search::Found(found)),
        },
        Err(e) => failed(ctx, Some(&c), e, last).await,
    }
}

/// Records the abort request in the status and says so in an event. Best effort: it is informative
/// only.
async fn record_deleted<K: RunKind>(
    ctx: &RunContext<K>,
    res: &K::Resource,
    api: &Api<K::Resource>,
    controls: &crate::controller::run::Controls,
    mut status: RunStatus<K>,
    state: &Deleting<K::Handle>,
) {
    let name = match state {
        Deleting::Active { name, .. } => name.clone(),
        _ => "the run".to_string(),
    };
    let (reason, action) = (EventReason::AbortRequested, EventAction::AbortJob);
    let note = format!("resource deleted: aborting {name}");
    events::publish(&ctx.shared.recorder, res, EventType::Normal, reason, action, note).await;
    let now = whole_seconds(Timestamp::now());
    status.abort_request = Some(AbortRequest {
        reason: AbortReason::Deleted,
        requested_at: Time(now),
    });
    let derived = contract::derive(controls, &status, None, now);
    let written = K::write(status, derived);
    let _ = write_status(api, res, &written, res.resource_version().as_deref()).await;
}
