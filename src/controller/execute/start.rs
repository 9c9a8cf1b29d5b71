//! Start: record the start request (with the resourceVersion precondition, so a stale copy of the
//! object cannot start a second run), then send it. Starts wait for the connection's budget a few at
//! a time (the start gate); the others keep their recorded request and send it when their turn
//! comes, after a quorum read shows it still stands, without another write.

use std::time::Duration;

use kube::{Api, Resource, ResourceExt};
use tokio::sync::OwnedSemaphorePermit;

use super::{Pass, RunKind, now_seconds, record};
use crate::{
    controller::{
        connections::{Freshness, Resolved},
        error::{Category, Error},
        run::{Fact, StartOutcome, Trouble, start},
    },
    dss,
};

/// What a start action leads to.
pub(crate) enum Then<K: RunKind> {
    /// A fact for the core.
    Fact(Fact<K>),
    /// The request could not be recorded (a newer copy of the object exists): look again.
    Requeue(kube::runtime::controller::Action),
}

/// Records the new start request the core put in the status, then sends it, or leaves it queued
/// when the start gate is full.
pub(crate) async fn start<K: RunKind>(
    pass: &mut Pass<'_, K>,
    api: &Api<K::Resource>,
    conn: &Resolved,
) -> Result<Then<K>, Error> {
    let Ok(permit) = conn.start_gate.clone().try_acquire_owned() else {
        // Recorded by the final write; the book notes it once that succeeded.
        pass.queued = true;
        return Ok(Then::Fact(Fact::Queued));
    };
    let conn = match credentials_now(pass).await? {
        Ok(conn) => conn,
        Err(fact) => return Ok(Then::Fact(fact)),
    };
    if !record::record_start(pass, api).await? {
        // Someone else (or a newer copy of this object) moved first: look again.
        tracing::debug!("start request lost a resourceVersion race; requeueing");
        return Ok(Then::Requeue(kube::runtime::controller::Action::requeue(
            Duration::from_secs(1),
        )));
    }
    Ok(Then::Fact(post(pass, &conn, permit).await))
}

/// The connection with its credentials read now: a start cannot be taken back, so a Secret deleted
/// (or changed) a moment ago must count. A connection that cannot be used is the fact to decide on.
async fn credentials_now<K: RunKind>(pass: &Pass<'_, K>) -> Result<Result<Resolved, Fact<K>>, Error> {
    let ns = pass.res.namespace().unwrap_or_default();
    match pass
        .ctx
        .shared
        .connections
        .resolve(&ns, K::connection(pass.res), Freshness::Now)
        .await
    {
        Ok(conn) => Ok(Ok(conn)),
        Err(Error::Connection { reason, message }) => Ok(Err(Fact::Unavailable(Trouble {
            category: Category::Connection(reason),
            message,
            retry_after: None,
        }))),
        Err(e) => Err(e),
    }
}

/// Sends the start request this process recorded and has not sent, once it has a place at the start
/// gate and the object as the apiserver has it now still carries it.
pub(crate) async fn send<K: RunKind>(
    pass: &mut Pass<'_, K>,
    api: &Api<K::Resource>,
    conn: &Resolved,
) -> Result<Fact<K>, Error> {
    let Ok(permit) = conn.start_gate.clone().try_acquire_owned() else {
        return Ok(Fact::Queued);
    };
    if !still_stands(pass, api).await? {
        // The object changed since this copy (the cache may lag, say while its watch is
        // re-established): decide again on the newer copy before sending anything.
        return Ok(Fact::Superseded);
    }
    let conn = match credentials_now(pass).await? {
        Ok(conn) => conn,
        Err(fact) => return Ok(fact),
    };
    tracing::debug!("sending a start request recorded while it waited for its turn");
    Ok(post(pass, &conn, permit).await)
}

/// Whether the recorded start request still stands on the object as the apiserver has it now (a
/// quorum read): not deleted, not suspended, the same run request, the same record, no run.
async fn still_stands<K: RunKind>(pass: &Pass<'_, K>, api: &Api<K::Resource>) -> Result<bool, Error> {
    let latest = api
        .get(&pass.res.name_any())
        .await
        .map_err(Error::kube("read object"))?;
    let controls = K::controls(&latest);
    let status = K::read(&latest);
    Ok(latest.meta().deletion_timestamp.is_none()
        && !controls.suspend
        && controls.want == pass.controls.want
        && status.current.is_none()
        && status.start_request == pass.status.start_request)
}

/// Sends the start request, holding the gate's place. It is never retried blindly: an unknown
/// outcome goes to the crash guard.
async fn post<K: RunKind>(pass: &mut Pass<'_, K>, conn: &Resolved, _permit: OwnedSemaphorePermit) -> Fact<K> {
    let uid = pass.uid();
    let sent_at = now_seconds();
    if let Some(request) = &pass.status.start_request {
        // Before the call, so a call cut short counts as sent.
        pass.ctx.starts.sending(&uid, request, sent_at);
    }
    pass.sent = pass.status.start_request.clone();
    // The whole call, budget wait included, ends before the crash guard's grace does, so a resolver
    // never searches while this request could still reach DSS.
    let deadline = pass
        .ctx
        .shared
        .settings
        .run
        .start_grace
        .saturating_sub(Duration::from_secs(10));
    let Some(request) = pass.sent.clone() else {
        return Fact::Retry {
            after: Duration::from_secs(1),
        };
    };
    // The start may wait for the budget as long as its deadline allows (it holds a place at the
    // start gate, not one of the reconcilers shared by every connection), and gives way to the
    // calls that look at running jobs: a backlog of starts never delays noticing that jobs ended.
    let starter = Resolved {
        client: conn.client.clone().with_max_budget_wait(deadline).giving_way(),
        ..conn.clone()
    };
    let sent = tokio::time::timeout(deadline, K::start(pass.ctx, &starter, pass.res, &request)).await;
    let result = sent.unwrap_or(Err(dss::Error::Timeout {
        operation: dss::Operation::StartJob,
    }));
    let outcome = match result {
        Ok(handle) => {
            pass.ctx.starts.forget(&uid);
            pass.ctx.starts.claim(&K::key(&handle));
            pass.started = true;
            StartOutcome::Accepted(handle)
        }
        Err(e) => {
            let outcome = start::classify(&e);
            if e.is_unauthorized() {
                let _ = pass.ctx.shared.connections.refresh_key(conn, None).await;
            }
            if matches!(outcome, StartOutcome::Unknown { .. }) {
                tracing::warn!(error = %e, "start request outcome unknown; will search DSS for the run");
            }
            outcome
        }
    };
    Fact::Started { outcome, sent_at }
}
