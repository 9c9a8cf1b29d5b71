//! Operator benchmark (a program, not a timed test): the release operator binary against the local
//! control plane and in-process DSS emulators. Prints a table and writes `target/bench/results.json`
//! and `target/bench/results.md`. `make bench` (hack/bench.sh) runs it on a fresh control plane.
//!
//! Scenarios (`SCENARIOS`, default all; sizes can be lowered by env for a quick look):
//! - ceiling: raw status-patch rate of this machine's apiserver through kube-rs (`CEILING_OBJECTS`, 1000)
//! - burst: `BURST_BUILDS` (1000) builds over 10 projects applied at once, jobs of `BURST_JOB_MS`
//!   (10,000) ms, the emulator running at most `BURST_SLOTS` (100) activities, one connection budget
//!   of 20 req/s
//! - queued: `QUEUED_BUILDS` (200) builds, jobs of `QUEUED_JOB_MS` (5,000) ms on `QUEUED_SLOTS` (4)
//!   activity slots, the burst's budget
//! - idle: `IDLE_BUILDS` (10,000) finished builds watched for `IDLE_SECONDS` (60)
//! - restart: the operator restarted with those finished builds plus `RUNNING_BUILDS` (500) running
//! - scale: the operator started on `SCALE_SIZES` (1000,10000,50000) finished builds
//! - tenants: `TENANT_CONNECTIONS` (10) connections of `TENANT_BUILDS` (20) builds, one of them
//!   healthy, throttled or hung
//!
//!   hack/bench.sh                                    # the whole thing (make bench)
//!   SCENARIOS=burst,queued BURST_BUILDS=100 QUEUED_BUILDS=40 hack/bench.sh
//!   SCENARIOS=scale SCALE_SIZES=200,1000 hack/bench.sh

// A benchmark program: a failed set-up step is a failed run, and unwrap says so loudly.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/harness/mod.rs"]
mod harness;
mod load;
mod report;
mod scale;
mod steady;
mod tenants;
mod watch;

use std::{
    collections::BTreeMap,
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

    /// The file-backed part of the resident set (the binary's code and other mapped files), MiB:
    /// what no change to the heap can lower.
    fn rss_file_mib(&self) -> f64 {
        self.proc_status("RssFile:")
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
    // A fold from 0.0: f64's `sum` of nothing is -0.0.
    d.iter()
        .filter(|((v, r, s), _)| f(v, r, s))
        .fold(0.0, |acc, (_, n)| acc + n)
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

fn bytes_delta(after: &emulator::admin::Stats, before: &emulator::admin::Stats) -> BTreeMap<String, u64> {
    after
        .response_bytes_by_route
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v - before.response_bytes_by_route.get(k).copied().unwrap_or(0),
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
            (v == "PATCH" || v == "APPLY") && r == "datasetbuilds" && s == "status"
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

const ALL: &str = "ceiling,burst,queued,idle,restart,scale,tenants";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there are no other arguments.
    let scenarios = std::env::var("SCENARIOS").unwrap_or_else(|_| ALL.into());
    let want = |s: &str| scenarios.split(',').any(|x| x.trim() == s);
    let unknown: Vec<&str> = scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !ALL.split(',').any(|a| a == *s))
        .collect();
    if !unknown.is_empty() {
        eprintln!("unknown scenarios {unknown:?}; known: {ALL}");
        return ExitCode::FAILURE;
    }
    let client = harness::client().await;
    let mut results = json!({"machine": report::machine(), "scenarios": scenarios});
    eprintln!("machine: {}", results["machine"]);
    let dir = out_dir();
    // Written after every scenario, so a long run that fails late keeps what it measured.
    let save = |results: &Value| {
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_vec_pretty(results).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("results.md"), report::markdown(results)).unwrap();
    };
    if want("ceiling") {
        results["ceiling"] = ceiling(&client).await;
        save(&results);
    }
    for load in [load::Load::burst(), load::Load::queued()] {
        if want(load.name) {
            results[load.name] = load::run(&client, &load).await;
            eprintln!("{}: {}", load.name, results[load.name]);
            save(&results);
        }
    }
    if want("idle") || want("restart") {
        let (idle, restart) = steady::idle_and_restart(&client).await;
        results["idle"] = idle;
        results["restart"] = restart;
        eprintln!("restart: {}", results["restart"]);
        save(&results);
    }
    if want("scale") {
        results["scale"] = scale::run(&client).await;
        save(&results);
    }
    if want("tenants") {
        results["tenants"] = tenants::run(&client).await;
        save(&results);
    }
    let md = report::markdown(&results);
    println!("\n{md}");
    println!("written: {} and results.md", dir.join("results.json").display());
    let panics = ["burst", "queued", "idle", "restart", "scale", "tenants"]
        .iter()
        .any(|s| results[s]["panics"].as_bool() == Some(true));
    if panics {
        eprintln!("an operator log shows a panic (target/bench/operator-*.log)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
