//! Chaos soak: builds keep flowing through two operator replicas (leader election) while faults are
//! injected: DSS 5xx, 429, connection resets, lost start responses, latency, a DSS outage, SIGKILL of
//! the leader (also right after a start POST whose response was lost), two builds of one definition
//! whose start responses are both lost, and a kube-apiserver restart. Builds share a few definitions,
//! so the search for a lost start meets other builds' jobs and, at times, several candidates: the
//! test then plays the user and names one with the `kube-dss.dev/adopt-job` annotation.
//!
//! Every fault episode lasts until the emulator's own counter shows its fault was injected. At the
//! end the invariants are checked from the emulator's and the apiserver's own records (jobs are
//! attributed to builds by what the operator recorded in their status), and the counts are printed
//! so the run is evidence, not a claim.
//!
//!   cargo test --test chaos -- --nocapture               # short (CHAOS_SECONDS=75)
//!   CHAOS_SECONDS=600 cargo test --test chaos -- --nocapture   # make chaos
//!
//! The first round of episodes always runs in full, so a short run injects every kind of fault once.
//! It restarts the shared kube-apiserver, so it runs alone (hack/test.sh runs it in its own step).

// Test code: a failed set-up step is a failed test.
#![allow(clippy::unwrap_used)]

mod harness;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use harness::{Operator, TestNs};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kube_dss::{
    crd::{ADOPT_ANNOTATION, DatasetBuild, Phase},
    emulator::{
        self, Config, Faults,
        admin::{AdminClient, FaultCounters, JobRecord},
    },
};
use rand::Rng;
use serde_json::json;

const KEY: &str = "chaos-key-3e9a7b1c";
/// The connection's budget; the operator's token bucket holds as many tokens as one second's rate.
const RPS: u64 = 10;
const BURST: u64 = RPS;
const LEASE_SECONDS: u64 = 6;
/// The partitions builds ask for: few, so builds share definitions (but for builds deleted while
/// running, which ask for their own).
const PARTITIONS: [&str; 2] = ["p0", "p1"];
/// The longest a fault episode waits for its fault to be injected once.
const INJECT_WITHIN: Duration = Duration::from_secs(30);
/// The operator's default `--clock-skew-seconds`, in milliseconds.
const CLOCK_SKEW_MS: i64 = 30_000;

const EMULATOR: &str = r#"
instance: {maxRunningActivities: 30}
projects:
  - projectKey: CHAOS
    datasets:
      - {name: ok, build: {durationMs: 2000, log: ["building ok"]}}
      - {name: bad, build: {durationMs: 1000, outcome: FAILED, message: "boom", log: ["ERROR: boom"]}}
      - {name: slow, build: {durationMs: 600000}}
apiKeys:
  - {key: chaos-key-3e9a7b1c, id: kube-dss-chaos, projects: {CHAOS: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}
"#;

/// What a build was created to exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Succeeds.
    Ok,
    /// Fails, no retry.
    Bad,
    /// Fails, one retry allowed.
    Retry,
    /// `suspend: true`: no job, ever.
    Suspended,
    /// A long job, deleted once it runs (deletionPolicy Abort): its job must end ABORTED.
    Deleted,
    /// Succeeds, then gets a new rerunToken: exactly two jobs.
    Rerun,
}

#[derive(Clone, Debug)]
struct Tracked {
    kind: Kind,
    /// Run requests made (1, or 2 once a Rerun build got its new token).
    requests: u32,
    deleted: bool,
    /// The definition: the output dataset and partition (project CHAOS, the default type).
    dataset: &'static str,
    partition: String,
    /// Its creationTimestamp, epoch milliseconds.
    created_ms: i64,
}

type Book = Arc<Mutex<BTreeMap<String, Tracked>>>;

/// What the operator recorded in the builds' status, as seen on the apiserver during the run (a
/// watch, the flow's listings and the final listing), and what the test did as the user.
#[derive(Clone, Debug, Default)]
struct Record {
    /// Every job id each build ever recorded (`status.jobId` and `status.history`).
    jobs: BTreeMap<String, BTreeSet<String>>,
    /// Builds seen Stalled with reason StartOutcomeUnknown.
    unknown: BTreeSet<String>,
    /// Job ids the test named in an adopt-job annotation, and for which build.
    given: BTreeMap<String, String>,
    /// Adopt-job annotations written, and annotations cleared so the build searches again.
    annotated: u32,
    cleared: u32,
    /// The resourceVersion a build had after the test last acted on it, and when.
    acted: HashMap<String, (String, Instant)>,
}

impl Record {
    fn note(&mut self, b: &DatasetBuild) {
        let Some(s) = &b.status else { return };
        let jobs = self.jobs.entry(b.name_any()).or_default();
        jobs.extend(s.job_id.iter().cloned());
        jobs.extend(s.history.iter().map(|h| h.job_id.clone()));
        if stalled_unknown(b).is_some() {
            self.unknown.insert(b.name_any());
        }
    }

    /// Whether a build other than `name` recorded the job.
    fn tracked_by_other(&self, job: &str, name: &str) -> bool {
        self.jobs.iter().any(|(b, js)| b != name && js.contains(job))
    }
}

type Rec = Arc<Mutex<Record>>;

fn secs_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn phase(b: &DatasetBuild) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

/// The Stalled condition of a build waiting for the user to name its job.
fn stalled_unknown(b: &DatasetBuild) -> Option<&Condition> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "StartOutcomeUnknown")
}

/// The job ids a StartOutcomeUnknown message lists: "... was lost (DSS job a, DSS job b): set ...".
fn listed_candidates(message: &str) -> Vec<String> {
    let Some((_, rest)) = message.split_once("was lost (") else {
        return Vec::new();
    };
    let Some((list, _)) = rest.split_once("):") else {
        return Vec::new();
    };
    list.split(", ")
        .filter_map(|s| s.strip_prefix("DSS job "))
        .map(str::to_string)
        .collect()
}

/// Whether a DSS job builds the definition a build asked for.
fn same_definition(job: &JobRecord, t: &Tracked) -> bool {
    let out = &job.def["outputs"];
    job.project_key == "CHAOS"
        && out.as_array().is_some_and(|o| o.len() == 1)
        && out[0]["id"].as_str() == Some(t.dataset)
        && out[0]["partition"].as_str() == Some(t.partition.as_str())
        && job.def["type"].as_str().unwrap_or("NON_RECURSIVE_FORCED_BUILD") == "NON_RECURSIVE_FORCED_BUILD"
}

/// The emulator's counter of the fault an episode injects.
fn injected(c: &FaultCounters, episode: &str) -> u64 {
    match episode {
        "errors-5xx" => c.error5xx,
        "rate-limit-429" => c.rate_limited,
        "resets" => c.reset,
        "lost-starts" | "kill-after-lost-start" | "lost-twins" => c.dropped_start_responses,
        "latency" => c.latency,
        "dss-outage" => c.outage,
        _ => 0,
    }
}

/// Two operator replicas on one Lease, restarted when they exit (as a Deployment would).
struct Replicas {
    ns: String,
    ops: Vec<(String, Operator)>,
    logs: Vec<std::path::PathBuf>,
    restarts: u32,
    exits: u32,
    /// Unix seconds at which a replica process was started.
    starts: Vec<i64>,
}

/// A leader SIGKILLed and the replica that took its place.
struct Takeover {
    killed: String,
    by: String,
    after: Duration,
}

impl Replicas {
    fn args(ns: &str, name: &str) -> Vec<String> {
        [
            "--leader-election",
            "--lease-name",
            "kube-dss-chaos",
            "--lease-namespace",
            ns,
            "--pod-name",
            name,
            "--lease-duration-seconds",
            &LEASE_SECONDS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn spawn(&mut self, name: &str) {
        let args = Self::args(&self.ns, name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let op = Operator::start(&self.ns, &args);
        self.starts.push(chrono::Utc::now().timestamp());
        self.logs.push(op.log.clone());
        self.ops.push((name.to_string(), op));
    }

    /// Restarts replicas whose process ended (a lost lease ends the process on purpose).
    fn supervise(&mut self) {
        let mut gone = Vec::new();
        for (i, (_, op)) in self.ops.iter_mut().enumerate() {
            if op.exited() {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            let (name, _) = self.ops.remove(i);
            self.exits += 1;
            self.restarts += 1;
            self.spawn(&name);
        }
    }

    /// The replica that holds the lease, if one says so.
    async fn leader(&self) -> Option<usize> {
        for (i, (_, op)) in self.ops.iter().enumerate() {
            if let Ok(r) = reqwest::get(format!("{}/metrics", op.admin)).await
                && let Ok(text) = r.text().await
                && text.lines().any(|l| l.trim() == "kube_dss_leader 1")
            {
                return Some(i);
            }
        }
        None
    }

    /// SIGKILLs the replica that says it holds the lease, waits until the other one says it took
    /// over, then starts the killed one again (a pod's container restarts after a while). Errs when
    /// no replica leads before the kill, or none takes over after it.
    async fn kill_leader(&mut self) -> Result<Takeover, String> {
        let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS * 6);
        let i = loop {
            if let Some(i) = self.leader().await {
                break i;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no replica reported kube_dss_leader 1 within {} s",
                    LEASE_SECONDS * 6
                ));
            }
            self.supervise();
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let (killed, mut op) = self.ops.remove(i);
        op.kill();
        let killed_at = Instant::now();
        self.restarts += 1;
        let deadline = killed_at + Duration::from_secs(LEASE_SECONDS * 4);
        let by = loop {
            self.supervise();
            if let Some(j) = self.leader().await {
                break Some(self.ops[j].0.clone());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let after = killed_at.elapsed();
        self.spawn(&killed);
        match by {
            Some(by) => Ok(Takeover { killed, by, after }),
            None => Err(format!(
                "leader {killed} SIGKILLed, and no other replica took over within {} s",
                LEASE_SECONDS * 4
            )),
        }
    }
}

/// Per-second DSS request counts, merged from periodic snapshots (the emulator keeps ten minutes).
#[derive(Default)]
struct RateLog(BTreeMap<i64, u64>);

impl RateLog {
    async fn sample(&mut self, admin: &AdminClient) {
        if let Ok(s) = admin.stats().await {
            for (sec, n) in s.requests_per_second {
                let e = self.0.entry(sec).or_default();
                *e = (*e).max(n);
            }
        }
    }
}

/// What the episodes did, for the summary and the checks.
#[derive(Default)]
struct Episodes {
    /// Episodes run, by kind.
    runs: BTreeMap<&'static str, u32>,
    /// Faults the emulator counted during the episodes of each kind.
    injected: BTreeMap<&'static str, u64>,
    takeovers: Vec<String>,
    /// Leaders SIGKILLed while a start they sent had lost its response and was not recorded.
    kills_after_lost_start: u32,
    /// Pairs of builds of one definition whose start responses were both lost.
    twins: Vec<(String, String)>,
    violations: Vec<String>,
}

/// Everything the episodes act on.
struct Soak {
    replicas: Replicas,
    rates: RateLog,
    admin: AdminClient,
    builds: Api<DatasetBuild>,
    book: Book,
    /// Held while the flow must not create or step builds.
    gate: Arc<tokio::sync::Mutex<()>>,
    ep: Episodes,
}

impl Soak {
    /// Waits `d` while supervising the replicas and sampling the DSS request rate.
    async fn tick(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.replicas.supervise();
            self.rates.sample(&self.admin).await;
            tokio::time::sleep(Duration::from_millis(500).min(end.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    async fn counters(&self) -> FaultCounters {
        loop {
            if let Ok(s) = self.admin.stats().await {
                return s.faults_injected;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the dropped-start budget is spent; false after `INJECT_WITHIN`.
    async fn drops_spent(&mut self) -> bool {
        let t = Instant::now();
        while t.elapsed() < INJECT_WITHIN {
            if self
                .admin
                .faults()
                .await
                .is_ok_and(|f| f.drop_start_responses == 0)
            {
                return true;
            }
            self.replicas.supervise();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Sets a fault set for `hold`, and longer until the emulator counted it at least once.
    async fn fault_episode(&mut self, ep: &'static str, faults: Faults, hold: Duration) {
        let before = injected(&self.counters().await, ep);
        self.admin.set_faults(&faults).await.unwrap();
        self.tick(hold).await;
        let t = Instant::now();
        while injected(&self.counters().await, ep) == before && t.elapsed() < INJECT_WITHIN {
            self.tick(Duration::from_millis(500)).await;
        }
        self.admin.clear_faults().await.unwrap();
        self.account(ep, before).await;
    }

    /// Adds what the emulator counted since `before` to the episode's kind; none is a violation.
    async fn account(&mut self, ep: &'static str, before: u64) {
        let delta = injected(&self.counters().await, ep) - before;
        *self.ep.injected.entry(ep).or_default() += delta;
        if delta == 0 {
            self.ep
                .violations
                .push(format!("episode {ep}: the emulator counted no injected fault"));
        }
    }

    async fn kill_leader(&mut self, why: &str) {
        match self.replicas.kill_leader().await {
            Ok(t) => {
                let line = format!(
                    "{why}: SIGKILLed leader {}, {} took over after {:.1} s",
                    t.killed,
                    t.by,
                    t.after.as_secs_f64()
                );
                eprintln!("            {line}");
                self.ep.takeovers.push(line);
            }
            Err(e) => self.ep.violations.push(format!("{why}: {e}")),
        }
    }

    /// The next start creates its job but its answer is lost; the leader dies right then, before
    /// it can record anything.
    async fn kill_after_lost_start(&mut self) {
        let before = injected(&self.counters().await, "kill-after-lost-start");
        self.admin
            .set_faults(&Faults {
                drop_start_responses: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        let spent = self.drops_spent().await;
        self.admin.clear_faults().await.unwrap();
        if !spent {
            self.ep.violations.push(format!(
                "kill-after-lost-start: no start was sent within {} s",
                INJECT_WITHIN.as_secs()
            ));
            return;
        }
        self.kill_leader("after a lost start response").await;
        self.ep.kills_after_lost_start += 1;
        self.account("kill-after-lost-start", before).await;
    }

    /// Whether nothing will send a start without the flow: every build is settled, runs its last
    /// job, is suspended or deleted, or waits for the user.
    async fn quiet(&self) -> bool {
        let Ok(list) = self.builds.list(&ListParams::default()).await else {
            return false;
        };
        let book = self.book.lock().unwrap().clone();
        list.items.iter().all(|b| {
            let t = book.get(&b.name_any());
            let s = b.status.clone().unwrap_or_default();
            let last_attempt = t.is_none_or(|t| t.kind != Kind::Retry) || s.attempts.unwrap_or(0) >= 2;
            b.metadata.deletion_timestamp.is_some()
                || phase(b) == Some(Phase::Suspended)
                || stalled_unknown(b).is_some()
                || settled(b, t)
                || (s.job_id.is_some()
                    && matches!(phase(b), Some(Phase::Queued | Phase::Running))
                    && last_attempt)
        })
    }

    /// Two builds of one definition whose start responses are both lost: each search then meets
    /// both jobs. The flow pauses meanwhile, so the two lost responses are theirs.
    async fn lost_twins(&mut self, n: usize) {
        let gate = self.gate.clone();
        let _paused = gate.lock().await;
        let t = Instant::now();
        while !self.quiet().await && t.elapsed() < Duration::from_secs(45) {
            self.tick(Duration::from_millis(500)).await;
        }
        let before = injected(&self.counters().await, "lost-twins");
        for attempt in 0..3 {
            self.admin
                .set_faults(&Faults {
                    drop_start_responses: 2,
                    ..Default::default()
                })
                .await
                .unwrap();
            let names = (format!("tw{n}-{attempt}a"), format!("tw{n}-{attempt}b"));
            let partition = PARTITIONS[attempt % PARTITIONS.len()];
            for name in [&names.0, &names.1] {
                let spec = json!({
                    "connectionRef": {"name": "dss"}, "projectKey": "CHAOS",
                    "outputs": [{"id": "ok", "partition": partition}],
                });
                create(&self.builds, &self.book, name, Kind::Ok, "ok", partition, spec).await;
            }
            let spent = self.drops_spent().await;
            self.admin.clear_faults().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let lost = |b: Option<DatasetBuild>| {
                b.and_then(|b| b.status)
                    .is_some_and(|s| s.start_request.is_some() && s.job_id.is_none())
            };
            let a = self.builds.get_opt(&names.0).await.ok().flatten();
            let b = self.builds.get_opt(&names.1).await.ok().flatten();
            if spent && lost(a) && lost(b) {
                eprintln!(
                    "            both start responses of {} and {} lost",
                    names.0, names.1
                );
                self.ep.twins.push(names);
                break;
            }
            eprintln!("            a start response lost elsewhere; twins again");
        }
        self.account("lost-twins", before).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_soak() {
    let chaos_seconds = secs_env("CHAOS_SECONDS", 75);
    let outage_seconds = secs_env("CHAOS_OUTAGE_SECONDS", if chaos_seconds >= 300 { 60 } else { 15 });
    let emu = emulator::spawn(
        Config::from_yaml(EMULATOR).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let admin = AdminClient::new(emu.base_url());
    let client = harness::client().await;
    let ns = TestNs::new(&client, "chaos").await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    // maxInFlight 2 leaves one place at the start gate: under latency and kills, starts queue there
    // and are sent later by a leader that may be killed in between.
    ns.connection("dss", &emu.base_url(), Some((RPS, 2))).await;
    let builds: Api<DatasetBuild> = ns.api();

    let mut replicas = Replicas {
        ns: ns.name.clone(),
        ops: Vec::new(),
        logs: Vec::new(),
        restarts: 0,
        exits: 0,
        starts: Vec::new(),
    };
    replicas.spawn("a");
    replicas.spawn("b");
    for (_, op) in &replicas.ops {
        op.ready().await;
    }

    // What the operator records, watched for the whole run (the watch survives the apiserver
    // restart; the flow's listings and the final listing fill any gap).
    let rec: Rec = Arc::default();
    let watch = tokio::spawn(watch_records(builds.clone(), rec.clone()));
    // Builds keep flowing while faults come and go.
    let book: Book = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let flow = tokio::spawn(flow_builds(
        builds.clone(),
        book.clone(),
        rec.clone(),
        gate.clone(),
        stop.clone(),
    ));
    let mut soak = Soak {
        replicas,
        rates: RateLog::default(),
        admin: admin.clone(),
        builds: builds.clone(),
        book: book.clone(),
        gate,
        ep: Episodes::default(),
    };

    let started = Instant::now();
    let episodes: [&'static str; 10] = [
        "errors-5xx",
        "rate-limit-429",
        "kill-leader",
        "resets",
        "lost-starts",
        "kill-after-lost-start",
        "lost-twins",
        "latency",
        "apiserver-restart",
        "dss-outage",
    ];
    let mut outage_done = false;
    let mut round = 0usize;
    while round == 0 || started.elapsed() < Duration::from_secs(chaos_seconds) {
        let mut order: Vec<&'static str> = episodes.to_vec();
        if round > 0 {
            // Later rounds shuffle the order (the outage stays once per run).
            use rand::seq::SliceRandom;
            order.shuffle(&mut rand::rng());
        }
        round += 1;
        for ep in order {
            // The first round always runs in full: every kind of fault, once.
            if round > 1 && started.elapsed() >= Duration::from_secs(chaos_seconds) {
                break;
            }
            if ep == "dss-outage" && outage_done {
                continue;
            }
            let hold = Duration::from_millis(rand::rng().random_range(4000..8000));
            let seed = rand::rng().random::<u64>();
            let faults = match ep {
                "errors-5xx" => Some(Faults {
                    seed,
                    error_rate: 0.25,
                    error_status: Some(if seed % 2 == 0 { 500 } else { 503 }),
                    ..Default::default()
                }),
                "rate-limit-429" => Some(Faults {
                    seed,
                    rate_limit_rate: 0.3,
                    retry_after_seconds: Some(1),
                    ..Default::default()
                }),
                "resets" => Some(Faults {
                    seed,
                    reset_rate: 0.2,
                    ..Default::default()
                }),
                "lost-starts" => Some(Faults {
                    seed,
                    drop_start_response_rate: 0.5,
                    ..Default::default()
                }),
                "latency" => Some(Faults {
                    seed,
                    latency_ms: 200,
                    latency_jitter_ms: 1500,
                    ..Default::default()
                }),
                _ => None,
            };
            eprintln!("chaos {:>4.0}s: {ep}", started.elapsed().as_secs_f64());
            *soak.ep.runs.entry(ep).or_default() += 1;
            match (ep, faults) {
                (_, Some(f)) => soak.fault_episode(ep, f, hold).await,
                ("kill-leader", _) => {
                    // At a random point of the flow.
                    soak.tick(hold / 2).await;
                    soak.kill_leader("kill-leader").await;
                    soak.tick(hold).await;
                }
                ("kill-after-lost-start", _) => {
                    soak.kill_after_lost_start().await;
                    soak.tick(hold).await;
                }
                ("lost-twins", _) => {
                    let n = soak.ep.runs.get("lost-twins").copied().unwrap_or(0) as usize;
                    soak.lost_twins(n).await;
                    soak.tick(hold).await;
                }
                ("apiserver-restart", _) => {
                    let out = Command::new(harness::repo().join("hack/cluster.sh"))
                        .arg("restart-apiserver")
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "restart-apiserver: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    soak.tick(hold).await;
                }
                ("dss-outage", _) => {
                    outage_done = true;
                    let f = Faults {
                        outage: true,
                        ..Default::default()
                    };
                    soak.fault_episode(ep, f, Duration::from_secs(outage_seconds))
                        .await;
                }
                _ => unreachable!(),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    flow.await.unwrap();
    admin.clear_faults().await.unwrap();
    let chaos_elapsed = started.elapsed();
    eprintln!(
        "chaos: faults over after {:.0}s; settling",
        chaos_elapsed.as_secs_f64()
    );
    let Soak {
        mut replicas,
        mut rates,
        ep: episodes_done,
        ..
    } = soak;
    let mut violations = episodes_done.violations.clone();

    // Settle: every live build must reach its terminal phase (suspended ones stay Suspended); the
    // test answers the builds that wait for the user.
    let settle = Instant::now();
    let mut pending = Vec::new();
    while settle.elapsed() < Duration::from_secs(300) {
        replicas.supervise();
        rates.sample(&admin).await;
        let Ok(list) = builds.list(&ListParams::default()).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        for b in &list.items {
            rec.lock().unwrap().note(b);
            resolve_unknown(&builds, &rec, b).await;
        }
        let book_now = book.lock().unwrap().clone();
        pending = list
            .items
            .iter()
            .filter(|b| b.metadata.deletion_timestamp.is_none())
            .filter(|b| !settled(b, book_now.get(&b.name_any())))
            .map(|b| format!("{} {:?}", b.name_any(), phase(b)))
            .collect();
        let deleting = list.items.iter().any(|b| b.metadata.deletion_timestamp.is_some());
        if pending.is_empty() && !deleting {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let live: Vec<DatasetBuild> = builds.list(&ListParams::default()).await.unwrap().items;
    let jobs = admin.jobs().await.unwrap();
    rates.sample(&admin).await;
    let stats = admin.stats().await.unwrap();
    watch.abort();

    // ---- invariants ----
    for p in &pending {
        violations.push(format!("build not settled after 300 s: {p}"));
    }
    // Each kind of fault was injected for real, by the emulator's own counters.
    let c = &stats.faults_injected;
    for (what, n) in [
        ("5xx answers", c.error5xx),
        ("429 answers", c.rate_limited),
        ("connection resets", c.reset),
        ("lost start responses", c.dropped_start_responses),
        ("delayed calls", c.latency),
        ("outage answers", c.outage),
    ] {
        if n == 0 {
            violations.push(format!("no {what} were injected: {c:?}"));
        }
    }
    if episodes_done.kills_after_lost_start == 0 {
        violations.push("no leader was SIGKILLed right after a lost start response".into());
    }
    let book = book.lock().unwrap().clone();
    let mut rec = rec.lock().unwrap().clone();
    for b in &live {
        rec.note(b);
    }
    // Several builds of one definition lost their start responses, and the search met several
    // candidates (the operator asked the user, who answered with the annotation).
    if episodes_done.twins.is_empty() {
        violations.push("no two builds of one definition both lost their start response".into());
    }
    if rec.unknown.is_empty() {
        violations.push("no lost-start search met several candidates (StartOutcomeUnknown)".into());
    }
    let by_id: HashMap<&str, &JobRecord> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    // Every DSS job belongs to exactly one build: no orphan, none given to two builds.
    for j in &jobs {
        let owners: Vec<&String> = rec
            .jobs
            .iter()
            .filter(|(_, js)| js.contains(&j.id))
            .map(|(b, _)| b)
            .collect();
        match owners.as_slice() {
            [] => violations.push(format!(
                "job {} ({}, initiated {}) is recorded by no build: an orphan",
                j.id, j.state, j.initiation_timestamp
            )),
            [_] => {}
            many => violations.push(format!("job {} is recorded by several builds: {many:?}", j.id)),
        }
    }
    // What a build recorded exists in DSS, builds its definition and was started after it existed.
    let mut older = 0;
    for (name, ids) in &rec.jobs {
        let Some(t) = book.get(name) else {
            if !ids.is_empty() {
                violations.push(format!("{name} is not a build of this run but recorded {ids:?}"));
            }
            continue;
        };
        for id in ids {
            let Some(j) = by_id.get(id.as_str()) else {
                violations.push(format!("{name} recorded job {id}, which DSS does not have"));
                continue;
            };
            if !same_definition(j, t) {
                violations.push(format!(
                    "{name} ({} {}) recorded job {id} of another definition: {}",
                    t.dataset, t.partition, j.def["outputs"]
                ));
            }
            // Jobs of one definition are alike: a lost start's search takes one initiated since its
            // request, less the clock skew the operator tolerates (its default), so a build may
            // get a job that another build's lost start created shortly before it existed; never
            // an older one. creationTimestamp has whole seconds.
            if j.initiation_timestamp < t.created_ms - 1000 - CLOCK_SKEW_MS {
                violations.push(format!(
                    "{name} recorded job {id}, initiated {} ms before the build existed",
                    t.created_ms - j.initiation_timestamp
                ));
            } else if j.initiation_timestamp < t.created_ms - 1000 {
                older += 1;
            }
        }
    }
    let live_by_name: HashMap<String, &DatasetBuild> = live.iter().map(|b| (b.name_any(), b)).collect();
    let mut by_kind: BTreeMap<String, u32> = BTreeMap::new();
    for (name, t) in &book {
        *by_kind.entry(format!("{:?}", t.kind)).or_default() += 1;
        let js: Vec<&JobRecord> = rec
            .jobs
            .get(name)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| by_id.get(id.as_str()).copied())
                    .collect()
            })
            .unwrap_or_default();
        let n = js.len() as u32;
        // Jobs per run request: exactly one; a Retry build may add the one retry its spec allows.
        let (min, max) = match t.kind {
            Kind::Suspended => (0, 0),
            Kind::Retry => (t.requests, t.requests + 1),
            _ => (t.requests, t.requests),
        };
        let min = if t.deleted { 0 } else { min };
        if n < min || n > max {
            violations.push(format!(
                "{name} ({:?}, {} run request(s)): {n} DSS jobs, expected {min}..={max}: {:?}",
                t.kind,
                t.requests,
                js.iter().map(|j| &j.id).collect::<Vec<_>>()
            ));
        }
        if t.deleted {
            // deletionPolicy Abort: the job was aborted, or had already ended.
            for j in &js {
                if !matches!(j.state.as_str(), "ABORTED" | "DONE" | "FAILED") {
                    violations.push(format!("{name} was deleted but its job {} is {}", j.id, j.state));
                }
            }
            if live_by_name.contains_key(name) {
                violations.push(format!(
                    "{name} was deleted but is still there (finalizer left behind?)"
                ));
            }
            continue;
        }
        let Some(b) = live_by_name.get(name) else {
            violations.push(format!("{name} disappeared without being deleted"));
            continue;
        };
        let s = b.status.clone().unwrap_or_default();
        if t.kind == Kind::Suspended {
            if phase(b) != Some(Phase::Suspended) {
                violations.push(format!("{name} is suspended but in phase {:?}", phase(b)));
            }
            continue;
        }
        // The phase follows the state of the job the build tracks now.
        let last = s.job_id.as_deref().and_then(|id| by_id.get(id));
        let expected = match last.map(|j| j.state.as_str()) {
            Some("DONE") => Some(Phase::Succeeded),
            Some("FAILED") => Some(Phase::Failed),
            Some("ABORTED") => Some(Phase::Aborted),
            _ => None,
        };
        if expected.is_none() || phase(b) != expected {
            violations.push(format!(
                "{name} is {:?} with job {:?}, whose DSS state is {:?}",
                phase(b),
                s.job_id,
                last.map(|j| &j.state)
            ));
        }
        let want = match t.kind {
            Kind::Ok | Kind::Rerun => Some(Phase::Succeeded),
            Kind::Bad | Kind::Retry => Some(Phase::Failed),
            _ => None,
        };
        if want.is_some() && phase(b) != want {
            violations.push(format!("{name} ({:?}) ended {:?}", t.kind, phase(b)));
        }
    }
    // Definitions shared, by the builds that asked for them.
    let mut shared: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for t in book.values().filter(|t| t.kind != Kind::Suspended) {
        *shared.entry((t.dataset, t.partition.as_str())).or_default() += 1;
    }
    let own = shared.values().filter(|n| **n == 1).count();
    shared.retain(|_, n| *n > 1);
    // The budget, from the emulator's own per-second record. The operator's token bucket holds
    // `BURST` tokens refilled at `RPS`, so one process sends at most BURST + RPS in any one second.
    // The bucket lives in the process: a replica that starts (after a kill, or re-taking its own
    // lease under the same identity at once) brings a full bucket, so the seconds just after a
    // start allow one more BURST per start. Nothing else is tolerated.
    let allowance = |sec: i64| {
        let starts = replicas
            .starts
            .iter()
            .filter(|s| **s >= sec - 2 && **s <= sec)
            .count() as u64;
        RPS + BURST + BURST * starts
    };
    let max_second = rates.0.values().copied().max().unwrap_or(0);
    let over: Vec<(i64, u64, u64)> = rates
        .0
        .iter()
        .filter(|(s, n)| **n > allowance(**s))
        .map(|(s, n)| (*s, *n, allowance(*s)))
        .collect();
    let above_steady = rates.0.values().filter(|n| **n > RPS + BURST).count();
    if !over.is_empty() {
        violations.push(format!(
            "the connection budget ({RPS}/s, burst {BURST}) was exceeded in {} second(s) (second, requests, allowed): {over:?}",
            over.len()
        ));
    }
    let (first, last) = (
        rates.0.keys().next().copied().unwrap_or(0),
        rates.0.keys().last().copied().unwrap_or(0),
    );
    let span = (last - first + 1).max(1) as f64;
    let average = rates.0.values().sum::<u64>() as f64 / span;
    let max_10s = rates
        .0
        .keys()
        .map(|s| rates.0.range(*s..s + 10).map(|(_, n)| n).sum::<u64>())
        .max()
        .unwrap_or(0);
    let mut panics = 0;
    // Starts sent from the gate's queue (recorded while they waited), as the operators' debug logs
    // show them.
    let mut queued_sends = 0;
    for log in &replicas.logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        queued_sends += text
            .matches("sending a start request recorded while it waited for its turn")
            .count();
        if text.contains("panicked") {
            panics += 1;
            violations.push(format!("a panic in {}", log.display()));
        }
    }

    // No finalizer left behind: delete everything left and see it go.
    let _ = builds
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let t = Instant::now();
    let mut leftover = Vec::new();
    while t.elapsed() < Duration::from_secs(120) {
        replicas.supervise();
        match builds.list(&ListParams::default()).await {
            Ok(l) if l.items.is_empty() => {
                leftover.clear();
                break;
            }
            Ok(l) => {
                leftover = l
                    .items
                    .iter()
                    .map(|b| (b.name_any(), b.finalizers().to_vec()))
                    .collect()
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !leftover.is_empty() {
        violations.push(format!("builds still present 120 s after deletion: {leftover:?}"));
    }

    let mut states: BTreeMap<&str, u32> = BTreeMap::new();
    for j in &jobs {
        *states.entry(j.state.as_str()).or_default() += 1;
    }
    eprintln!(
        "\n== chaos summary ==\n\
         duration: {:.0}s of faults ({} rounds), settled in {:.0}s\n\
         episodes: {:?}\n\
         faults injected during their episodes: {:?}\n\
         emulator fault counters: {:?}\n\
         leader kills: {:?}\n\
         kills right after a lost start response: {}\n\
         twins whose start responses were both lost: {:?}\n\
         builds that met several candidates (StartOutcomeUnknown): {} {:?}\n\
         adopt-job annotations written: {}, cleared for a new search: {}\n\
         jobs a build got that were initiated before it existed (within the clock skew): {older}\n\
         operator restarts: {} (of which {} exits on their own, e.g. lease lost during the apiserver restart)\n\
         builds: {} {by_kind:?}, deleted {}; builds per shared definition: {shared:?}, {own} with a definition of their own\n\
         DSS jobs: {} {states:?}\n\
         DSS requests: {} total; per second max {max_second} (limit {} + {BURST} per replica start in the 3 s before; {above_steady} second(s) above {} next to a start), average {average:.1}, max in 10 s {max_10s}\n\
         starts sent from the start gate's queue: {queued_sends}\n\
         panics: {panics}\n\
         violations: {}",
        chaos_elapsed.as_secs_f64(),
        round,
        settle.elapsed().as_secs_f64(),
        episodes_done.runs,
        episodes_done.injected,
        stats.faults_injected,
        episodes_done.takeovers,
        episodes_done.kills_after_lost_start,
        episodes_done.twins,
        rec.unknown.len(),
        rec.unknown,
        rec.annotated,
        rec.cleared,
        replicas.restarts,
        replicas.exits,
        book.len(),
        book.values().filter(|t| t.deleted).count(),
        jobs.len(),
        stats.requests_total,
        RPS + BURST,
        RPS + BURST,
        violations.len(),
    );
    for v in &violations {
        eprintln!("  VIOLATION: {v}");
    }
    drop(replicas);
    ns.cleanup().await;
    emu.shutdown().await;
    assert!(
        violations.is_empty(),
        "{} invariant violation(s)",
        violations.len()
    );
}

/// Whether a live build is done with its scenario: terminal (a Retry build after its retry, a Rerun
/// build after its second run), or Suspended.
fn settled(b: &DatasetBuild, t: Option<&Tracked>) -> bool {
    let s = b.status.clone().unwrap_or_default();
    let terminal = matches!(
        phase(b),
        Some(Phase::Succeeded | Phase::Failed | Phase::Aborted | Phase::Suspended)
    );
    match t {
        Some(t) if t.kind == Kind::Retry => terminal && s.attempts.unwrap_or(0) >= 2,
        Some(t) if t.kind == Kind::Rerun && t.requests == 2 => {
            terminal && s.last_handled_rerun_token.as_deref() == Some("2")
        }
        _ => terminal,
    }
}

/// Notes every status the apiserver shows, for the whole run.
async fn watch_records(api: Api<DatasetBuild>, rec: Rec) {
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(next) = stream.next().await {
        if let Ok(b) = next {
            rec.lock().unwrap().note(&b);
        }
    }
}

/// Answers a build that waits for the user after a lost start met several candidates, as the
/// README says: name one of the jobs it lists that no other build tracks (and the test did not name
/// for another). With none left, or when the named job is gone to another build, clear the
/// annotation: the build searches again.
async fn resolve_unknown(api: &Api<DatasetBuild>, rec: &Rec, b: &DatasetBuild) {
    let Some(c) = stalled_unknown(b) else { return };
    let name = b.name_any();
    let current = b.annotations().get(ADOPT_ANNOTATION).cloned();
    let listed = listed_candidates(&c.message);
    let (value, answers) = {
        let mut r = rec.lock().unwrap();
        r.unknown.insert(name.clone());
        let rv = b.resource_version().unwrap_or_default();
        // Give the operator time to act on the last answer before answering again.
        if r.acted
            .get(&name)
            .is_some_and(|(v, at)| *v == rv && at.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        let pick = listed
            .iter()
            .find(|j| !r.tracked_by_other(j, &name) && r.given.get(*j).is_none_or(|g| *g == name))
            .cloned();
        let value = match pick {
            Some(j) if current.as_deref() == Some(j.as_str()) => return,
            Some(j) => {
                r.given.insert(j.clone(), name.clone());
                r.annotated += 1;
                json!(j)
            }
            None => {
                r.given.retain(|_, g| *g != name);
                r.cleared += 1;
                serde_json::Value::Null
            }
        };
        (value, r.annotated + r.cleared)
    };
    // A second annotation changes on every answer, so clearing always triggers a new search.
    let patch = json!({"metadata": {"annotations": {
        ADOPT_ANNOTATION: value,
        "chaos.kube-dss.dev/answer": answers.to_string(),
    }}});
    if let Ok(after) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        rec.lock().unwrap().acted.insert(
            name,
            (after.resource_version().unwrap_or_default(), Instant::now()),
        );
    }
}

/// Creates a build and books it; tolerates an apiserver that is restarting (a create whose answer
/// was lost may still have happened: ask until the apiserver answers).
async fn create(
    api: &Api<DatasetBuild>,
    book: &Book,
    name: &str,
    kind: Kind,
    dataset: &'static str,
    partition: &str,
    spec: serde_json::Value,
) -> bool {
    let b: DatasetBuild = serde_json::from_value(json!({
        "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    let tracked = |created: &DatasetBuild| Tracked {
        kind,
        requests: 1,
        deleted: false,
        dataset,
        partition: partition.to_string(),
        created_ms: created
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
    };
    match api.create(&PostParams::default(), &b).await {
        Ok(created) => {
            book.lock().unwrap().insert(name.to_string(), tracked(&created));
            true
        }
        Err(_) => {
            for _ in 0..60 {
                match api.get_opt(name).await {
                    Ok(Some(created)) => {
                        book.lock().unwrap().insert(name.to_string(), tracked(&created));
                        return true;
                    }
                    Ok(None) => return false,
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            false
        }
    }
}

/// Creates about one build a second of a random kind and definition; deletes running `Deleted`
/// builds, gives succeeded `Rerun` builds their new token and answers builds that wait for the
/// user. Tolerates apiserver errors (it is restarted meanwhile). Pauses while `gate` is held.
async fn flow_builds(
    api: Api<DatasetBuild>,
    book: Book,
    rec: Rec,
    gate: Arc<tokio::sync::Mutex<()>>,
    stop: Arc<AtomicBool>,
) {
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        {
            let _running = gate.lock().await;
            let draw = rand::rng().random_range(0..20);
            let kind = match draw {
                0..=7 => Kind::Ok,
                8..=9 => Kind::Bad,
                10..=11 => Kind::Retry,
                12..=13 => Kind::Suspended,
                14..=16 => Kind::Deleted,
                _ => Kind::Rerun,
            };
            let name = format!("c{i}");
            let dataset = match kind {
                Kind::Bad | Kind::Retry => "bad",
                Kind::Deleted => "slow",
                _ => "ok",
            };
            // Builds deleted while running get a definition of their own. A lost start meets the
            // jobs of its definition initiated after its request; when a build of the same definition
            // was deleted since, its job is one of them, and after a leader change nothing tells the
            // operator whose it was: the build stalls on StartOutcomeUnknown, rightly, and only a
            // user who knows can answer (a new rerunToken), which this soak's stand-in cannot.
            // A deleted build's job initiated before the lost start is never taken
            // (lifecycle.rs, a_lost_start_never_adopts_the_job_of_a_deleted_build).
            let own = name.clone();
            let partition = match kind {
                Kind::Deleted => own.as_str(),
                _ => PARTITIONS[rand::rng().random_range(0..PARTITIONS.len())],
            };
            let mut spec = json!({
                "connectionRef": {"name": "dss"}, "projectKey": "CHAOS",
                "outputs": [{"id": dataset, "partition": partition}],
            });
            match kind {
                Kind::Retry => spec["retry"] = json!({"limit": 1, "backoffSeconds": 1}),
                Kind::Suspended => spec["suspend"] = json!(true),
                Kind::Rerun => spec["rerunToken"] = json!("1"),
                _ => {}
            }
            if create(&api, &book, &name, kind, dataset, partition, spec).await {
                i += 1;
            }
            // Act on builds that reached the point of their scenario.
            if let Ok(list) = api.list(&ListParams::default()).await {
                for b in &list.items {
                    rec.lock().unwrap().note(b);
                    step_scenario(&api, &book, b).await;
                    resolve_unknown(&api, &rec, b).await;
                }
            }
        }
        let pause = Duration::from_millis(rand::rng().random_range(500..1200));
        tokio::time::sleep(pause).await;
    }
    // Builds still waiting for their scenario's step get it now.
    for _ in 0..120 {
        let Ok(list) = api.list(&ListParams::default()).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut waiting = 0;
        for b in &list.items {
            rec.lock().unwrap().note(b);
            resolve_unknown(&api, &rec, b).await;
            if step_scenario(&api, &book, b).await {
                waiting += 1;
            }
        }
        if waiting == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Deletes a running `Deleted` build, gives a succeeded `Rerun` build its new token. Returns true
/// when the build still waits for that step.
async fn step_scenario(api: &Api<DatasetBuild>, book: &Book, b: &DatasetBuild) -> bool {
    let name = b.name_any();
    let Some(t) = book.lock().unwrap().get(&name).cloned() else {
        return false;
    };
    let has_job = b.status.as_ref().is_some_and(|s| s.job_id.is_some());
    match t.kind {
        Kind::Deleted if !t.deleted => {
            if !(has_job && phase(b) == Some(Phase::Running)) {
                return true;
            }
            let deleted = api.delete(&name, &DeleteParams::default()).await.is_ok();
            if deleted {
                book.lock().unwrap().get_mut(&name).unwrap().deleted = true;
            }
            !deleted
        }
        Kind::Rerun if t.requests == 1 => {
            if phase(b) != Some(Phase::Succeeded) {
                return true;
            }
            let patch = json!({"spec": {"rerunToken": "2"}});
            let patched = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok();
            if patched {
                book.lock().unwrap().get_mut(&name).unwrap().requests = 2;
            }
            !patched
        }
        _ => false,
    }
}
