//! Builds under load: the burst (1,000 builds at once, 100 DSS activity slots) and the queue (200
//! builds on 4 slots, so most jobs wait in DSS before they run), on one DSSConnection with a budget.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use kube::{Api, Client};
use kube_dss::crd::{DatasetBuild, Phase};
use serde_json::{Value, json};

use super::{
    KEY, Op, TestNs, api_table, apiserver_counts, bytes_delta, create_builds, delta, env_usize, is_write,
    list_builds, now_unix, peak_rps, phase, route_delta, spawn_emulator, sum,
    watch::{self, BuildWatch},
};

/// One load scenario's shape.
pub(crate) struct Load {
    /// `burst` or `queued`: the results key, the namespace prefix and the env prefix of its sizes.
    pub(crate) name: &'static str,
    pub(crate) builds: usize,
    pub(crate) job_ms: u64,
    /// DSS activities running at once (the emulator's `maxRunningActivities`).
    pub(crate) slots: u32,
    pub(crate) projects: usize,
    /// The DSSConnection's `requestsPerSecond` (its token bucket's burst is the same).
    pub(crate) budget: u32,
    pub(crate) in_flight: u32,
}

impl Load {
    /// 1,000 builds of 10 s jobs on 100 activity slots (`BURST_BUILDS`, `BURST_JOB_MS`,
    /// `BURST_SLOTS`).
    pub(crate) fn burst() -> Load {
        Load {
            name: "burst",
            builds: env_usize("BURST_BUILDS", 1000),
            job_ms: env_usize("BURST_JOB_MS", 10_000) as u64,
            slots: env_usize("BURST_SLOTS", 100) as u32,
            projects: 10,
            budget: 20,
            in_flight: 8,
        }
    }

    /// 200 builds of 5 s jobs on 4 activity slots, the burst's budget (`QUEUED_BUILDS`,
    /// `QUEUED_JOB_MS`, `QUEUED_SLOTS`).
    pub(crate) fn queued() -> Load {
        Load {
            name: "queued",
            builds: env_usize("QUEUED_BUILDS", 200),
            job_ms: env_usize("QUEUED_JOB_MS", 5_000) as u64,
            slots: env_usize("QUEUED_SLOTS", 4) as u32,
            projects: 10,
            budget: 20,
            in_flight: 8,
        }
    }

    /// Whether the sizes are the scenario's own (targets on absolute times and memory only apply
    /// then).
    fn nominal(&self) -> bool {
        match self.name {
            "burst" => self.builds == 1000 && self.job_ms == 10_000 && self.slots == 100,
            _ => self.builds == 200 && self.job_ms == 5_000 && self.slots == 4,
        }
    }
}

pub(crate) async fn run(client: &Client, load: &Load) -> Value {
    let Load {
        name,
        builds: n,
        job_ms,
        slots,
        projects,
        budget,
        in_flight,
    } = *load;
    let per_project = n.div_ceil(projects);
    let (emu, admin) = spawn_emulator(&super::emulator_yaml(projects, per_project, job_ms, slots)).await;
    let ns = TestNs::new(client, &format!("bench-{name}")).await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    ns.connection("dss", &emu.base_url(), Some((budget.into(), in_flight.into())))
        .await;
    let api: Api<DatasetBuild> = ns.api();
    let op = Op::start(&ns.name, name);
    op.ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watch = BuildWatch::start(api.clone()).await;

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
    eprintln!("{name}: {n} builds created in {:.1}s", created.as_secs_f64());
    let mut peak_rss = 0f64;
    let all = watch
        .wait_for(
            n,
            Duration::from_secs(1800),
            t0,
            "Succeeded",
            &watch::done,
            || {
                peak_rss = peak_rss.max(op.rss_mib());
            },
        )
        .await;
    let cpu = op.cpu_seconds() - cpu0;
    let api_d = delta(&apiserver_counts(client).await, &api0);
    let stats1 = admin.stats().await.unwrap();
    let unix1 = now_unix();
    let seen = watch.snapshot();
    drop(watch);

    let times: HashMap<watch::JobKey, watch::JobTimes> =
        watch::job_times("dss", admin.jobs().await.unwrap()).collect();
    // Seen by the bench: first sight of Succeeded=True minus DSS's end time of the job.
    let lags = watch::lags(&seen, &times, &|_| true);
    // Where that time goes: until a listing leaves the job out (the listing's interval), until the
    // operator's status call finds it ended (waking the build, the reconcile queue, the wait for
    // budget), then until the watch sees it (the status write, the apiserver's watch delivery).
    let [to_listed, listed_to_read, read_to_seen] = watch::lag_parts(&seen, &times);
    let last_seen = seen.values().filter_map(|s| s.succeeded_ms).max();
    let wall = (last_seen.unwrap_or(t0_ms) - t0_ms) as f64 / 1000.0;
    // The operator's own clock: Succeeded's lastTransitionTime (the reconcile's start, whole
    // seconds) minus the end time; a lower bound of the lag.
    let items = list_builds(&api).await;
    let mut own_lags: Vec<f64> = Vec::new();
    let mut last_transition = 0i64;
    for b in &items {
        let Some(s) = &b.status else { continue };
        let (Some(job), Some(cond)) = (
            watch::job_key(b),
            s.conditions
                .iter()
                .find(|c| c.type_ == "Succeeded" && c.status == "True"),
        ) else {
            continue;
        };
        let ltt = cond.last_transition_time.0.as_millisecond();
        last_transition = last_transition.max(ltt);
        if let Some(end) = times.get(&job).map(|t| t.end).filter(|e| *e > 0) {
            own_lags.push((ltt - end) as f64 / 1000.0);
        }
    }
    own_lags.sort_by(f64::total_cmp);
    let succeeded = items
        .iter()
        .filter(|b| phase(b) == Some(Phase::Succeeded))
        .count();
    let dss_requests = stats1.requests_total - stats0.requests_total;
    let dss_bytes = stats1.response_bytes_total - stats0.response_bytes_total;
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
    let lower_bound = (n as f64 / f64::from(slots.max(1))).ceil() * job_ms as f64 / 1000.0;
    let res = json!({
        "builds": n, "projects": projects, "jobMs": job_ms, "slots": slots, "budgetRps": budget,
        "maxInFlight": in_flight, "nominalSize": load.nominal(),
        "succeeded": succeeded, "allSucceeded": all.is_some(),
        "createSeconds": created.as_secs_f64(),
        "allSucceededSeconds": all.map(|_| wall),
        "lastTransitionAfterStartSeconds": (last_transition - t0_ms) as f64 / 1000.0,
        "lowerBoundSeconds": lower_bound,
        "detectionLagSeconds": watch::summary(&lags),
        "detectionLagOperatorClockSeconds": watch::summary(&own_lags),
        "detectionLagEndToListedSeconds": watch::summary(&to_listed),
        "detectionLagListedToStatusReadSeconds": watch::summary(&listed_to_read),
        "detectionLagStatusReadToSeenSeconds": watch::summary(&read_to_seen),
        "dssRequests": dss_requests, "dssRequestsPerBuild": dss_requests as f64 / n as f64,
        "dssRequestsByRoute": route_delta(&stats1, &stats0),
        "dssResponseBytes": dss_bytes, "dssResponseBytesPerBuild": dss_bytes as f64 / n as f64,
        "dssResponseBytesByRoute": bytes_delta(&stats1, &stats0),
        "dssPeakRequestsPerSecond": peak, "dssSecondsAboveBudget": seconds_over,
        "dssPeak10sAverage": sustained,
        "apiserverWrites": api_table(&api_d),
        "datasetbuildWritesPerBuild": dsb_writes / n as f64,
        "statusWritesPerBuild": status_writes / n as f64,
        "eventWritesPerBuild": event_writes / n as f64,
        "conflictedWritesPerBuild": conflicts / n as f64,
        "apiserverWritesPerBuildIncludingEvents": (dsb_writes + event_writes) / n as f64,
        "statusWritesPerSecond": status_writes / wall,
        "operatorPeakRssMiB": op.peak_rss_mib().max(peak_rss),
        "operatorRssFileMiB": op.rss_file_mib(),
        "operatorCpuSeconds": cpu,
        "panics": op.panicked(),
    });
    op.stop();
    emu.shutdown().await;
    // The namespace stays: hack/bench.sh throws the whole control plane away afterwards.
    res
}
