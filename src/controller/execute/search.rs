//! Search: the crash guard's look into DSS for the run of a start request whose outcome was never
//! recorded. The kind lists and filters the candidates; a single one is claimed for this object
//! before the core adopts it, so no run is ever given to two objects of this process.

use k8s_openapi::jiff::Timestamp;

use super::{Pass, RunKind, observe::trouble};
use crate::{
    controller::{
        connections::Resolved,
        context::RunContext,
        error::Error,
        run::{Fact, RunStatus, Search},
    },
    crd::StartRequest,
};

/// Searches DSS for the run of the recorded start request (sent at the latest at `since`).
pub(crate) async fn search<K: RunKind>(pass: &Pass<'_, K>, conn: &Resolved, since: Timestamp) -> Fact<K> {
    let Some(request) = pass.status.start_request.clone() else {
        return Fact::Nothing;
    };
    match find(pass.ctx, conn, pass.res, &pass.status, &request, since).await {
        Ok(search) => Fact::Searched(search),
        Err(e) => trouble(pass, conn, e).await,
    }
}

/// The runs that may be the one `request` created, with the one match claimed for this object
/// (deletion searches the same way).
pub(crate) async fn find<K: RunKind>(
    ctx: &RunContext<K>,
    conn: &Resolved,
    res: &K::Resource,
    status: &RunStatus<K>,
    request: &StartRequest,
    since: Timestamp,
) -> Result<Search<K::Handle>, Error> {
    let found = K::search(ctx, conn, res, status, request, since).await?;
    Ok(match found.as_slice() {
        [one] if !ctx.starts.claim(&K::key(&one.handle)) => Search::Raced,
        _ => Search::Found(found),
    })
}
