//! The DSSConnection reconciler: reads the referenced Secret, checks the connection with an
//! authenticated call, and reports `Ready` with a reason a user understands. Reasons come from the
//! same taxonomy as every DSS error ([`crate::dss::Error::category`]), never from an error's text.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use super::{
    connections::{ConnKey, Freshness},
    context::Shared,
    error::{Error, Unusable, chain},
    events,
    execute::now_seconds,
    run::{
        contract::{READY, condition, set_condition},
        vocabulary::{EventAction, EventReason},
    },
};
use crate::{
    crd::{DSSConnection, FIELD_MANAGER},
    dss,
};

/// How often a healthy connection is re-checked (and its key re-read).
const RECHECK: Duration = Duration::from_secs(120);
/// How soon a failing connection is re-checked.
const RETRY: Duration = Duration::from_secs(20);

/// Reconciles one DSSConnection.
pub(crate) async fn reconcile(conn: Arc<DSSConnection>, ctx: Arc<Shared>) -> Result<Action, Error> {
    ctx.metrics.reconciled("dssconnection");
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    if conn.metadata.deletion_timestamp.is_some() {
        ctx.connections.forget(&ConnKey::Named { namespace: ns, name });
        return Ok(Action::await_change());
    }
    let old = conn.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = conn.metadata.generation;
    status.observed_generation = generation;
    let (ready, reason, message, requeue) = match check(&conn, &ctx, &ns, &name).await {
        Ok(identity) => {
            let msg = format!("authenticated to DSS as {identity}");
            status.auth_identifier = Some(identity);
            ("True", Ready::Authenticated, msg, RECHECK)
        }
        Err(Error::Connection { reason, message }) => ("False", Ready::Unusable(reason), message, RETRY),
        Err(Error::Dss { source, .. }) => {
            let (reason, what) = not_ready(&source);
            ("False", reason, format!("{what}: {}", chain(&source)), RETRY)
        }
        Err(e) => return Err(e),
    };
    let was_ready = condition(&old.conditions, READY).map(|c| c.status.clone());
    let now = now_seconds();
    set_condition(
        &mut status.conditions,
        READY,
        ready,
        reason.as_str(),
        &message,
        generation,
        now,
    );
    if status != old {
        let api: Api<DSSConnection> = Api::namespaced(ctx.kube.clone(), &ns);
        let patch = json!({
            "apiVersion": DSSConnection::api_version(&()),
            "kind": DSSConnection::kind(&()),
            "status": status,
        });
        api.patch_status(
            &conn.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube("write connection status"))?;
    }
    if was_ready.as_deref() != Some(ready) {
        let (type_, r) = if ready == "True" {
            (EventType::Normal, EventReason::Connected)
        } else {
            (EventType::Warning, EventReason::ConnectionFailed)
        };
        let action = EventAction::CheckConnection;
        events::publish(&ctx.recorder, conn.as_ref(), type_, r, action, message).await;
    }
    // The check's outcome is in Ready; only a failed reconcile (its status not written) backs off.
    ctx.backoff.reset(&conn.uid().unwrap_or_default());
    Ok(Action::requeue(requeue))
}

/// The reason of a DSSConnection's `Ready` condition: the DSS error categories a user can act on,
/// in the words of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    /// DSS accepted the key.
    Authenticated,
    /// The connection cannot be used (no Secret, a bad URL, ...).
    Unusable(Unusable),
    /// DSS refused the key.
    Unauthorized,
    /// The TLS handshake failed.
    TlsError,
    /// DSS cannot be reached.
    Unreachable,
    /// DSS answered with another error.
    DssError,
}

impl Ready {
    /// The PascalCase reason.
    fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "Authenticated",
            Self::Unusable(u) => u.as_str(),
            Self::Unauthorized => "Unauthorized",
            Self::TlsError => "TLSError",
            Self::Unreachable => "Unreachable",
            Self::DssError => "DssError",
        }
    }
}

/// The `Ready=False` reason for a failed check, from the error's category.
fn not_ready(err: &dss::Error) -> (Ready, &'static str) {
    match err.class() {
        dss::Category::Unauthorized => (Ready::Unauthorized, "DSS refused the API key"),
        dss::Category::Tls => (Ready::TlsError, "the TLS handshake with DSS failed"),
        dss::Category::Unreachable | dss::Category::Timeout => (Ready::Unreachable, "DSS cannot be reached"),
        _ => (Ready::DssError, "DSS answered with an error"),
    }
}

/// Resolves the connection, re-reads its key, and makes an authenticated call.
async fn check(conn: &DSSConnection, ctx: &Shared, ns: &str, name: &str) -> Result<String, Error> {
    let resolved = ctx
        .connections
        .resolve_named(ns, name, &conn.spec, Freshness::Now)
        .await?;
    ctx.connections.refresh_key(&resolved, Some(&conn.spec)).await?;
    resolved
        .client
        .list_project_keys()
        .await
        .map_err(Error::dss("list projects"))?;
    ctx.connections.auth_identifier(&resolved).await
}
