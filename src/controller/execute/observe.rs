//! Observe: resolve the object's connection, then ask DSS for the state of its current run. Also the
//! abort action, and how a failed DSS call becomes a fact for the core.

use std::time::Duration;

use kube::ResourceExt;

use super::{Look, Pass, RunKind};
use crate::{
    controller::{
        connections::{Freshness, Resolved},
        error::{Category, Error},
        run::{Fact, Trouble, plan},
    },
    crd::AbortReason,
    dss,
};

/// Resolves the connection and observes the current run, if one is active. Without a usable
/// connection there is nothing to call: the fact says why.
pub(crate) async fn observe<K: RunKind>(
    pass: &mut Pass<'_, K>,
) -> Result<(Option<Resolved>, Fact<K>), Error> {
    let ns = pass.res.namespace().unwrap_or_default();
    let conn = match pass
        .ctx
        .shared
        .connections
        .resolve(&ns, K::connection(pass.res), Freshness::Recent)
        .await
    {
        Ok(conn) => conn,
        Err(Error::Connection { reason, message }) => {
            let trouble = Trouble {
                category: Category::Connection(reason),
                message,
                retry_after: None,
            };
            return Ok((None, Fact::Unavailable(trouble)));
        }
        Err(e) => return Err(e),
    };
    let Some(current) = plan::active(&pass.status) else {
        return Ok((Some(conn), Fact::Nothing));
    };
    let age = pass
        .status
        .start_request
        .as_ref()
        .map(|r| plan::elapsed(r.requested_at.0, pass.now))
        .unwrap_or_default();
    let fact = match K::observe(pass.ctx, &conn, pass.res, current, age, Look::Poll).await {
        Ok(seen) => {
            pass.watched = seen.watched;
            pass.ctx.sightings.clear(&pass.uid());
            seen.observation.map_or(Fact::Nothing, Fact::Observed)
        }
        // DSS no longer knows the run (purged, or DSS lost its state): once it says so again
        // after a delay, the run fails.
        Err(e) if e.is_not_found() => Fact::Gone {
            first_seen: pass
                .ctx
                .sightings
                .gone(&pass.uid(), &K::key(&current.handle), pass.now),
            message: e.to_string(),
        },
        Err(e) => trouble(pass, &conn, Error::dss("poll run")(e)).await,
    };
    Ok((Some(conn), fact))
}

/// Sends the abort of the current run.
pub(crate) async fn abort<K: RunKind>(pass: &Pass<'_, K>, conn: &Resolved, reason: AbortReason) -> Fact<K> {
    let Some(current) = &pass.status.current else {
        return Fact::Retry {
            after: Duration::from_secs(1),
        };
    };
    match K::abort(pass.ctx, conn, pass.res, &current.handle).await {
        Ok(()) => Fact::AbortSent(reason),
        Err(e) => trouble(pass, conn, Error::dss("abort run")(e)).await,
    }
}

/// A DSS call failed: the fact to decide on. A refused key is re-read first; when it changed, the
/// call is simply tried again soon. A call the connection's own budget would not wait for was never
/// sent: DSS said nothing, so it is tried again when the budget has room, with nothing recorded.
pub(crate) async fn trouble<K: RunKind>(pass: &Pass<'_, K>, conn: &Resolved, err: Error) -> Fact<K> {
    let source = match &err {
        Error::Dss { source, .. } => Some(source.as_ref()),
        _ => None,
    };
    if let Some(e @ dss::Error::Throttled { .. }) = source {
        return Fact::Retry {
            after: e.retry_after().unwrap_or(Duration::from_secs(1)),
        };
    }
    if source.is_some_and(dss::Error::is_unauthorized) {
        match pass.ctx.shared.connections.refresh_key(conn, None).await {
            Ok(true) => {
                return Fact::Retry {
                    after: Duration::from_millis(200),
                };
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not re-read the API key"),
        }
    }
    Fact::Trouble(Trouble {
        category: err.class(),
        message: err.chain(),
        retry_after: source.and_then(dss::Error::retry_after),
    })
}
