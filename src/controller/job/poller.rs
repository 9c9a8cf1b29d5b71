//! Watching DSS jobs: one steady listing per connection wakes the builds whose jobs changed.
//!
//! Every active job a build tracks is registered here with the build that owns it. A task per
//! connection lists the key's running jobs (`GET /jobs/running/?allUsers=False`, one request
//! whatever the number of jobs and projects) every `interval` while it has jobs to watch, and wakes
//! a build when its job's state changed or the job left the listing (it ended). A build's own look at
//! its job then reads the latest listing, and asks DSS for the job's status only once the job has
//! left it. So a job's end is noticed within about one listing interval however long it queued or
//! ran, and a running job costs no request of its own.
//!
//! Correctness never depends on the listing: while it fails or is older than a few intervals, builds
//! are told they are not watched and poll their jobs themselves (the planner's own intervals). A DSS
//! without the instance-wide listing is listed project by project; one without either is polled job
//! by job, and asked again every [`REPROBE`] (an upgrade needs no restart). Only DSS's own JSON
//! error (or a 405) says a listing is missing: a gateway's bare 404 is trouble that passes.
//!
//! No lock is held across a DSS call: the listing task copies what it needs, calls, and takes the
//! lock again to compare.

mod listing;

use listing::list_while_watched;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    controller::connections::{ConnKey, Resolved},
    crd::DatasetBuild,
    dss::{self, DssClient, JobState},
    sync::lock,
};

/// How long a DSS without a running-jobs listing is polled job by job before it is asked again.
pub(crate) const REPROBE: Duration = Duration::from_secs(600);

/// The most jobs one listing keeps (the watched ones only; the listing itself may be longer).
const MAX_WATCHED: usize = 100_000;

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

/// What a look at a job found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Seen {
    /// The job's state, or `None` when nothing is new since the build last recorded it (the next
    /// listing wakes the build if that changes).
    pub(crate) observed: Option<Observed>,
    /// Whether a listing watches the job and wakes its build on a change: the build then needs no
    /// poll of its own.
    pub(crate) watched: bool,
}

/// A job of one project.
type JobKey = (String, String);

/// Wakes builds, through the controller of the watch scope they belong to.
#[derive(Default)]
struct Wakes {
    /// By namespace; `None` for a scope over all namespaces.
    scopes: Mutex<HashMap<Option<String>, mpsc::UnboundedSender<ObjectRef<DatasetBuild>>>>,
}

impl Wakes {
    fn wake(&self, builds: Vec<ObjectRef<DatasetBuild>>) {
        if builds.is_empty() {
            return;
        }
        let scopes = lock(&self.scopes);
        for build in builds {
            let tx = scopes.get(&build.namespace).or_else(|| scopes.get(&None));
            if let Some(tx) = tx {
                // A closed channel is a scope shutting down: nothing left to wake.
                let _ = tx.send(build);
            }
        }
    }
}

/// A watched job.
struct Tracked {
    /// The build it belongs to.
    build: ObjectRef<DatasetBuild>,
    /// When it was registered: only listings asked for afterwards can say anything about it.
    since: Instant,
    /// Its state as the build last recorded it (a listing showing another state wakes the build).
    known: Option<JobState>,
    /// It left the listing (or the listing showed it ended): the build asks DSS directly.
    left: Option<Instant>,
}

/// Where a connection's running jobs are listed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// The key's own running jobs, in one request.
    Mine,
    /// Each watched project's running jobs (a DSS without the instance-wide listing).
    Projects,
    /// No listing: jobs are polled one by one until then.
    Off { until: Instant },
}

/// The latest listing of a connection.
#[derive(Default)]
struct Snapshot {
    /// When it was asked for.
    asked: Option<Instant>,
    /// Whether it succeeded.
    ok: bool,
    /// The watched jobs it showed.
    jobs: HashMap<JobKey, Observed>,
}

/// One connection's watch.
struct ConnWatch {
    /// The connection's client (the newest one a build resolved).
    client: DssClient,
    /// The jobs watched.
    tracked: HashMap<JobKey, Tracked>,
    snapshot: Snapshot,
    source: Source,
    /// Whether the listing task runs.
    listing: bool,
}

/// The shared watcher of DSS jobs.
pub(crate) struct Poller {
    interval: Duration,
    conns: Mutex<HashMap<ConnKey, Arc<Mutex<ConnWatch>>>>,
    wakes: Arc<Wakes>,
}

impl Poller {
    /// A watcher listing each connection's running jobs every `interval`.
    pub(crate) fn new(interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            interval,
            conns: Mutex::new(HashMap::new()),
            wakes: Arc::default(),
        })
    }

    /// The wake-ups of the builds of one watch scope (all namespaces when `namespace` is `None`),
    /// for its controller.
    pub(crate) fn wakes(
        &self,
        namespace: Option<&str>,
    ) -> impl Stream<Item = ObjectRef<DatasetBuild>> + use<> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.wakes.scopes).insert(namespace.map(str::to_owned), tx);
        tokio_stream_from(rx)
    }

    /// How long a listing may be old and still stand for the jobs it shows.
    fn max_age(&self) -> Duration {
        self.interval * 3 + Duration::from_secs(2)
    }

    /// Registers a job the build `build` just started (or adopted): the next listing wakes the build
    /// when the job's state is no longer `known`.
    pub(crate) fn track(
        self: &Arc<Self>,
        conn: &Resolved,
        build: ObjectRef<DatasetBuild>,
        project: &str,
        job_id: &str,
        known: Option<JobState>,
    ) {
        let key = (project.to_owned(), job_id.to_owned());
        // The connections' lock is held while the job is added, so that a listing task ending for
        // want of jobs (under the same lock) cannot strand it.
        let mut conns = lock(&self.conns);
        let watch = entry(&mut conns, conn);
        let mut w = lock(&watch);
        w.tracked.insert(
            key,
            Tracked {
                build,
                since: Instant::now(),
                known,
                left: None,
            },
        );
        if !w.listing {
            w.listing = true;
            tokio::spawn(list_while_watched(self.clone(), conn.key.clone(), watch.clone()));
        }
    }

    /// The current state of a job of `build`, recorded as `known`: from the latest listing when it
    /// shows the job, else (the job left the listing, or nothing lists it) from DSS directly.
    pub(crate) async fn observe(
        self: &Arc<Self>,
        conn: &Resolved,
        build: ObjectRef<DatasetBuild>,
        project: &str,
        job_id: &str,
        known: Option<JobState>,
    ) -> Result<Seen, dss::Error> {
        let key = (project.to_owned(), job_id.to_owned());
        if let Some(seen) = self.from_listing(conn, &build, &key, known) {
            return Ok(seen);
        }
        let observed = self.status(conn, project, job_id).await?;
        let watched = self.after_status(conn, build, &key, &observed);
        Ok(Seen {
            observed: Some(observed),
            watched,
        })
    }

    /// What the listing says of a watched job: its state once a listing asked for after it was
    /// registered shows it, nothing new until then. `None` when DSS must be asked directly (the job
    /// left the listing, or no listing can be trusted).
    fn from_listing(
        self: &Arc<Self>,
        conn: &Resolved,
        build: &ObjectRef<DatasetBuild>,
        key: &JobKey,
        known: Option<JobState>,
    ) -> Option<Seen> {
        let pending = Seen {
            observed: None,
            watched: true,
        };
        let watch = self.conn(conn);
        let mut w = lock(&watch);
        let healthy = w.healthy(self.max_age());
        let asked = w.snapshot.asked;
        let shown = w.snapshot.jobs.get(key).cloned();
        let Some(t) = w.tracked.get_mut(key) else {
            // Not watched yet (after a restart, an adoption): watch it from now on. The next listing
            // says where it stands (one request for every such job, where a status call each would
            // cost one per job); without a listing, DSS is asked directly.
            let listed = !matches!(w.source, Source::Off { .. });
            drop(w);
            self.track(conn, build.clone(), &key.0, &key.1, known);
            return listed.then_some(pending);
        };
        if !healthy || t.left.is_some() {
            return None;
        }
        t.build = build.clone();
        match (asked, shown) {
            // A listing asked for after the job was registered shows it running.
            (Some(asked), Some(o)) if asked >= t.since && !o.state.is_terminal() => {
                t.known = Some(o.state.clone());
                Some(Seen {
                    observed: Some(o),
                    watched: true,
                })
            }
            // No listing has covered it yet: the next one wakes the build on a change.
            (None, _) => Some(pending),
            (Some(asked), _) if asked < t.since => Some(pending),
            _ => None,
        }
    }

    /// After DSS answered for a job directly: an ended job is no longer watched, a running one is
    /// watched again from now on (a listing glitch, a restart). Whether it is watched.
    fn after_status(
        &self,
        conn: &Resolved,
        build: ObjectRef<DatasetBuild>,
        key: &JobKey,
        observed: &Observed,
    ) -> bool {
        let watch = self.conn(conn);
        let mut w = lock(&watch);
        let healthy = w.healthy(self.max_age());
        if observed.state.is_terminal() {
            w.tracked.remove(key);
            return false;
        }
        let Some(t) = w.tracked.get_mut(key) else {
            return false;
        };
        t.left = None;
        t.since = Instant::now();
        t.known = Some(observed.state.clone());
        t.build = build;
        healthy
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

    /// The watch of a connection, with the newest client a build resolved for it.
    fn conn(&self, conn: &Resolved) -> Arc<Mutex<ConnWatch>> {
        entry(&mut lock(&self.conns), conn)
    }
}

/// The watch of a connection (created when missing), with the newest client a build resolved for it.
fn entry(conns: &mut HashMap<ConnKey, Arc<Mutex<ConnWatch>>>, conn: &Resolved) -> Arc<Mutex<ConnWatch>> {
    let watch = conns
        .entry(conn.key.clone())
        .or_insert_with(|| {
            Arc::new(Mutex::new(ConnWatch {
                client: conn.client.clone(),
                tracked: HashMap::new(),
                snapshot: Snapshot::default(),
                source: Source::Mine,
                listing: false,
            }))
        })
        .clone();
    lock(&watch).client = conn.client.clone();
    watch
}

impl ConnWatch {
    /// Whether the latest listing can stand for the jobs it shows (or the first one is on its way).
    fn healthy(&self, max_age: Duration) -> bool {
        if matches!(self.source, Source::Off { .. }) {
            return false;
        }
        match self.snapshot.asked {
            None => self.listing,
            Some(asked) => self.snapshot.ok && asked.elapsed() <= max_age,
        }
    }
}

/// A stream of what the channel receives.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + use<T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests;
