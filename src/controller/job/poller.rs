//! Observing DSS jobs cheaply. Many builds of one project share one listing of the project's running
//! jobs (`GET /projects/{pk}/jobs/running/`), refreshed at most every `max_age`: a job found there is
//! active and needs no call of its own. Only a job missing from the listing (it ended, or the listing
//! is older than the job) costs a status call. Correctness never depends on the listing: absence only
//! means "ask DSS directly". On a DSS without the listing endpoint, every poll is a status call.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use k8s_openapi::jiff::Timestamp;

use crate::controller::connections::{ConnKey, Resolved};
use crate::{
    dss::{self, JobState},
    sync::lock,
};
/// What DSS says about a job.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observed {
    /// Its state.
    pub(crate) state: JobState,
    /// When DSS started it.
    pub(crate) start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub(crate) end_time: Option<DateTime<Utc>>,
    /// Warnings so far.
    pub(crate) warnings: u64,
    /// The first failed activity, when DSS reports activities.
    pub(crate) failed_activity: Option<String>,
}

impl Observed {
    fn from_status(s: &dss::JobStatus) -> Self {
        Self {
            state: s.state.clone(),
            start_time: s.start_time,
            end_time: s.end_time,
            warnings: s.warnings_count,
            failed_activity: s
                .activities
                .iter()
                .find(|a| a.state == JobState::Failed)
                .map(|a| a.id.clone()),
        }
    }

    fn from_item(i: &dss::JobListItem) -> Self {
        Self {
            state: i.state.clone(),
            start_time: i.start_time,
            end_time: i.end_time,
            warnings: i.warnings_count,
            failed_activity: None,
        }
    }
}

struct Listing {
    fetched: Instant,
    /// None when the last fetch failed: polls then ask DSS job by job until `max_age` passes, instead
    /// of each waiting poller retrying the failing listing in turn.
    jobs: Option<HashMap<String, dss::JobListItem>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Listing>>>;

/// A project's full job listing taken for the crash guard's searches, and when (wall clock: searches
/// need a listing taken after a moment recorded in status).
type SearchSlot = Arc<tokio::sync::Mutex<Option<(Timestamp, Arc<Vec<dss::JobListItem>>)>>>;

/// The shared observer of DSS jobs.
pub(crate) struct Poller {
    max_age: Duration,
    slots: Mutex<HashMap<(ConnKey, String), Slot>>,
    /// Projects (per connection) whose DSS answers the running-jobs listing with 404/405.
    unsupported: Mutex<HashSet<(ConnKey, String)>>,
    /// The latest full job listing of each project searched for lost starts.
    searches: Mutex<HashMap<(ConnKey, String), SearchSlot>>,
}

impl Poller {
    /// A poller whose listings are reused for `max_age`.
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            slots: Mutex::new(HashMap::new()),
            unsupported: Mutex::new(HashSet::new()),
            searches: Mutex::new(HashMap::new()),
        }
    }

    /// The project's jobs (`GET /projects/{pk}/jobs/`) as listed at or after `taken_after`: the latest
    /// listing when it is recent enough, else a new one from `list`. Searches for lost starts that
    /// begin together (after a takeover, say) share one listing per project.
    pub(crate) async fn jobs_listed_after<F, Fut, E>(
        &self,
        conn: &ConnKey,
        project_key: &str,
        taken_after: Timestamp,
        list: F,
    ) -> Result<Arc<Vec<dss::JobListItem>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<dss::JobListItem>, E>>,
    {
        let slot = {
            let mut searches = lock(&self.searches);
            searches
                .entry((conn.clone(), project_key.to_string()))
                .or_default()
                .clone()
        };
        // Holding the slot while fetching makes concurrent searches of one project share one request.
        let mut listing = slot.lock().await;
        if let Some((taken, jobs)) = listing.as_ref()
            && *taken >= taken_after
        {
            return Ok(jobs.clone());
        }
        let taken = Timestamp::now();
        let jobs = Arc::new(list().await?);
        *listing = Some((taken, jobs.clone()));
        Ok(jobs)
    }

    /// The current state of a job.
    pub(crate) async fn observe(
        &self,
        conn: &Resolved,
        project_key: &str,
        job_id: &str,
        job_started: Instant,
    ) -> Result<Observed, dss::Error> {
        if let Some(item) = self.listed(conn, project_key, job_id, job_started).await {
            return Ok(item);
        }
        let status = conn.client.get_status(project_key, job_id).await?;
        Ok(Observed::from_status(&status))
    }

    /// A job's full status (for terminal details: activities, warnings).
    pub(crate) async fn status(
        &self,
        conn: &Resolved,
        project_key: &str,
        job_id: &str,
    ) -> Result<Observed, dss::Error> {
        let status = conn.client.get_status(project_key, job_id).await?;
        Ok(Observed::from_status(&status))
    }

    async fn listed(
        &self,
        conn: &Resolved,
        project_key: &str,
        job_id: &str,
        job_started: Instant,
    ) -> Option<Observed> {
        let key = (conn.key.clone(), project_key.to_string());
        if lock(&self.unsupported).contains(&key) {
            return None;
        }
        let slot = { lock(&self.slots).entry(key.clone()).or_default().clone() };
        // Holding the slot while fetching makes concurrent pollers of one project share one request.
        let mut listing = slot.lock().await;
        let recent = listing
            .as_ref()
            .is_some_and(|l| l.fetched.elapsed() < self.max_age);
        let fresh = recent
            && listing
                .as_ref()
                .is_some_and(|l| l.jobs.is_none() || l.fetched >= job_started);
        if !fresh {
            let fetched = Instant::now();
            match conn.client.list_running_jobs(project_key).await {
                Ok(items) => {
                    let jobs = items.into_iter().map(|i| (i.job_id.clone(), i)).collect();
                    *listing = Some(Listing {
                        fetched,
                        jobs: Some(jobs),
                    });
                }
                Err(e) if e.status() == Some(404) || e.status() == Some(405) => {
                    // This DSS predates the listing (or the project is unknown, which the status call
                    // reports precisely): poll job by job for this project from now on.
                    lock(&self.unsupported).insert(key);
                    return None;
                }
                Err(_) => {
                    *listing = Some(Listing { fetched, jobs: None });
                    return None;
                }
            }
        }
        let item = listing.as_ref()?.jobs.as_ref()?.get(job_id)?;
        // The listing only holds active jobs; a terminal state there is still checked directly.
        (!item.state.is_terminal()).then(|| Observed::from_item(item))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn searches_share_a_listing_taken_after_what_they_need() {
        let poller = Poller::new(Duration::from_secs(2));
        let calls = AtomicU32::new(0);
        let list = || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(Vec::new())
        };
        let before = Timestamp::now();
        let key = ConnKey::Default;
        poller.jobs_listed_after(&key, "P", before, list).await.unwrap();
        poller.jobs_listed_after(&key, "P", before, list).await.unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1, "shared");
        poller.jobs_listed_after(&key, "Q", before, list).await.unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 2, "per project");
        let later = Timestamp::now() + Duration::from_secs(5);
        poller.jobs_listed_after(&key, "P", later, list).await.unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 3, "too old for a later need");
    }
}
