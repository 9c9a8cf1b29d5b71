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

use std::{
    collections::{HashMap, HashSet},
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
    dss::{self, DssClient, JobState, Running},
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
        let listed = {
            let watch = self.conn(conn);
            let mut w = lock(&watch);
            let healthy = w.healthy(self.max_age());
            let asked = w.snapshot.asked;
            let shown = w.snapshot.jobs.get(&key).cloned();
            match w.tracked.get_mut(&key) {
                Some(t) if healthy && t.left.is_none() => {
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
                        (None, _) => Some(Seen {
                            observed: None,
                            watched: true,
                        }),
                        (Some(asked), _) if asked < t.since => Some(Seen {
                            observed: None,
                            watched: true,
                        }),
                        _ => None,
                    }
                }
                Some(_) => None,
                None => {
                    // Not watched yet (after a restart, an adoption): watch it from now on. The next
                    // listing says where it stands (one request for every such job, where a status
                    // call each would cost one per job); without a listing, DSS is asked directly.
                    let listed = !matches!(w.source, Source::Off { .. });
                    drop(w);
                    self.track(conn, build.clone(), project, job_id, known.clone());
                    listed.then_some(Seen {
                        observed: None,
                        watched: true,
                    })
                }
            }
        };
        if let Some(seen) = listed {
            return Ok(seen);
        }
        let observed = self.status(conn, project, job_id).await?;
        let watched = {
            let watch = self.conn(conn);
            let mut w = lock(&watch);
            let healthy = w.healthy(self.max_age());
            if observed.state.is_terminal() {
                w.tracked.remove(&key);
                false
            } else if let Some(t) = w.tracked.get_mut(&key) {
                // Still running (a listing glitch, or a restart): watch it again from now on.
                t.left = None;
                t.since = Instant::now();
                t.known = Some(observed.state.clone());
                t.build = build;
                healthy
            } else {
                false
            }
        };
        Ok(Seen {
            observed: Some(observed),
            watched,
        })
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
async fn list_while_watched(poller: Arc<Poller>, key: ConnKey, watch: Arc<Mutex<ConnWatch>>) {
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
fn compare(
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
fn degrade(w: &mut ConnWatch, asked: Instant) -> Vec<ObjectRef<DatasetBuild>> {
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
fn missing(e: &dss::Error) -> bool {
    match e.status() {
        Some(405) => true,
        Some(404) => e.is_dss_error(),
        _ => false,
    }
}

/// A stream of what the channel receives.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + use<T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(name: &str) -> ObjectRef<DatasetBuild> {
        ObjectRef::new(name).within("ns")
    }

    fn running(state: JobState) -> Observed {
        Observed {
            state,
            start_time: None,
            end_time: None,
            warnings: 0,
            failed_activity: None,
        }
    }

    fn watch_with(jobs: &[(&str, Option<JobState>)], since: Instant) -> ConnWatch {
        let client = DssClient::new(dss::ClientConfig::new(
            url::Url::parse("http://127.0.0.1:1").unwrap(),
            dss::ApiKey::from("k"),
        ))
        .unwrap();
        ConnWatch {
            client,
            tracked: jobs
                .iter()
                .map(|(id, known)| {
                    (
                        ("P".to_owned(), (*id).to_owned()),
                        Tracked {
                            build: build(id),
                            since,
                            known: known.clone(),
                            left: None,
                        },
                    )
                })
                .collect(),
            snapshot: Snapshot::default(),
            source: Source::Mine,
            listing: true,
        }
    }

    #[tokio::test]
    async fn a_listing_wakes_the_builds_whose_jobs_changed_or_left() {
        let t0 = Instant::now();
        let mut w = watch_with(
            &[
                ("same", Some(JobState::NotStarted)),
                ("started", Some(JobState::NotStarted)),
                ("ended", Some(JobState::Running)),
                ("done-listed", Some(JobState::Running)),
            ],
            t0,
        );
        let listed: HashMap<JobKey, Observed> = [
            ("same", JobState::NotStarted),
            ("started", JobState::Running),
            ("done-listed", JobState::Done),
        ]
        .into_iter()
        .map(|(id, s)| (("P".to_owned(), id.to_owned()), running(s)))
        .collect();
        let mut woken: Vec<String> = compare(&mut w, Instant::now(), listed)
            .into_iter()
            .map(|b| b.name)
            .collect();
        woken.sort();
        assert_eq!(woken, ["done-listed", "ended", "started"]);
        assert!(w.tracked[&("P".into(), "ended".into())].left.is_some());
        assert!(w.tracked[&("P".into(), "same".into())].left.is_none());
        assert!(w.healthy(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn a_job_registered_after_the_listing_was_asked_for_is_left_alone() {
        let asked = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut w = watch_with(&[("new", Some(JobState::NotStarted))], Instant::now());
        assert!(compare(&mut w, asked, HashMap::new()).is_empty());
        assert!(w.tracked[&("P".into(), "new".into())].left.is_none());
    }

    #[tokio::test]
    async fn a_failing_listing_wakes_everyone_once_so_they_poll_by_themselves() {
        let t0 = Instant::now();
        let mut w = watch_with(&[("a", None), ("b", None)], t0);
        compare(&mut w, Instant::now(), HashMap::new());
        // Both left the (empty) listing; a new one is tracked again.
        w.tracked.insert(
            ("P".into(), "c".into()),
            Tracked {
                build: build("c"),
                since: t0,
                known: None,
                left: None,
            },
        );
        assert_eq!(
            degrade(&mut w, Instant::now()).len(),
            1,
            "only the ones still listed"
        );
        assert!(!w.healthy(Duration::from_secs(5)));
        assert!(degrade(&mut w, Instant::now()).is_empty(), "once");
    }

    /// Against the emulator: a tracked job is watched without calls of its own while it runs, its
    /// end wakes its build within about one listing interval, and one status call settles it.
    #[tokio::test]
    async fn a_job_ending_wakes_its_build_and_costs_one_status_call() {
        use futures::StreamExt;

        let yaml = "instance: {maxRunningActivities: 4}\nprojects:\n  - projectKey: P\n    datasets:\n      \
                    - {name: d, build: {durationMs: 1500}}\napiKeys:\n  - {key: k1, id: op, projects: \
                    {\"*\": [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}\n";
        let emu = crate::emulator::spawn(
            crate::emulator::Config::from_yaml(yaml).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let admin = crate::emulator::admin::AdminClient::new(emu.base_url());
        let client = DssClient::new(dss::ClientConfig::new(
            url::Url::parse(&emu.base_url()).unwrap(),
            dss::ApiKey::from("k1"),
        ))
        .unwrap();
        let conn = Resolved {
            key: ConnKey::Default,
            client: client.clone(),
            start_gate: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        let poller = Poller::new(Duration::from_millis(300));
        let mut wakes = std::pin::pin!(poller.wakes(Some("ns")));
        let definition = dss::JobDefinitionBuilder::new(dss::BuildType::NonRecursiveForcedBuild)
            .with_output("d", Some(dss::ObjectType::Dataset), None, None)
            .build();
        let job = client.start_job("P", &definition).await.unwrap().id;
        poller.track(&conn, build("b"), "P", &job, Some(JobState::NotStarted));
        // While it runs, the listing answers for it: no status call.
        let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
        assert_eq!(
            woken.unwrap().map(|b| b.name),
            Some("b".to_owned()),
            "RUNNING wakes it"
        );
        let seen = poller
            .observe(&conn, build("b"), "P", &job, Some(JobState::NotStarted))
            .await
            .unwrap();
        assert!(seen.watched);
        assert_eq!(seen.observed.map(|o| o.state), Some(JobState::Running));
        let stats = admin.stats().await.unwrap();
        assert_eq!(stats.requests_by_route.get("GET /projects/{pk}/jobs/{id}/"), None);
        // Its end wakes it again; one status call then says DONE and the job is no longer watched.
        let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
        assert_eq!(
            woken.unwrap().map(|b| b.name),
            Some("b".to_owned()),
            "its end wakes it"
        );
        let seen = poller
            .observe(&conn, build("b"), "P", &job, Some(JobState::Running))
            .await
            .unwrap();
        assert_eq!(seen.observed.map(|o| o.state), Some(JobState::Done));
        assert!(!seen.watched);
        let stats = admin.stats().await.unwrap();
        assert_eq!(
            stats.requests_by_route.get("GET /projects/{pk}/jobs/{id}/"),
            Some(&1)
        );
        assert!(
            stats
                .requests_by_route
                .get("GET /jobs/running/")
                .copied()
                .unwrap_or(0)
                >= 2
        );
        emu.shutdown().await;
    }

    #[test]
    fn only_dss_itself_says_a_listing_is_missing() {
        let api = |status, error_type: Option<&str>| dss::Error::Api {
            operation: dss::Operation::ListAllRunningJobs,
            status,
            error_type: error_type.map(str::to_owned),
            message: None,
            detailed_message: None,
            body_excerpt: String::new(),
            retry_after: None,
        };
        assert!(missing(&api(404, Some("NotFoundException"))));
        assert!(missing(&api(405, None)));
        assert!(!missing(&api(404, None)), "a gateway's bare 404");
        assert!(!missing(&api(503, Some("ServerException"))));
    }
}
