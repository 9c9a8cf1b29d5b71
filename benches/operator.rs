//! Operator benchmark (a program, not a timed test): the release operator binary against the local
//! control plane and in-process DSS emulators. Prints a table and writes `target/bench/results.json`
//! and `target/bench/results.md`. `make bench` (hack/bench.sh) runs it on a fresh control plane.
//!
//! Scenarios (sizes can be lowered by env for a quick look):
//! - ceiling: raw status-patch rate of this machine's apiserver through kube-rs (`CEILING_OBJECTS`, 1000)
//! - burst: `BURST_BUILDS` (1000) builds over 10 projects applied at once, jobs of `BURST_JOB_MS`
//!   (10,000) ms, the emulator running at most 100 activities, one connection budget of 20 req/s
//! - idle: `IDLE_BUILDS` (10,000) finished builds watched for `IDLE_SECONDS` (60)
//! - restart: the operator restarted with those finished builds plus `RUNNING_BUILDS` (500) running
//!
//!   hack/bench.sh                                    # the whole thing (make bench)
//!   BURST_BUILDS=100 IDLE_BUILDS=500 RUNNING_BUILDS=50 hack/bench.sh
//!   SCENARIOS=ceiling,burst hack/bench.sh

// A benchmark program: a failed set-up step is a failed run, and unwrap says so loudly.
#![allow(clippy::unwrap_used)]

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::{Child, Command, ExitCode},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use harness::TestNs;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use kube_dss::{
    crd::{DatasetBuild, Phase},
    emulator::{self, Config, admin::AdminClient},
};
use serde_json::{Value, json};

const KEY: &str = "bench-key-8c1d4e2f";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn out_dir() -> PathBuf {
    let dir = harness::repo().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// The operator process and what /proc says about it.

struct Op {
    child: Child,
    admin: String,
    log: PathBuf,
    clk_tck: f64,
}

impl Op {
    fn start(namespace: &str, tag: &str) -> Op {
        let kubeconfig = harness::control_plane();
        let port = harness::free_port();
        let log = out_dir().join(format!("operator-{tag}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kube-dss"))
            .args(["controller", "--namespace", namespace, "--log-format", "json"])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            // As the chart runs it: leader election on, even with one replica.
            .args(["--leader-election", "--lease-name", "kube-dss-bench"])
            .args([
                "--lease-namespace",
                namespace,
                "--pod-name",
                &format!("bench-{tag}"),
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("RUST_LOG")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let clk_tck = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        Op {
            child,
            admin: format!("http://127.0.0.1:{port}"),
            log,
            clk_tck,
        }
    }

    /// Waits until the operator leads and `/readyz` says its caches are synced (a standby is ready
    /// too, so leadership is checked first); returns how long it took from now.
    async fn ready(&self, timeout: Duration) -> Duration {
        let t = Instant::now();
        let http = reqwest::Client::new();
        let mut leading = false;
        while t.elapsed() < timeout {
            if !leading {
                leading = match http.get(format!("{}/metrics", self.admin)).send().await {
                    Ok(r) => r.text().await.is_ok_and(|m| m.contains("kube_dss_leader 1")),
                    Err(_) => false,
                };
            } else if let Ok(r) = http.get(format!("{}/readyz", self.admin)).send().await
                && r.status().is_success()
            {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("operator not ready; see {}", self.log.display());
    }

    fn proc_status(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// Current resident set, MiB.
    fn rss_mib(&self) -> f64 {
        self.proc_status("VmRSS:")
    }

    /// Peak resident set since start, MiB.
    fn peak_rss_mib(&self) -> f64 {
        self.proc_status("VmHWM:")
    }

    /// User + system CPU seconds since start.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        // After the command name: state is field 3, utime 14 and stime 15 (1-based over the whole line).
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        (ticks(11) + ticks(12)) / self.clk_tck
    }

    fn panicked(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("panicked")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// kube-apiserver's own request counters.

/// `apiserver_request_total` summed by (verb, resource, subresource), resource requests only.
type ApiCounts = BTreeMap<(String, String, String), f64>;

async fn apiserver_counts(client: &Client) -> ApiCounts {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut out = ApiCounts::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        if label("resource").is_empty() {
            continue;
        }
        let v: f64 = value.parse().unwrap_or(0.0);
        // Writes refused for a stale resourceVersion are kept apart: they cost a round trip but
        // change nothing.
        let verb = match label("code").as_str() {
            "409" => format!("{} 409", label("verb")),
            _ => label("verb"),
        };
        *out.entry((verb, label("resource"), label("subresource")))
            .or_default() += v;
    }
    out
}

fn delta(after: &ApiCounts, before: &ApiCounts) -> ApiCounts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY")
}

fn sum(d: &ApiCounts, f: impl Fn(&str, &str, &str) -> bool) -> f64 {
    d.iter().filter(|((v, r, s), _)| f(v, r, s)).map(|(_, n)| n).sum()
}

fn api_table(d: &ApiCounts) -> Value {
    d.iter()
        .map(|((v, r, s), n)| {
            let key = if s.is_empty() {
                format!("{v} {r}")
            } else {
                format!("{v} {r}/{s}")
            };
            (key, json!(n))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

// ---------------------------------------------------------------------------------------------
// Set-up helpers.

fn emulator_yaml(projects: usize, datasets: usize, duration_ms: u64, slots: u32) -> String {
    let mut y = format!(
        "instance: {{maxRunningActivities: {slots}, maxJobsRetained: 50000}}\ndefaults: {{durationMs: {duration_ms}}}\nprojects:\n"
    );
    for p in 0..projects {
        y.push_str(&format!("  - projectKey: P{p}\n    datasets:\n"));
        for d in 0..datasets {
            y.push_str(&format!("      - {{name: d{d}}}\n"));
        }
    }
    y.push_str(&format!(
        "apiKeys:\n  - {{key: {KEY}, id: kube-dss-bench, projects: {{\"*\": [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}}}\n"
    ));
    y
}

async fn spawn_emulator(yaml: &str) -> (emulator::Handle, AdminClient) {
    let emu = emulator::spawn(Config::from_yaml(yaml).unwrap(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let admin = AdminClient::new(emu.base_url());
    (emu, admin)
}

/// Creates builds `(name, connection, project, dataset)` in parallel batches.
async fn create_builds(api: &Api<DatasetBuild>, builds: Vec<(String, String, String, String)>) {
    let results: Vec<_> = stream::iter(builds)
        .map(|(name, conn, project, dataset)| {
            let api = api.clone();
            async move {
                let b: DatasetBuild = serde_json::from_value(json!({
                    "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
                    "metadata": {"name": name},
                    "spec": {"connectionRef": {"name": conn}, "projectKey": project,
                             "outputs": [{"id": dataset}]}
                }))
                .unwrap();
                for _ in 0..5 {
                    match api.create(&PostParams::default(), &b).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                Err(name)
            }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(failed.is_empty(), "could not create {} builds", failed.len());
}

async fn list_builds(api: &Api<DatasetBuild>) -> Vec<DatasetBuild> {
    loop {
        match api.list(&ListParams::default()).await {
            Ok(l) => return l.items,
            Err(e) => {
                eprintln!("list failed ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn phase(b: &DatasetBuild) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

/// Waits until `count(pred) >= n`; returns the time it took (from `since`), or None on timeout.
async fn wait_count(
    api: &Api<DatasetBuild>,
    n: usize,
    timeout: Duration,
    since: Instant,
    what: &str,
    pred: impl Fn(&DatasetBuild) -> bool,
    mut tick: impl FnMut(),
) -> Option<Duration> {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    while Instant::now() < deadline {
        let items = list_builds(api).await;
        let done = items.iter().filter(|b| pred(b)).count();
        tick();
        if done >= n {
            return Some(since.elapsed());
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            let mut phases: BTreeMap<String, usize> = BTreeMap::new();
            for b in &items {
                *phases.entry(format!("{:?}", phase(b))).or_default() += 1;
            }
            eprintln!(
                "  {:>5.0}s  {what}: {done}/{n}  {phases:?}",
                since.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Peak requests within one second between two unix seconds, from the emulator's own record.
fn peak_rps(stats: &emulator::admin::Stats, from: i64, to: i64) -> (u64, Vec<(i64, u64)>) {
    let window: Vec<(i64, u64)> = stats
        .requests_per_second
        .iter()
        .copied()
        .filter(|(s, _)| *s >= from && *s <= to)
        .collect();
    (window.iter().map(|(_, n)| *n).max().unwrap_or(0), window)
}

fn route_delta(after: &emulator::admin::Stats, before: &emulator::admin::Stats) -> BTreeMap<String, u64> {
    after
        .requests_by_route
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v - before.requests_by_route.get(k).copied().unwrap_or(0),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

async fn ceiling(client: &Client) -> Value {
    let n = env_usize("CEILING_OBJECTS", 1000);
    let ns = TestNs::new(client, "bench-ceiling").await;
    let api: Api<DatasetBuild> = ns.api();
    let builds = (0..n)
        .map(|i| {
            (
                format!("c{i}"),
                "none".into(),
                "P0".into(),
                format!("d{}", i % 10),
            )
        })
        .collect();
    create_builds(&api, builds).await;
    let mut runs = Vec::new();
    for (concurrency, patches) in [(1usize, n.min(300)), (32, n * 3)] {
        let before = apiserver_counts(client).await;
        let t = Instant::now();
        let errors: usize = stream::iter(0..patches)
            .map(|i| {
                let api = api.clone();
                async move {
                    let name = format!("c{}", i % n);
                    // The same kind of write the operator makes: a server-side apply of the status.
                    let patch = json!({
                        "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
                        "metadata": {"name": name},
                        "status": {"phase": "Running", "state": format!("RUNNING-{i}"),
                                   "observedGeneration": 1}
                    });
                    let pp = PatchParams::apply("kube-dss-bench").force();
                    usize::from(api.patch_status(&name, &pp, &Patch::Apply(&patch)).await.is_err())
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .sum();
        let secs = t.elapsed().as_secs_f64();
        let d = delta(&apiserver_counts(client).await, &before);
        let counted = sum(&d, |v, r, s| {
            v == "PATCH" && r == "datasetbuilds" && s == "status"
        });
        let rate = patches as f64 / secs;
        eprintln!(
            "ceiling: {patches} status patches at concurrency {concurrency} in {secs:.1}s = {rate:.0}/s ({errors} errors, apiserver counted {counted})"
        );
        runs.push(
            json!({"concurrency": concurrency, "patches": patches, "seconds": secs,
                         "patchesPerSecond": rate, "errors": errors, "apiserverCounted": counted}),
        );
    }
    ns.cleanup().await;
    json!({"objects": n, "runs": runs})
}

async fn burst(client: &Client) -> Value {
    let n = env_usize("BURST_BUILDS", 1000);
    let job_ms = env_usize("BURST_JOB_MS", 10_000) as u64;
    let projects = 10;
    let per_project = n.div_ceil(projects);
    let budget = 20u32;
    let slots = 100u32;
    let (emu, admin) = spawn_emulator(&emulator_yaml(projects, per_project, job_ms, slots)).await;
    let ns = TestNs::new(client, "bench-burst").await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    ns.connection("dss", &emu.base_url(), Some((budget.into(), 8)))
        .await;
    let api: Api<DatasetBuild> = ns.api();
    let op = Op::start(&ns.name, "burst");
    op.ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stats0 = admin.stats().await.unwrap();
    let api0 = apiserver_counts(client).await;
    let cpu0 = op.cpu_seconds();
    let unix0 = now_unix();
    let builds = (0..n)
        .map(|i| {
            let (p, d) = (i % projects, i / projects);
            (
                format!("b{i}"),
                "dss".to_string(),
                format!("P{p}"),
                format!("d{d}"),
            )
        })
        .collect();
    let t0 = Instant::now();
    let t0_ms = chrono::Utc::now().timestamp_millis();
    create_builds(&api, builds).await;
    let created = t0.elapsed();
    eprintln!("burst: {n} builds created in {:.1}s", created.as_secs_f64());
    let mut peak_rss = 0f64;
    let all = wait_count(
        &api,
        n,
        Duration::from_secs(1800),
        t0,
        "Succeeded",
        |b| phase(b) == Some(Phase::Succeeded),
        || peak_rss = peak_rss.max(op.rss_mib()),
    )
    .await;
    let wall = t0.elapsed();
    let cpu = op.cpu_seconds() - cpu0;
    let api_d = delta(&apiserver_counts(client).await, &api0);
    let stats1 = admin.stats().await.unwrap();
    let unix1 = now_unix();

    // Detection lag: Succeeded=True's lastTransitionTime against DSS's own end time of the job.
    let jobs: HashMap<String, i64> = admin
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.id, j.end_time))
        .collect();
    let items = list_builds(&api).await;
    let mut lags: Vec<f64> = Vec::new();
    let mut last_transition = 0i64;
    for b in &items {
        let Some(s) = &b.status else { continue };
        let (Some(job), Some(cond)) = (
            s.job_id.as_ref(),
            s.conditions
                .iter()
                .find(|c| c.type_ == "Succeeded" && c.status == "True"),
        ) else {
            continue;
        };
        let ltt = cond.last_transition_time.0.as_millisecond();
        last_transition = last_transition.max(ltt);
        if let Some(end) = jobs.get(job).filter(|e| **e > 0) {
            lags.push((ltt - end) as f64 / 1000.0);
        }
    }
    lags.sort_by(f64::total_cmp);
    let succeeded = items
        .iter()
        .filter(|b| phase(b) == Some(Phase::Succeeded))
        .count();
    let dss_requests = stats1.requests_total - stats0.requests_total;
    let (peak, window) = peak_rps(&stats1, unix0, unix1);
    let seconds_over = window.iter().filter(|(_, c)| *c > u64::from(budget)).count();
    let sustained = {
        // Highest 10-second average: the token bucket allows `burst` extra in any one second.
        let mut best = 0f64;
        for (s, _) in &window {
            let c: u64 = window
                .iter()
                .filter(|(t, _)| t >= s && *t < s + 10)
                .map(|(_, c)| c)
                .sum();
            best = best.max(c as f64 / 10.0);
        }
        best
    };
    let dsb_writes = sum(&api_d, |v, r, _| {
        is_write(v) && v != "POST" && r == "datasetbuilds"
    });
    let status_writes = sum(&api_d, |v, r, s| {
        is_write(v) && r == "datasetbuilds" && s == "status"
    });
    let event_writes = sum(&api_d, |v, r, _| is_write(v) && r == "events");
    let conflicts = sum(&api_d, |v, r, _| v.ends_with(" 409") && r == "datasetbuilds");
    let total_min = (n as f64 / f64::from(slots)).ceil() * job_ms as f64 / 1000.0;
    let res = json!({
        "builds": n, "projects": projects, "jobMs": job_ms, "slots": slots, "budgetRps": budget,
        "succeeded": succeeded, "allSucceeded": all.is_some(),
        "createSeconds": created.as_secs_f64(),
        "allSucceededSeconds": all.map(|d| d.as_secs_f64()),
        "lastTransitionAfterStartSeconds": (last_transition - t0_ms) as f64 / 1000.0,
        "lowerBoundSeconds": total_min,
        "detectionLagSeconds": {"p50": percentile(&lags, 50.0), "p99": percentile(&lags, 99.0),
                                "max": lags.last().copied(), "samples": lags.len()},
        "dssRequests": dss_requests, "dssRequestsPerBuild": dss_requests as f64 / n as f64,
        "dssRequestsByRoute": route_delta(&stats1, &stats0),
        "dssPeakRequestsPerSecond": peak, "dssSecondsAboveBudget": seconds_over,
        "dssPeak10sAverage": sustained,
        "apiserverWrites": api_table(&api_d),
        "datasetbuildWritesPerBuild": dsb_writes / n as f64,
        "statusWritesPerBuild": status_writes / n as f64,
        "eventWritesPerBuild": event_writes / n as f64,
        "conflictedWritesPerBuild": conflicts / n as f64,
        "apiserverWritesPerBuildIncludingEvents": (dsb_writes + event_writes) / n as f64,
        "statusWritesPerSecond": status_writes / wall.as_secs_f64(),
        "operatorPeakRssMiB": op.peak_rss_mib().max(peak_rss),
        "operatorCpuSeconds": cpu,
        "panics": op.panicked(),
    });
    op.stop();
    emu.shutdown().await;
    // The namespace stays: hack/bench.sh throws the whole control plane away afterwards.
    res
}

/// Idle and restart share their set-up: 10,000 builds finished, then 500 running.
async fn idle_and_restart(client: &Client) -> (Value, Value) {
    let n = env_usize("IDLE_BUILDS", 10_000);
    let running = env_usize("RUNNING_BUILDS", 500);
    let idle_secs = env_usize("IDLE_SECONDS", 60) as u64;
    // Finished builds live on one emulator, running ones on another: any call the first one sees
    // after the restart is a call made for a finished build.
    let (emu_f, admin_f) = spawn_emulator(&emulator_yaml(10, 10, 5, 0)).await;
    let (emu_r, admin_r) = spawn_emulator(&emulator_yaml(10, 10, 3_600_000, 0)).await;
    let ns = TestNs::new(client, "bench-idle").await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    ns.connection("finished", &emu_f.base_url(), Some((1000, 64)))
        .await;
    ns.connection("running", &emu_r.base_url(), Some((1000, 64)))
        .await;
    let api: Api<DatasetBuild> = ns.api();
    let op = Op::start(&ns.name, "idle");
    op.ready(Duration::from_secs(60)).await;

    let t0 = Instant::now();
    let builds = (0..n)
        .map(|i| {
            (
                format!("f{i}"),
                "finished".to_string(),
                format!("P{}", i % 10),
                format!("d{}", (i / 10) % 10),
            )
        })
        .collect();
    create_builds(&api, builds).await;
    eprintln!("idle: {n} builds created in {:.1}s", t0.elapsed().as_secs_f64());
    let fill = wait_count(
        &api,
        n,
        Duration::from_secs(3600),
        t0,
        "Succeeded",
        |b| phase(b) == Some(Phase::Succeeded),
        || {},
    )
    .await;
    eprintln!(
        "idle: {n} builds finished after {:.0}s; watching for {idle_secs}s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;

    let s0 = admin_f.stats().await.unwrap();
    let a0 = apiserver_counts(client).await;
    let cpu0 = op.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu = op.cpu_seconds() - cpu0;
    let a_d = delta(&apiserver_counts(client).await, &a0);
    let s1 = admin_f.stats().await.unwrap();
    let minutes = idle_secs as f64 / 60.0;
    // The two metric scrapes of this bench are not resource requests and are not counted.
    let api_requests = sum(&a_d, |_, _, _| true);
    // Calls about jobs are made for builds; the rest is the connection's own periodic credential
    // check (`GET /projects/`), one per DSSConnection however many builds it has.
    let routes = route_delta(&s1, &s0);
    let for_builds: u64 = routes
        .iter()
        .filter(|(k, _)| k.contains("/jobs"))
        .map(|(_, v)| v)
        .sum();
    let idle = json!({
        "builds": n, "fillSeconds": fill.map(|d| d.as_secs_f64()), "windowSeconds": idle_secs,
        "dssRequestsPerMinute": (s1.requests_total - s0.requests_total) as f64 / minutes,
        "dssRequestsForBuildsPerMinute": for_builds as f64 / minutes,
        "dssRequestsByRoute": routes,
        "apiserverRequestsPerMinute": api_requests / minutes,
        "apiserverRequests": api_table(&a_d),
        "operatorRssMiB": op.rss_mib(), "operatorPeakRssMiB": op.peak_rss_mib(),
        "operatorCpuSeconds": cpu, "operatorCpuPercent": cpu / idle_secs as f64 * 100.0,
        "panics": op.panicked(),
    });
    eprintln!("idle: {idle}");

    // Restart: add running builds, then restart the operator.
    let builds = (0..running)
        .map(|i| {
            (
                format!("r{i}"),
                "running".to_string(),
                format!("P{}", i % 10),
                format!("d{}", (i / 10) % 10),
            )
        })
        .collect();
    let t1 = Instant::now();
    create_builds(&api, builds).await;
    wait_count(
        &api,
        running,
        Duration::from_secs(1200),
        t1,
        "Running",
        |b| phase(b) == Some(Phase::Running),
        || {},
    )
    .await
    .expect("running builds reach Running");
    let idle_panics = op.panicked();
    op.stop();
    let f0 = admin_f.stats().await.unwrap();
    let r0 = admin_r.stats().await.unwrap();
    let op = Op::start(&ns.name, "restart");
    let ready = op.ready(Duration::from_secs(120)).await;
    let after_ready = 30u64;
    tokio::time::sleep(Duration::from_secs(after_ready)).await;
    let f1 = admin_f.stats().await.unwrap();
    let r1 = admin_r.stats().await.unwrap();
    let finished_routes = route_delta(&f1, &f0);
    // The connection check (auth info / project list) is per connection, not per build.
    let per_build: u64 = finished_routes
        .iter()
        .filter(|(k, _)| k.contains("/jobs"))
        .map(|(_, v)| v)
        .sum();
    let still_running = list_builds(&api)
        .await
        .iter()
        .filter(|b| phase(b) == Some(Phase::Running))
        .count();
    let restart = json!({
        "finishedBuilds": n, "runningBuilds": running,
        "readySeconds": ready.as_secs_f64(), "windowAfterReadySeconds": after_ready,
        "dssCallsForFinishedBuilds": per_build,
        "dssCallsOnFinishedConnection": finished_routes,
        "dssCallsOnRunningConnection": route_delta(&r1, &r0),
        "runningStillRunning": still_running,
        "operatorRssMiB": op.rss_mib(), "operatorPeakRssMiB": op.peak_rss_mib(),
        "operatorCpuSeconds": op.cpu_seconds(),
        "panics": idle_panics || op.panicked(),
    });
    op.stop();
    emu_f.shutdown().await;
    emu_r.shutdown().await;
    (idle, restart)
}

// ---------------------------------------------------------------------------------------------
// Report.

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memoryGiB": (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

fn f(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if (x.fract() == 0.0 && x.abs() < 1e15) || x.abs() >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        }
        Value::Null => "–".into(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// (scenario, figure, value, target, met) rows.
fn rows(results: &Value) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    let mut row = |s: &str, what: &str, v: String, target: &str, met: Option<bool>| {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        rows.push([s.into(), what.into(), v, target.into(), met.into()]);
    };
    let r = &results["ceiling"];
    if let Some(runs) = r["runs"].as_array() {
        for run in runs {
            row(
                "ceiling",
                &format!(
                    "status patches/s through kube-rs, concurrency {}",
                    run["concurrency"]
                ),
                f(&run["patchesPerSecond"]),
                "",
                None,
            );
        }
    }
    let r = &results["burst"];
    if r.is_object() {
        let budget = r["budgetRps"].as_f64().unwrap_or(0.0);
        let n = r["builds"].clone();
        row(
            "burst",
            "builds / all Succeeded",
            format!("{} / {}", f(&n), f(&r["succeeded"])),
            "all",
            r["allSucceeded"].as_bool(),
        );
        row(
            "burst",
            "time until all Succeeded (s)",
            f(&r["allSucceededSeconds"]),
            &format!("lower bound {}", f(&r["lowerBoundSeconds"])),
            None,
        );
        let p99 = r["detectionLagSeconds"]["p99"].as_f64().unwrap_or(f64::NAN);
        row(
            "burst",
            "detection lag p50 / p99 / max (s)",
            format!(
                "{} / {} / {}",
                f(&r["detectionLagSeconds"]["p50"]),
                f(&r["detectionLagSeconds"]["p99"]),
                f(&r["detectionLagSeconds"]["max"])
            ),
            "p99 <= 10",
            Some(p99 <= 10.0),
        );
        row(
            "burst",
            "DSS requests total / per build",
            format!("{} / {}", f(&r["dssRequests"]), f(&r["dssRequestsPerBuild"])),
            "",
            None,
        );
        let peak = r["dssPeakRequestsPerSecond"].as_f64().unwrap_or(f64::NAN);
        row(
            "burst",
            "DSS peak requests in one second / seconds above budget",
            format!(
                "{} / {}",
                f(&r["dssPeakRequestsPerSecond"]),
                f(&r["dssSecondsAboveBudget"])
            ),
            &format!("<= {budget} (+ bucket burst {budget})"),
            Some(peak <= 2.0 * budget),
        );
        let avg = r["dssPeak10sAverage"].as_f64().unwrap_or(f64::NAN);
        row(
            "burst",
            "DSS highest 10 s average (req/s)",
            f(&r["dssPeak10sAverage"]),
            &format!("<= {budget} + {}", budget / 10.0),
            Some(avg <= budget * 1.1),
        );
        let w = r["datasetbuildWritesPerBuild"].as_f64().unwrap_or(f64::NAN);
        row(
            "burst",
            "apiserver writes per build: DatasetBuild (status + finalizer)",
            f(&r["datasetbuildWritesPerBuild"]),
            "<= 5",
            Some(w <= 5.0),
        );
        row(
            "burst",
            "apiserver writes per build: events",
            f(&r["eventWritesPerBuild"]),
            "",
            None,
        );
        row(
            "burst",
            "operator status writes/s (average over the burst)",
            f(&r["statusWritesPerSecond"]),
            "",
            None,
        );
        row(
            "burst",
            "operator peak RSS (MiB) / CPU (s)",
            format!(
                "{} / {}",
                f(&r["operatorPeakRssMiB"]),
                f(&r["operatorCpuSeconds"])
            ),
            "",
            None,
        );
    }
    let r = &results["idle"];
    if r.is_object() {
        let dss = r["dssRequestsForBuildsPerMinute"].as_f64().unwrap_or(f64::NAN);
        let rss = r["operatorRssMiB"].as_f64().unwrap_or(f64::NAN);
        row("idle", "finished builds", f(&r["builds"]), "", None);
        row(
            "idle",
            "DSS requests per minute: for builds / all (with the connection check)",
            format!(
                "{} / {}",
                f(&r["dssRequestsForBuildsPerMinute"]),
                f(&r["dssRequestsPerMinute"])
            ),
            "0 for builds",
            Some(dss == 0.0),
        );
        row(
            "idle",
            "apiserver requests per minute",
            f(&r["apiserverRequestsPerMinute"]),
            "",
            None,
        );
        row(
            "idle",
            "operator RSS (MiB) / peak while finishing them",
            format!("{} / {}", f(&r["operatorRssMiB"]), f(&r["operatorPeakRssMiB"])),
            "RSS <= 64",
            Some(rss <= 64.0),
        );
        row(
            "idle",
            "operator CPU (% of one core)",
            f(&r["operatorCpuPercent"]),
            "",
            None,
        );
    }
    let r = &results["restart"];
    if r.is_object() {
        let ready = r["readySeconds"].as_f64().unwrap_or(f64::NAN);
        let calls = r["dssCallsForFinishedBuilds"].as_f64().unwrap_or(f64::NAN);
        row(
            "restart",
            &format!(
                "time to /readyz with {} finished + {} running (s)",
                f(&r["finishedBuilds"]),
                f(&r["runningBuilds"])
            ),
            f(&r["readySeconds"]),
            "<= 10",
            Some(ready <= 10.0),
        );
        row(
            "restart",
            "DSS job calls for finished builds",
            f(&r["dssCallsForFinishedBuilds"]),
            "0",
            Some(calls == 0.0),
        );
        row(
            "restart",
            "operator RSS after restart (MiB)",
            f(&r["operatorRssMiB"]),
            "",
            None,
        );
    }
    rows
}

fn markdown(results: &Value) -> String {
    let m = &results["machine"];
    let mut s = format!(
        "Machine: {} cores ({}), {} GiB, Linux {}, {}; operator: release build.\n\n| Scenario | Figure | Value | Target | Met |\n|---|---|---|---|---|\n",
        m["nproc"],
        m["cpu"].as_str().unwrap_or(""),
        m["memoryGiB"],
        m["kernel"].as_str().unwrap_or(""),
        m["date"].as_str().unwrap_or("")
    );
    for r in rows(results) {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3], r[4]
        ));
    }
    s
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there are no other arguments.
    let scenarios = std::env::var("SCENARIOS").unwrap_or_else(|_| "ceiling,burst,idle".into());
    let want = |s: &str| scenarios.split(',').any(|x| x.trim() == s);
    let client = harness::client().await;
    let mut results = json!({"machine": machine()});
    eprintln!("machine: {}", results["machine"]);
    if want("ceiling") {
        results["ceiling"] = ceiling(&client).await;
    }
    if want("burst") {
        results["burst"] = burst(&client).await;
        eprintln!("burst: {}", results["burst"]);
    }
    if want("idle") || want("restart") {
        let (idle, restart) = idle_and_restart(&client).await;
        results["idle"] = idle;
        results["restart"] = restart;
        eprintln!("restart: {}", results["restart"]);
    }
    let dir = out_dir();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&results).unwrap(),
    )
    .unwrap();
    let md = markdown(&results);
    std::fs::write(dir.join("results.md"), &md).unwrap();
    println!("\n{md}");
    println!("written: {} and results.md", dir.join("results.json").display());
    let panics = ["burst", "idle", "restart"]
        .iter()
        .any(|s| results[s]["panics"].as_bool() == Some(true));
    if panics {
        eprintln!("an operator log shows a panic (target/bench/operator-*.log)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
