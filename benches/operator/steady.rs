//! A long-running operator with many finished builds (idle), then the same operator restarted with
//! them and a few hundred running builds (restart).

use std::time::{Duration, Instant};

use kube::{Api, Client};
use kube_dss::crd::{DatasetBuild, Phase};
use serde_json::{Value, json};

use super::{
    KEY, Op, TestNs, api_table, apiserver_counts, create_builds, delta, emulator_yaml, env_usize,
    list_builds, phase, route_delta, spawn_emulator, sum,
    watch::{self, BuildWatch},
};

/// Idle and restart share their set-up: 10,000 builds finished, then 500 running.
pub(crate) async fn idle_and_restart(client: &Client) -> (Value, Value) {
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

    let watch = BuildWatch::start(api.clone()).await;
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
    let fill = watch
        .wait_for(n, Duration::from_secs(3600), t0, "Succeeded", &watch::done, || {})
        .await;
    // The bench's own watch is not part of the idle operator's traffic.
    drop(watch);
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
        "operatorRssFileMiB": op.rss_file_mib(),
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
    let watch = BuildWatch::start(api.clone()).await;
    let t1 = Instant::now();
    create_builds(&api, builds).await;
    watch
        .wait_for(
            running,
            Duration::from_secs(1200),
            t1,
            "Running",
            &|name, s| name.starts_with('r') && s.phase == Some(Phase::Running),
            || {},
        )
        .await
        .expect("running builds reach Running");
    drop(watch);
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
        "operatorRssFileMiB": op.rss_file_mib(),
        "operatorCpuSeconds": op.cpu_seconds(),
        "panics": idle_panics || op.panicked(),
    });
    op.stop();
    emu_f.shutdown().await;
    emu_r.shutdown().await;
    (idle, restart)
}
