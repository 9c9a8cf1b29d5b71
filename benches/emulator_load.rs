//! Load check of the emulator (a program, not a timed test): starts it in-process, creates
//! 10,000 jobs from hundreds of concurrent clients (each with its own connection pool), polls
//! every job once, lists them all, and prints throughput, errors (must be 0) and the process RSS.
//! Exits non-zero if any request failed.
//!
//!   cargo bench --bench emulator_load            # optimised build
//!   cargo bench --bench emulator_load --profile dev
//!   JOBS=20000 CLIENTS=400 cargo bench --bench emulator_load
//!   JOBS=40000 RETAIN=10000 SLOTS=0 cargo bench --bench emulator_load   # retention bounds memory
//!
//! `SLOTS` is `maxRunningActivities` (default 50, so most jobs queue); `RETAIN` is
//! `maxJobsRetained`. Only finished jobs are ever forgotten, so retention bounds memory when jobs
//! finish (e.g. `SLOTS=0`), not while they are queued.

// A benchmark program: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use kube_dss::emulator::{Config, admin::AdminClient, spawn};

const CONFIG: &str = r#"
instance: {maxRunningActivities: 50, timeScale: 1.0}
projects:
  - projectKey: LOAD
    datasets:
      - {name: raw}
      - {name: clean, build: {durationMs: 200, log: ["reading", "writing"]}}
      - {name: scored, build: {durationMs: 100}}
    recipes:
      - {name: compute_clean, inputs: [raw], outputs: [clean]}
      - {name: compute_scored, inputs: [clean], outputs: [scored]}
apiKeys:
  - {key: load-key, id: load, projects: {LOAD: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}
"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process (client and emulator together), in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let jobs = env_usize("JOBS", 10_000);
    let clients = env_usize("CLIENTS", 200);
    let mut config = Config::from_yaml(CONFIG).unwrap();
    config.instance.max_jobs_retained = env_usize("RETAIN", config.instance.max_jobs_retained);
    config.instance.max_running_activities =
        u32::try_from(env_usize("SLOTS", 50)).unwrap_or(config.instance.max_running_activities);
    let retained = jobs.min(config.instance.max_jobs_retained);
    let emulator = spawn(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("{}/dip/publicapi", emulator.base_url());
    println!("emulator_load: {jobs} jobs from {clients} concurrent clients against {base}");
    println!("rss at start: {:.1} MiB", rss_mib());

    let errors = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let n = jobs / clients + usize::from(c < jobs % clients);
        let (base, errors, requests) = (base.clone(), errors.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            // One client per task: its own connection pool, like separate processes.
            let http = reqwest::Client::new();
            for i in 0..n {
                let output = if i % 2 == 0 { "clean" } else { "scored" };
                let build = if i % 3 == 0 { "RECURSIVE_FORCED_BUILD" } else { "NON_RECURSIVE_FORCED_BUILD" };
                // Like the official client: a str body, no Content-Type.
                let body = format!(r#"{{"type":"{build}","outputs":[{{"id":"{output}","type":null,"projectKey":null,"partition":null}}]}}"#);
                requests.fetch_add(1, Ordering::Relaxed);
                let started = http.post(format!("{base}/projects/LOAD/jobs/")).basic_auth("load-key", Some("")).body(body).send().await;
                let id = match started {
                    Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
                        Ok(v) => v["id"].as_str().unwrap_or_default().to_owned(),
                        Err(_) => String::new(),
                    },
                    _ => String::new(),
                };
                if id.is_empty() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                requests.fetch_add(1, Ordering::Relaxed);
                let status = http.get(format!("{base}/projects/LOAD/jobs/{id}/")).basic_auth("load-key", Some("")).send().await;
                let ok = match status {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|v| v["baseStatus"]["state"].is_string()),
                    _ => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t.elapsed();
    let sent = requests.load(Ordering::Relaxed);
    println!(
        "start+status: {sent} requests in {:.2} s = {:.0} requests/s ({:.0} job starts/s)",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        jobs as f64 / elapsed.as_secs_f64()
    );
    println!("rss after the starts: {:.1} MiB", rss_mib());

    let http = reqwest::Client::new();
    let t = Instant::now();
    let list = http
        .get(format!("{base}/projects/LOAD/jobs/"))
        .basic_auth("load-key", Some(""))
        .send()
        .await
        .unwrap();
    let ok = list.status().is_success();
    let bytes = list.bytes().await.unwrap();
    let listed = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    println!(
        "list all jobs: {listed} items (retained {retained}), {:.1} MiB, in {:.0} ms",
        bytes.len() as f64 / 1048576.0,
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!("rss after listing: {:.1} MiB", rss_mib());
    // Active jobs are never forgotten, so more than `retained` may be listed, never fewer.
    if !ok || listed < retained || listed > jobs {
        errors.fetch_add(1, Ordering::Relaxed);
    }
    let t = Instant::now();
    let running = http
        .get(format!("{base}/jobs/running/?allUsers=True"))
        .basic_auth("load-key", Some(""))
        .send()
        .await
        .unwrap();
    let running: serde_json::Value = running.json().await.unwrap();
    println!(
        "running jobs: {} items in {:.0} ms",
        running.as_array().map_or(0, Vec::len),
        t.elapsed().as_secs_f64() * 1000.0
    );

    let stats = AdminClient::new(emulator.base_url()).stats().await.unwrap();
    let non_200: u64 = stats
        .responses_by_status
        .iter()
        .filter(|(k, _)| k.as_str() != "200")
        .map(|(_, v)| v)
        .sum();
    println!(
        "emulator stats: {} requests, {} non-200, peak {} requests/s, {} jobs started",
        stats.requests_total, non_200, stats.peak_requests_per_second, stats.jobs_started
    );
    println!("rss at end: {:.1} MiB", rss_mib());
    let errors = errors.load(Ordering::Relaxed) + non_200;
    println!("errors: {errors}");
    emulator.shutdown().await;
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
