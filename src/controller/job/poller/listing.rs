//! The listing task of one connection: every interval while it has jobs to watch, one running-jobs
//! listing (the key's own, or each watched project's), compared with what the builds recorded; the
//! builds whose jobs changed or left it are woken. A failing or missing listing degrades the watch,
//! so the builds poll by themselves.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use super::{ConnWatch, JobKey, MAX_WATCHED, Observed, Poller, REPROBE, Snapshot, Source};
use crate::{
    controller::connections::ConnKey,
    crd::DatasetBuild,
    dss::{self, DssClient, Running},
    sync::lock,
};

/// A listing's answer.
enum Listed {
    /// The watched jobs it showed.
    Jobs(HashMap<JobKey, Observed>),
    /// DSS has no such listing.
    Missing,
    /// It failed for a reason that passes; the next one may come after `retry_after`.
    Failed { retry_after: Option<Duration> },
    /// The connection's own budget had no room in time: nothing was asked.
    Throttled { retry_after: Duration },
}

/// Lists a connection's running jobs every interval while it has jobs to watch, and wakes the
/// builds whose jobs changed. Ends when nothing is watched (the next `track` starts it again).
pub(super) async fn list_while_watched(poller: Arc<Poller>, key: ConnKey, watch: Arc<Mutex<ConnWatch>>) {
    let mut next = Instant::now() + poller.interval;
    loop {
        tokio::time::sleep_until(next).await;
        let (client, source, wanted) = {
            let mut conns = lock(&poller.conns);
            let current = conns.get(&key).is_some_and(|w| Arc::ptr_eq(w, &watch));
            let mut w = lock(&watch);
            sweep(&mut w, poller.max_age());
            if w.tracked.is_empty() || !current {
                // Nothing to watch: the connection's watch goes (with its client and budget
                // handle); the next job started on it makes a new one.
                w.listing = false;
                if current {
                    conns.remove(&key);
                }
                return;
            }
            if let Source::Off { until } = w.source
                && Instant::now() >= until
            {
                w.source = Source::Mine;
            }
            let wanted: HashSet<JobKey> = w.tracked.keys().cloned().collect();
            // The listing serves every watched job of the connection: it may wait for the budget
            // as long as its result stays useful (it holds no reconciler while it waits).
            let client = w.client.clone().with_max_budget_wait(poller.max_age());
            (client, w.source.clone(), wanted)
        };
        let asked = Instant::now();
        next = asked + poller.interval;
        let listed = match source {
            Source::Off { .. } => continue,
            Source::Mine => list(&client, Running::Mine, &wanted).await,
            Source::Projects => list_projects(&client, &wanted).await,
        };
        let woken = {
            let mut w = lock(&watch);
            match listed {
                Listed::Jobs(jobs) => compare(&mut w, asked, jobs),
                Listed::Missing => {
                    w.source = match w.source {
                        Source::Mine => Source::Projects,
                        _ => Source::Off {
                            until: Instant::now() + REPROBE,
                        },
                    };
                    tracing::info!(connection = %key, source = ?w.source, "DSS has no such running-jobs listing");
                    degrade(&mut w, asked)
                }
                Listed::Failed { retry_after } => {
                    if let Some(after) = retry_after {
                        next = next.max(asked + after);
                    }
                    degrade(&mut w, asked)
                }
                Listed::Throttled { retry_after } => {
                    // Nothing was learned; the last listing stands until it is too old.
                    next = next.max(asked + retry_after);
                    let stale = w.snapshot.asked.is_none_or(|a| a.elapsed() > poller.max_age());
                    if stale { degrade(&mut w, asked) } else { Vec::new() }
                }
            }
        };
        poller.wakes.wake(woken);
    }
}

/// Drops jobs that left the listing long ago and whose builds never came to look (deleted builds).
fn sweep(w: &mut ConnWatch, max_age: Duration) {
    let stale = max_age * 20;
    w.tracked
        .retain(|_, t| t.left.is_none_or(|left| left.elapsed() < stale));
}

/// A successful listing: wakes the builds whose jobs changed state or left it.
pub(super) fn compare(
    w: &mut ConnWatch,
    asked: Instant,
    jobs: HashMap<JobKey, Observed>,
) -> Vec<ObjectRef<DatasetBuild>> {
    let mut woken = Vec::new();
    for (key, t) in &mut w.tracked {
        if t.since > asked || t.left.is_some() {
            continue;
        }
        match jobs.get(key) {
            Some(o) if !o.state.is_terminal() => {
                if t.known.as_ref() != Some(&o.state) {
                    t.known = Some(o.state.clone());
                    woken.push(t.build.clone());
                }
            }
            _ => {
                t.left = Some(Instant::now());
                woken.push(t.build.clone());
            }
        }
    }
    w.snapshot = Snapshot {
        asked: Some(asked),
        ok: true,
        jobs,
    };
    woken
}

/// A failed or missing listing: the builds that counted on it poll by themselves from now on.
pub(super) fn degrade(w: &mut ConnWatch, asked: Instant) -> Vec<ObjectRef<DatasetBuild>> {
    let was_ok = w.snapshot.ok;
    w.snapshot = Snapshot {
        asked: Some(asked),
        ok: false,
        jobs: HashMap::new(),
    };
    if !was_ok {
        return Vec::new();
    }
    w.tracked
        .values()
        .filter(|t| t.left.is_none())
        .map(|t| t.build.clone())
        .collect()
}

/// One running-jobs listing, keeping the watched jobs.
async fn list(client: &DssClient, which: Running<'_>, wanted: &HashSet<JobKey>) -> Listed {
    let keep = |j: &dss::JobListItem| wanted.contains(&(j.project_key.clone(), j.job_id.clone()));
    match client.scan_running_jobs(which, MAX_WATCHED, keep).await {
        Ok(found) => Listed::Jobs(
            found
                .matches
                .iter()
                .map(|j| ((j.project_key.clone(), j.job_id.clone()), Observed::from_item(j)))
                .collect(),
        ),
        Err(e) if missing(&e) => Listed::Missing,
        Err(e @ dss::Error::Throttled { .. }) => Listed::Throttled {
            retry_after: e.retry_after().unwrap_or(Duration::from_secs(1)),
        },
        Err(e) => {
            tracing::debug!(error = %e, "running-jobs listing failed");
            Listed::Failed {
                retry_after: e.retry_after(),
            }
        }
    }
}

/// The running-jobs listing of each watched project.
async fn list_projects(client: &DssClient, wanted: &HashSet<JobKey>) -> Listed {
    let projects: HashSet<&str> = wanted.iter().map(|(p, _)| p.as_str()).collect();
    let mut all = HashMap::new();
    for project in projects {
        match list(client, Running::Project(project), wanted).await {
            Listed::Jobs(jobs) => all.extend(jobs),
            other => return other,
        }
    }
    Listed::Jobs(all)
}

/// Whether DSS itself says the listing does not exist: its own JSON 404 (an unknown endpoint), or
/// 405. A gateway's bare 404 says nothing about DSS.
pub(super) fn missing(e: &dss::Error) -> bool {
    match e.status() {
        Some(405) => true,
        Some(404) => e.is_dss_error(),
        _ => false,
    }
}
