//! Cleanup: the deletion path. The run core names the step (`run::cleanup`); this performs it: look
//! for a lost start's run, ask DSS for the run's state, abort it, and finally let the finalizer go.
//! Bounded: past `--finalizer-timeout-seconds` with DSS unreachable or the credentials gone, the core
//! releases anyway, with a Warning event and a metric.

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};

use super::{
    Look, RunKind, now_seconds,
    record::{publish, write_status},
    search::find,
};
use crate::controller::{
    connections::{Freshness, Resolved},
    context::RunContext,
    error::Error,
    run::{
        Controls, Current, Event, RunStatus, Search, Trouble,
        cleanup::{self, Cleanup, Deleting, Forced, Learned},
        contract,
        plan::elapsed,
        vocabulary::{EventAction, EventReason},
    },
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
    let now = now_seconds();
    let since = res.meta().deletion_timestamp.as_ref().map_or(now, |t| t.0);
    let overdue = elapsed(since, now) > settings.finalizer_timeout;
    let mut state = cleanup::deleting(&controls, &status, &process);
    let mut learned = Learned::Nothing;
    let mut calls = Calls {
        ctx,
        res,
        conn: None,
        last: None,
    };
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
                calls.look(&state).await
            }
            Cleanup::Abort => calls.abort(&state).await,
            Cleanup::Search { since } => calls.search(&status, since).await,
            Cleanup::Wait { after, record_abort } => {
                if record_abort {
                    record(ctx, res, api, &controls, status.clone(), &state).await;
                }
                let run = match &state {
                    Deleting::Active { name, .. } => name.clone(),
                    _ => "(start in flight)".to_string(),
                };
                return Err(Error::AbortPending {
                    run,
                    retry_after: after,
                });
            }
            Cleanup::Backoff(trouble) => {
                return Err(calls.last.unwrap_or(Error::Finalizer(trouble.message)));
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
        let event = Event {
            warning,
            reason: EventReason::FinalizerReleased,
            action: EventAction::ReleaseFinalizer,
            note,
        };
        publish(&ctx.shared.recorder, res, event).await;
    }
    if let Some(forced) = forced {
        ctx.shared.metrics.finalizer_forced(forced.as_str());
    }
    ctx.shared.backoff.reset(uid);
    ctx.starts.forget(uid);
    Ok(Action::await_change())
}

/// The DSS calls of one cleanup pass: the connection is resolved once, and the last error is kept
/// for the error policy.
struct Calls<'a, K: RunKind> {
    ctx: &'a RunContext<K>,
    res: &'a K::Resource,
    conn: Option<Resolved>,
    last: Option<Error>,
}

impl<K: RunKind> Calls<'_, K> {
    /// The connection, resolved once per pass with its credentials read now (an abort on deletion is
    /// not taken back either: a Secret deleted a moment ago counts); what its failure teaches
    /// otherwise.
    async fn connection(&mut self) -> Result<Resolved, Learned<K::Handle>> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let ns = self.res.namespace().unwrap_or_default();
        match self
            .ctx
            .shared
            .connections
            .resolve(&ns, K::connection(self.res), Freshness::Now)
            .await
        {
            Ok(resolved) => {
                self.conn = Some(resolved.clone());
                Ok(resolved)
            }
            Err(e) => Err(self.failed(None, e).await),
        }
    }

    /// The active run and the connection to call about it.
    async fn active<'s>(
        &mut self,
        state: &'s Deleting<K::Handle>,
    ) -> Result<(&'s K::Handle, Resolved), Learned<K::Handle>> {
        let Deleting::Active { handle, .. } = state else {
            return Err(Learned::Nothing);
        };
        Ok((handle, self.connection().await?))
    }

    /// What a failed call teaches; a refused key is re-read for the next try.
    async fn failed(&mut self, conn: Option<&Resolved>, err: Error) -> Learned<K::Handle> {
        let credentials = matches!(err, Error::Connection { .. });
        if let (Some(conn), Error::Dss { source, .. }) = (conn, &err)
            && source.is_unauthorized()
        {
            let _ = self.ctx.shared.connections.refresh_key(conn, None).await;
        }
        let trouble = Trouble {
            category: err.class(),
            message: err.chain(),
            retry_after: None,
        };
        self.last = Some(err);
        Learned::Failed { trouble, credentials }
    }

    /// Asks DSS whether the run is still going.
    async fn look(&mut self, state: &Deleting<K::Handle>) -> Learned<K::Handle> {
        let (handle, c) = match self.active(state).await {
            Ok(found) => found,
            Err(learned) => return learned,
        };
        let current = Current::<K> {
            handle: handle.clone(),
            state: None,
            start_time: None,
            completion_time: None,
            warnings: None,
            details: K::Details::default(),
        };
        let age = std::time::Duration::ZERO;
        match K::observe(self.ctx, &c, self.res, &current, age, Look::Confirm).await {
            Ok(seen)
                if seen
                    .observation
                    .as_ref()
                    .is_some_and(|o| K::run_state(&o.state).is_terminal()) =>
            {
                Learned::Ended
            }
            Ok(_) => Learned::Running,
            Err(e) if e.is_not_found() => Learned::Ended,
            Err(e) => self.failed(Some(&c), Error::dss("run status")(e)).await,
        }
    }

    /// Sends the abort.
    async fn abort(&mut self, state: &Deleting<K::Handle>) -> Learned<K::Handle> {
        let (handle, c) = match self.active(state).await {
            Ok(found) => found,
            Err(learned) => return learned,
        };
        match K::abort(self.ctx, &c, self.res, handle).await {
            Ok(()) => Learned::AbortSent,
            Err(e) => self.failed(Some(&c), Error::dss("abort run")(e)).await,
        }
    }

    /// Looks for the run of a start request in flight.
    async fn search(&mut self, status: &RunStatus<K>, since: Timestamp) -> Learned<K::Handle> {
        let Some(request) = &status.start_request else {
            return Learned::Searched(Search::Found(Vec::new()));
        };
        let c = match self.connection().await {
            Ok(c) => c,
            Err(learned) => return learned,
        };
        match find(self.ctx, &c, self.res, status, request, since).await {
            Ok(search) => Learned::Searched(search),
            Err(e) => self.failed(Some(&c), e).await,
        }
    }
}

/// Records the abort the core decided on (`abortRequest: Deleted`) and publishes its event. Best
/// effort: it is informative only.
async fn record<K: RunKind>(
    ctx: &RunContext<K>,
    res: &K::Resource,
    api: &Api<K::Resource>,
    controls: &Controls,
    status: RunStatus<K>,
    state: &Deleting<K::Handle>,
) {
    let now = now_seconds();
    let (status, event) = cleanup::abort_recorded(status, state, now);
    publish(&ctx.shared.recorder, res, event).await;
    let derived = contract::derive(controls, &status, None, now);
    let written = K::write(status, derived);
    let _ = write_status(api, res, &written, res.resource_version().as_deref()).await;
}
