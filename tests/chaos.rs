//! Chaos soak: builds keep flowing through two operator replicas (leader election) while faults are
//! injected: DSS 5xx, 429, connection resets, lost start responses, latency, a DSS outage, SIGKILL of
//! the leader (also right after a start POST whose response was lost), and a kube-apiserver restart.
//! At the end the invariants are checked from the emulator's and the apiserver's own records, and the
//! counts are printed so the run is evidence, not a claim.
//!
//!   cargo test --test chaos -- --nocapture               # short (CHAOS_SECONDS=75)
//!   CHAOS_SECONDS=600 cargo test --test chaos -- --nocapture   # make chaos
//!
//! It restarts the shared kube-apiserver, so it runs alone (hack/test.sh runs it in its own step).

// Test code: a failed set-up step is a failed test.
#![allow(clippy::unwrap_used)]

mod harness;

use std::{
    collections::{BTreeMap, HashMap},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use harness::{Operator, TestNs};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kube_dss::{
    crd::{DatasetBuild, Phase},
    emulator::{
        self, Config, Faults,
        admin::{AdminClient, JobRecord},
    },
};
use rand::Rng;
use serde_json::json;

const KEY: &str = "chaos-key-3e9a7b1c";
/// The connection's budget; the operator's token bucket holds as many tokens as one second's rate.
const RPS: u64 = 10;
const BURST: u64 = RPS;
const LEASE_SECONDS: u64 = 6;

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
}

type Book = Arc<Mutex<BTreeMap<String, Tracked>>>;

fn secs_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn phase(b: &DatasetBuild) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

/// The build a job belongs to: each build asks for its own partition, named after it.
fn owner(job: &JobRecord) -> Option<String> {
    job.def["outputs"][0]["partition"].as_str().map(str::to_string)
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

    /// SIGKILLs the leader (or, if none is leading yet, the first replica) and starts it again.
    async fn kill_leader(&mut self) -> String {
        let mut idx = None;
        for _ in 0..(LEASE_SECONDS * 4) {
            idx = self.leader().await;
            if idx.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let i = idx.unwrap_or(0);
        let (name, mut op) = self.ops.remove(i);
        op.kill();
        self.restarts += 1;
        self.spawn(&name);
        name
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

    // Builds keep flowing while faults come and go.
    let book: Book = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = tokio::spawn(flow_builds(builds.clone(), book.clone(), stop.clone()));

    let started = Instant::now();
    let mut faults_log: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut rates = RateLog::default();
    let episodes: [&'static str; 9] = [
        "errors-5xx",
        "rate-limit-429",
        "kill-leader",
        "resets",
        "lost-starts",
        "kill-after-lost-start",
        "latency",
        "apiserver-restart",
        "dss-outage",
    ];
    let mut outage_done = false;
    let mut round = 0usize;
    while started.elapsed() < Duration::from_secs(chaos_seconds) {
        let mut order: Vec<&'static str> = episodes.to_vec();
        if round > 0 {
            // Later rounds shuffle the order (the outage stays once per run).
            use rand::seq::SliceRandom;
            order.shuffle(&mut rand::rng());
        }
        round += 1;
        for ep in order {
            if started.elapsed() >= Duration::from_secs(chaos_seconds) {
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
            *faults_log.entry(ep).or_default() += 1;
            match (ep, faults) {
                (_, Some(f)) => {
                    admin.set_faults(&f).await.unwrap();
                    tick(&mut replicas, &mut rates, &admin, hold).await;
                    admin.clear_faults().await.unwrap();
                }
                ("kill-leader", _) => {
                    // At a random point of the flow.
                    tick(&mut replicas, &mut rates, &admin, hold / 2).await;
                    let who = replicas.kill_leader().await;
                    eprintln!("            SIGKILLed leader {who}");
                    tick(&mut replicas, &mut rates, &admin, hold).await;
                }
                ("kill-after-lost-start", _) => {
                    // The next start creates its job but the answer is lost; the leader dies right then,
                    // before it can record anything.
                    admin
                        .set_faults(&Faults {
                            drop_start_responses: 1,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_secs(30) {
                        if admin.faults().await.is_ok_and(|f| f.drop_start_responses == 0) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let who = replicas.kill_leader().await;
                    eprintln!("            SIGKILLed leader {who} after a lost start response");
                    admin.clear_faults().await.unwrap();
                    tick(&mut replicas, &mut rates, &admin, hold).await;
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
                    tick(&mut replicas, &mut rates, &admin, hold).await;
                }
                ("dss-outage", _) => {
                    outage_done = true;
                    admin
                        .set_faults(&Faults {
                            outage: true,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    tick(
                        &mut replicas,
                        &mut rates,
                        &admin,
                        Duration::from_secs(outage_seconds),
                    )
                    .await;
                    admin.clear_faults().await.unwrap();
                }
                _ => unreachable!(),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flow.await.unwrap();
    admin.clear_faults().await.unwrap();
    let chaos_elapsed = started.elapsed();
    eprintln!(
        "chaos: faults over after {:.0}s; settling",
        chaos_elapsed.as_secs_f64()
    );

    // Settle: every live build must reach its terminal phase (suspended ones stay Suspended).
    let settle = Instant::now();
    let mut pending = Vec::new();
    while settle.elapsed() < Duration::from_secs(300) {
        replicas.supervise();
        rates.sample(&admin).await;
        let Ok(list) = builds.list(&ListParams::default()).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
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

    // ---- invariants ----
    let mut violations: Vec<String> = Vec::new();
    for p in &pending {
        violations.push(format!("build not settled after 300 s: {p}"));
    }
    let book = book.lock().unwrap().clone();
    let mut by_build: HashMap<String, Vec<&JobRecord>> = HashMap::new();
    for j in &jobs {
        match owner(j) {
            Some(o) if book.contains_key(&o) => by_build.entry(o).or_default().push(j),
            _ => violations.push(format!("job {} belongs to no build of this run", j.id)),
        }
    }
    let live_by_name: HashMap<String, &DatasetBuild> = live.iter().map(|b| (b.name_any(), b)).collect();
    let mut by_kind: BTreeMap<String, u32> = BTreeMap::new();
    for (name, t) in &book {
        *by_kind.entry(format!("{:?}", t.kind)).or_default() += 1;
        let mut js = by_build.get(name).cloned().unwrap_or_default();
        js.sort_by_key(|j| j.initiation_timestamp);
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
        let Some(last) = js.last() else {
            continue; // already reported above
        };
        let expected = match last.state.as_str() {
            "DONE" => Some(Phase::Succeeded),
            "FAILED" => Some(Phase::Failed),
            "ABORTED" => Some(Phase::Aborted),
            _ => None,
        };
        if phase(b) != expected || s.job_id.as_deref() != Some(last.id.as_str()) {
            violations.push(format!(
                "{name} is {:?} with job {:?}, but its last DSS job {} is {}",
                phase(b),
                s.job_id,
                last.id,
                last.state
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
         faults injected (episodes): {faults_log:?}\n\
         emulator fault counters: {:?}\n\
         operator restarts: {} (of which {} exits on their own, e.g. lease lost during the apiserver restart)\n\
         builds: {} {by_kind:?}, deleted {}\n\
         DSS jobs: {} {states:?}\n\
         DSS requests: {} total; per second max {max_second} (limit {} + {BURST} per replica start in the 3 s before; {above_steady} second(s) above {} next to a start), average {average:.1}, max in 10 s {max_10s}\n\
         starts sent from the start gate's queue: {queued_sends}\n\
         panics: {panics}\n\
         violations: {}",
        chaos_elapsed.as_secs_f64(),
        round,
        settle.elapsed().as_secs_f64(),
        stats.faults_injected,
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

/// Waits `d` while supervising the replicas and sampling the DSS request rate.
async fn tick(replicas: &mut Replicas, rates: &mut RateLog, admin: &AdminClient, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        replicas.supervise();
        rates.sample(admin).await;
        tokio::time::sleep(Duration::from_millis(500).min(end.saturating_duration_since(Instant::now())))
            .await;
    }
}

/// Creates about one build a second of a random kind; deletes running `Deleted` builds and gives
/// succeeded `Rerun` builds their new token. Tolerates apiserver errors (it is restarted meanwhile).
async fn flow_builds(api: Api<DatasetBuild>, book: Book, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut i = 0u32;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
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
        let mut spec = json!({
            "connectionRef": {"name": "dss"}, "projectKey": "CHAOS",
            "outputs": [{"id": dataset, "partition": name}],
        });
        match kind {
            Kind::Retry => spec["retry"] = json!({"limit": 1, "backoffSeconds": 1}),
            Kind::Suspended => spec["suspend"] = json!(true),
            Kind::Rerun => spec["rerunToken"] = json!("1"),
            _ => {}
        }
        let b: DatasetBuild = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        match api.create(&PostParams::default(), &b).await {
            Ok(_) => {
                book.lock().unwrap().insert(
                    name,
                    Tracked {
                        kind,
                        requests: 1,
                        deleted: false,
                    },
                );
                i += 1;
            }
            // A create whose answer was lost to the apiserver restart may still have happened:
            // ask until the apiserver answers.
            Err(_) => {
                for _ in 0..60 {
                    match api.get_opt(&name).await {
                        Ok(Some(_)) => {
                            book.lock().unwrap().insert(
                                name.clone(),
                                Tracked {
                                    kind,
                                    requests: 1,
                                    deleted: false,
                                },
                            );
                            i += 1;
                            break;
                        }
                        Ok(None) => break,
                        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            }
        }
        // Act on builds that reached the point of their scenario.
        if let Ok(list) = api.list(&ListParams::default()).await {
            for b in &list.items {
                step_scenario(&api, &book, b).await;
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
