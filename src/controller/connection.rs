//! The DSSConnection reconciler: reads the referenced Secret, checks the connection with an
//! authenticated call, and reports `Ready` with a reason a user understands.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use super::{
    Context,
    connections::ConnKey,
    error::{Error, chain},
    events::{self, reason},
    status::{READY, set_condition},
};
use crate::crd::{DSSConnection, FIELD_MANAGER};

/// How often a healthy connection is re-checked (and its key re-read).
const RECHECK: Duration = Duration::from_secs(120);
/// How soon a failing connection is re-checked.
const RETRY: Duration = Duration::from_secs(20);

/// Reconciles one DSSConnection.
pub async fn reconcile(conn: Arc<DSSConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled("dssconnection");
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    let uid = conn.uid().unwrap_or_default();
    if conn.metadata.deletion_timestamp.is_some() {
        ctx.metrics.set_connection(&uid, None);
        ctx.connections.forget(&ConnKey::Named { namespace: ns, name });
        return Ok(Action::await_change());
    }
    let old = conn.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let now = super::status::now_seconds();
    let generation = conn.metadata.generation;
    status.observed_generation = generation;

    let (ready, reason_, message, requeue) = match check(&conn, &ctx, &ns, &name).await {
        Ok(identity) => {
            let msg = format!("authenticated to DSS as {identity}");
            status.auth_identifier = Some(identity);
            ("True", "Authenticated", msg, RECHECK)
        }
        Err(Error::Connection { reason, message }) => ("False", reason, message, RETRY),
        Err(Error::Dss { source, .. }) => {
            let (reason, what) = if source.is_unauthorized() {
                ("Unauthorized", "DSS refused the API key")
            } else if is_tls(&source) {
                ("TLSError", "the TLS handshake with DSS failed")
            } else if source.status().is_some() {
                ("DssError", "DSS answered with an error")
            } else {
                ("Unreachable", "DSS cannot be reached")
            };
            ("False", reason, format!("{what}: {}", chain(&source)), RETRY)
        }
        Err(e) => return Err(e),
    };
    ctx.metrics.set_connection(&uid, Some((ready == "True", reason_)));
    let was_ready = old
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.status.clone());
    set_condition(
        &mut status.conditions,
        READY,
        ready,
        reason_,
        &message,
        generation,
        now,
    );
    if status != old {
        let api: Api<DSSConnection> =
            Api::namespaced(ctx.kube.clone(), &conn.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": "kube-dss.dev/v1alpha1",
            "kind": "DSSConnection",
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
            (EventType::Normal, reason::CONNECTED)
        } else {
            (EventType::Warning, reason::CONNECTION_FAILED)
        };
        events::publish(&ctx.recorder, conn.as_ref(), type_, r, "CheckConnection", message).await;
    }
    Ok(Action::requeue(requeue))
}

/// Resolves the connection, re-reads its key, and makes an authenticated call.
async fn check(conn: &DSSConnection, ctx: &Context, ns: &str, name: &str) -> Result<String, Error> {
    let resolved = ctx.connections.resolve_named(ns, name, &conn.spec).await?;
    ctx.connections.refresh_key(&resolved, Some(&conn.spec)).await?;
    resolved
        .client
        .list_project_keys()
        .await
        .map_err(Error::dss("list projects"))?;
    ctx.connections.auth_identifier(&resolved).await
}

fn is_tls(err: &crate::dss::Error) -> bool {
    let text = chain(err).to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer"]
        .iter()
        .any(|m| text.contains(m))
}
