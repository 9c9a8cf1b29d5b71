//! The bench's own view of the builds: a watch on DatasetBuilds that notes the wall-clock moment
//! each build is first seen Succeeded. Detection lag measured from here includes everything the
//! operator does after DSS ended the job (its poll schedule, the budget wait, the status write) and
//! the apiserver's watch delivery; it does not depend on timestamps the operator writes itself.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use kube_dss::{
    crd::{DatasetBuild, Phase},
    emulator::admin::JobRecord,
};
use serde_json::{Value, json};

/// What the watch saw of one build.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    /// The phase in the latest version seen.
    pub(crate) phase: Option<Phase>,
    /// Epoch milliseconds (this machine's clock) when Succeeded=True was first seen.
    pub(crate) succeeded_ms: Option<i64>,
    /// The job that ended: connection, project and `status.jobId` in the version that first
    /// showed Succeeded=True.
    pub(crate) job: Option<JobKey>,
}

/// A DSS job: (DSSConnection, project, job id). Job ids are only unique within a project of one
/// DSS (they are the dataset and the start time to the millisecond).
pub(crate) type JobKey = (String, String, String);

/// The key of a build's current job.
pub(crate) fn job_key(b: &DatasetBuild) -> Option<JobKey> {
    Some((
        b.spec.connection_ref.as_ref()?.name.clone(),
        b.spec.project_key.clone(),
        b.status.as_ref()?.job_id.clone()?,
    ))
}

type SeenMap = Arc<Mutex<HashMap<String, Seen>>>;

/// A running watch; stops when dropped.
pub(crate) struct BuildWatch {
    seen: SeenMap,
    task: tokio::task::JoinHandle<()>,
}

fn succeeded(b: &DatasetBuild) -> bool {
    b.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Succeeded" && c.status == "True")
    })
}

fn note(seen: &SeenMap, b: &DatasetBuild) {
    let now = chrono::Utc::now().timestamp_millis();
    let Some(name) = b.metadata.name.clone() else {
        return;
    };
    let mut seen = seen.lock().unwrap();
    let e = seen.entry(name).or_default();
    e.phase = b.status.as_ref().and_then(|s| s.phase);
    if e.succeeded_ms.is_none() && succeeded(b) {
        e.succeeded_ms = Some(now);
        e.job = job_key(b);
    }
}

impl BuildWatch {
    /// Starts watching and returns once the initial listing is done, so that no later change is
    /// missed.
    pub(crate) async fn start(api: Api<DatasetBuild>) -> BuildWatch {
        let seen: SeenMap = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut ready = Some(ready_tx);
                let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) => note(&seen, &b),
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("bench watch: {e}"),
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .expect("bench watch lists the builds")
            .unwrap();
        BuildWatch { seen, task }
    }

    /// A copy of what was seen so far, by build name.
    pub(crate) fn snapshot(&self) -> HashMap<String, Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Builds for which `pick(name, seen)` holds.
    pub(crate) fn count(&self, pick: &dyn Fn(&str, &Seen) -> bool) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, s)| pick(n, s))
            .count()
    }

    fn phases(&self) -> BTreeMap<String, usize> {
        let mut phases = BTreeMap::new();
        for s in self.seen.lock().unwrap().values() {
            *phases.entry(format!("{:?}", s.phase)).or_default() += 1;
        }
        phases
    }

    /// Waits until `pick` holds for `n` builds, calling `tick` about once a second; returns the
    /// time since `since`, or None on timeout.
    pub(crate) async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        since: Instant,
        what: &str,
        pick: &dyn Fn(&str, &Seen) -> bool,
        mut tick: impl FnMut(),
    ) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        let mut last_print = Instant::now();
        while Instant::now() < deadline {
            let done = self.count(pick);
            tick();
            if done >= n {
                return Some(since.elapsed());
            }
            if last_print.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "  {:>5.0}s  {what}: {done}/{n}  {:?}",
                    since.elapsed().as_secs_f64(),
                    self.phases()
                );
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        None
    }
}

/// Seen Succeeded.
pub(crate) fn done(_: &str, s: &Seen) -> bool {
    s.succeeded_ms.is_some()
}

impl Drop for BuildWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Detection lags (seconds) of the builds `pick` selects: the moment the watch first saw
/// Succeeded=True minus the DSS job's `endTime` (epoch ms). Builds whose job has no end time are
/// left out.
pub(crate) fn lags(
    seen: &HashMap<String, Seen>,
    jobs: &HashMap<JobKey, JobTimes>,
    pick: &dyn Fn(&str) -> bool,
) -> Vec<f64> {
    let mut lags: Vec<f64> = seen
        .iter()
        .filter(|(n, _)| pick(n))
        .filter_map(|(_, s)| {
            let end = jobs.get(s.job.as_ref()?).map(|t| t.end).filter(|e| *e > 0)?;
            Some((s.succeeded_ms? - end) as f64 / 1000.0)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    lags
}

/// The detection lag in three parts, each sorted (seconds): from the job's end to the first
/// running-jobs listing that left it out (`endListedTime`), from there to the first status call that
/// found it ended (`endReadTime`), and from that call to the watch's first sight of Succeeded.
/// Builds whose job lacks one of these moments are left out.
pub(crate) fn lag_parts(seen: &HashMap<String, Seen>, jobs: &HashMap<JobKey, JobTimes>) -> [Vec<f64>; 3] {
    let mut parts: [Vec<f64>; 3] = Default::default();
    for s in seen.values() {
        let Some(t) = s.job.as_ref().and_then(|j| jobs.get(j)) else {
            continue;
        };
        let Some(seen) = s.succeeded_ms else { continue };
        if t.end <= 0 || t.listed <= 0 || t.read <= 0 {
            continue;
        }
        let secs = |from: i64, to: i64| (to - from) as f64 / 1000.0;
        parts[0].push(secs(t.end, t.listed));
        parts[1].push(secs(t.listed, t.read));
        parts[2].push(secs(t.read, seen));
    }
    for p in &mut parts {
        p.sort_by(f64::total_cmp);
    }
    parts
}

/// When DSS ended a job, when a running-jobs listing first left it out, and when a status call
/// first found it ended (epoch ms, 0 when it has not happened).
pub(crate) struct JobTimes {
    pub(crate) end: i64,
    pub(crate) listed: i64,
    pub(crate) read: i64,
}

/// The times of an emulator's jobs, by the key the watch gives them (`connection` names the
/// emulator's DSSConnection).
pub(crate) fn job_times(
    connection: &str,
    records: Vec<JobRecord>,
) -> impl Iterator<Item = (JobKey, JobTimes)> + '_ {
    records.into_iter().map(move |j| {
        let t = JobTimes {
            end: j.end_time,
            listed: j.end_listed_time,
            read: j.end_read_time,
        };
        ((connection.to_string(), j.project_key, j.id), t)
    })
}

/// min, p50, p90, p99, max and the sample count of sorted values.
pub(crate) fn summary(sorted: &[f64]) -> Value {
    json!({
        "min": sorted.first(), "p50": super::percentile(sorted, 50.0),
        "p90": super::percentile(sorted, 90.0), "p99": super::percentile(sorted, 99.0),
        "max": sorted.last(), "samples": sorted.len(),
    })
}
