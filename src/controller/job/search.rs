//! Which DSS jobs may be the one a lost start request created: initiated at or after the request
//! (on DSS's clock, measured from its answers; otherwise minus the tolerated clock skew) by this
//! connection's key, building the requested definition, and
//! tracked by no other build. With the `kube-dss.dev/adopt-job` annotation, the job it names.

use std::collections::HashSet;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{JobKind, definition};
use crate::{
    controller::{
        connections::Resolved,
        context::RunContext,
        error::Error,
        run::{Candidate, RunStatus},
    },
    crd::{ADOPT_ANNOTATION, DatasetBuild, StartRequest},
    dss::{self, JobListItem},
};

/// The most candidates kept from one search: more than one already means a human must choose.
const MAX_CANDIDATES: usize = 20;

/// The candidates for a lost start (`since`: the latest moment it may have been sent; the core asks
/// only once the grace after it is over, so a listing taken now shows the job if it exists). The
/// project's listing is searched as it streams in, keeping only candidates, however many jobs the
/// project retains.
pub(crate) async fn candidates(
    ctx: &RunContext<JobKind>,
    conn: &Resolved,
    build: &DatasetBuild,
    status: &RunStatus<JobKind>,
    request: &StartRequest,
    _since: Timestamp,
) -> Result<Vec<Candidate<String>>, Error> {
    let project = build.spec.project_key.clone();
    let identity = ctx.shared.connections.auth_identifier(conn).await?;
    // Jobs this build or any other build (of any watched namespace) already tracks are never
    // candidates: two builds with the same outputs must not adopt each other's jobs.
    let mut known: HashSet<String> = status.history.iter().map(|h| h.handle.clone()).collect();
    for other in ctx.io.builds.state() {
        if other.uid() == build.uid() {
            continue;
        }
        if let Some(s) = &other.status {
            known.extend(s.job_id.iter().cloned());
            known.extend(s.history.iter().map(|h| h.job_id.clone()));
        }
    }
    let wanted = request
        .definition_hash
        .clone()
        .unwrap_or_else(|| definition::definition_hash(&build.spec));
    let skew = i64::try_from(ctx.shared.settings.clock_skew.as_millis()).unwrap_or(i64::MAX);
    let requested_ms = request.requested_at.0.as_millisecond();
    let lost = Lost {
        adopt: build.annotations().get(ADOPT_ANNOTATION).map(String::as_str),
        earliest_ms: earliest_initiation(requested_ms, conn.client.clock_offset(), skew),
        identity: &identity,
        project: &project,
        definition_hash: &wanted,
    };
    let found = conn
        .client
        .search_jobs(&project, MAX_CANDIDATES, |j| {
            !known.contains(&j.job_id) && !ctx.starts.claimed(&j.job_id) && lost.matches(j)
        })
        .await
        .map_err(Error::dss("list jobs"))?;
    Ok(found
        .matches
        .iter()
        .map(|j| Candidate {
            handle: j.job_id.clone(),
            name: format!("DSS job {}", j.job_id),
            initiated: j
                .definition
                .as_ref()
                .and_then(|d| d.initiation_timestamp)
                .and_then(|t| Timestamp::from_millisecond(t.timestamp_millis()).ok()),
        })
        .collect())
}

/// The earliest initiation time (on DSS's clock) of a job that a request recorded at `requested_ms`
/// (on ours) can have created: the request was recorded before it was sent. With DSS's clock
/// measured from its answers, the bound is as tight as the measure (about a second), so a job
/// started shortly before the request (say, by a build deleted a moment ago) is not taken for its
/// own; without a measure, a fixed tolerance (`--clock-skew-seconds`) stands in.
fn earliest_initiation(requested_ms: i64, offset: Option<dss::ClockOffset>, skew_ms: i64) -> i64 {
    match offset {
        Some(o) => requested_ms
            .saturating_add(o.min_ms)
            .saturating_sub(MEASURE_MARGIN_MS),
        None => requested_ms.saturating_sub(skew_ms),
    }
}

/// Room for the granularity of the two clocks' readings (DSS stamps a job's initiation and its
/// answers' `Date` from one clock; the request's time is already rounded down to the second).
const MEASURE_MARGIN_MS: i64 = 100;

/// What a job must be to be the lost start's.
struct Lost<'a> {
    adopt: Option<&'a str>,
    earliest_ms: i64,
    identity: &'a str,
    project: &'a str,
    definition_hash: &'a str,
}

impl Lost<'_> {
    fn matches(&self, job: &JobListItem) -> bool {
        if let Some(id) = self.adopt {
            return job.job_id == id;
        }
        job.definition.as_ref().is_some_and(|d| {
            d.initiation_timestamp
                .is_some_and(|t| t.timestamp_millis() >= self.earliest_ms)
                && d.initiator
                    .as_deref()
                    .is_some_and(|i| initiator_is(i, self.identity))
                && definition::dss_definition_hash(&d.raw, self.project).as_deref()
                    == Some(self.definition_hash)
        })
    }
}

/// True when a DSS job's `initiator` is the identity of our key (DSS shows API keys as `API (<id>)`).
fn initiator_is(initiator: &str, identity: &str) -> bool {
    initiator == identity
        || initiator.strip_prefix("API (").and_then(|r| r.strip_suffix(')')) == Some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_initiation_uses_dss_clock_when_measured() {
        // Recorded at 100 s on our clock; DSS is 5 to 6 s ahead.
        let measured = dss::ClockOffset {
            min_ms: 5_000,
            max_ms: 6_000,
        };
        assert_eq!(earliest_initiation(100_000, Some(measured), 30_000), 104_900);
        assert_eq!(
            earliest_initiation(100_000, None, 30_000),
            70_000,
            "the tolerance without a measure"
        );
    }

    #[test]
    fn initiator_matches_api_key_identity() {
        assert!(initiator_is("API (kube-dss-operator)", "kube-dss-operator"));
        assert!(initiator_is("kube-dss-operator", "kube-dss-operator"));
        assert!(!initiator_is("API (someone-else)", "kube-dss-operator"));
    }
}
