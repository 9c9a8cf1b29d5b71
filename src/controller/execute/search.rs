//! Search: the crash guard's look into DSS for the run of a start request whose outcome was never
//! recorded. The kind lists and filters the candidates; a single one is claimed for this object
//! before the core adopts it, so no run is ever given to two objects of this process.

use k8s_openapi::jiff::Timestamp;

use super::{Pass, RunKind, observe::trouble};
use crate::controller::{
    connections::Resolved,
    run::{Fact, Search},
};

/// Searches DSS for the run of the recorded start request (sent at the latest at `since`).
pub(crate) async fn search<K: RunKind>(pass: &Pass<'_, K>, conn: &Resolved, since: Timestamp) -> Fact<K> {
    let Some(request) = pass.status.start_request.clone() else {
        return Fact::Nothing;
    };
    match K::search(pass.ctx, conn, pass.res, &pass.status, &request, since).await {
        Ok(found) => match found.as_slice() {
            [one] if !pass.ctx.starts.claim(&K::key(&one.handle)) => Fact::Searched(Search::Raced),
            _ => Fact::Searched(Search::Found(found)),
        },
        Err(e) => trouble(pass, conn, e).await,
    }
}
