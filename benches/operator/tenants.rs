//! Many tenants: `TENANT_CONNECTIONS` (10) DSSConnections, each to a DSS emulator of its own, with
//! `TENANT_BUILDS` (20) builds of `TENANT_JOB_MS` (3,000) ms on each. Three runs, each with a fresh
//! namespace, emulators and operator: all healthy (A); the first connection's DSS answers every
//! call with 429 (B); the first connection's DSS holds every call for ten minutes (C). The figure is
//! the detection lag of the other connections' builds, and how much a bad first connection changes it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::future::join_all;
use kube::{Api, Client};
use kube_dss::{crd::DatasetBuild, emulator::admin::Faults};
use serde_json::{Value, json};

use super::{
    KEY, Op, TestNs, create_builds, emulator_yaml, env_usize, spawn_emulator,
    watch::{self, BuildWatch},
};

/// What the first connection's DSS does.
#[derive(Clone, Copy)]
enum First {
    Healthy,
    Throttled,
    Hung,
}

impl First {
    fn key(self) -> &'static str {
        match self {
            First::Healthy => "healthy",
            First::Throttled => "throttled",
            First::Hung => "hung",
        }
    }

    fn faults(self) -> Option<Faults> {
        match self {
            First::Healthy => None,
            First::Throttled => Some(Faults {
                rate_limit_rate: 1.0,
                retry_after_seconds: Some(1),
                ..Faults::default()
            }),
            // Every call is accepted and never answered, until the operator's timeout gives up on it.
            First::Hung => Some(Faults {
                hang: true,
                ..Faults::default()
            }),
        }
    }
}

/// Connection index of a build name `t{c}-{i}`.
fn conn_of(name: &str) -> Option<usize> {
    name.strip_prefix('t')?.split('-').next()?.parse().ok()
}

async fn one_run(client: &Client, first: First) -> Value {
    let conns = env_usize("TENANT_CONNECTIONS", 10);
    let per = env_usize("TENANT_BUILDS", 20);
    let job_ms = env_usize("TENANT_JOB_MS", 3_000) as u64;
    let (budget, in_flight) = (20u64, 8u64);
    let yaml = emulator_yaml(1, per, job_ms, per as u32);
    let emus = join_all((0..conns).map(|_| spawn_emulator(&yaml))).await;
    let ns = TestNs::new(client, &format!("bench-tenants-{}", first.key())).await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    for (c, (emu, _)) in emus.iter().enumerate() {
        ns.connection(&format!("c{c}"), &emu.base_url(), Some((budget, in_flight)))
            .await;
    }
    let api: Api<DatasetBuild> = ns.api();
    let op = Op::start(&ns.name, &format!("tenants-{}", first.key()));
    op.ready(Duration::from_secs(60)).await;
    if let Some(faults) = first.faults() {
        emus[0].1.set_faults(&faults).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watch = BuildWatch::start(api.clone()).await;
    let stats0 = join_all(emus.iter().map(|(_, a)| a.stats())).await;

    let builds = (0..conns)
        .flat_map(|c| {
            (0..per).map(move |i| {
                (
                    format!("t{c}-{i}"),
                    format!("c{c}"),
                    "P0".to_string(),
                    format!("d{i}"),
                )
            })
        })
        .collect();
    let t0 = Instant::now();
    let t0_ms = chrono::Utc::now().timestamp_millis();
    create_builds(&api, builds).await;
    // The figures are about the other connections in every run, so the runs compare like with
    // like; with a bad first connection its builds never finish, and only the others are waited for.
    let others = |name: &str| conn_of(name).is_some_and(|c| c != 0);
    let any = |_: &str| true;
    let (wait_pick, expected): (&dyn Fn(&str) -> bool, usize) = match first {
        First::Healthy => (&any, conns * per),
        _ => (&others, (conns - 1) * per),
    };
    let all = watch
        .wait_for(
            expected,
            Duration::from_secs(env_usize("TENANT_TIMEOUT_SECONDS", 900) as u64),
            t0,
            "Succeeded",
            &|n, s| wait_pick(n) && watch::done(n, s),
            || {},
        )
        .await;
    let seen = watch.snapshot();
    drop(watch);
    let mut times: HashMap<watch::JobKey, watch::JobTimes> = HashMap::new();
    let mut first_conn = Value::Null;
    for (c, (_, admin)) in emus.iter().enumerate() {
        // A hung DSS still answers its admin API, which no fault touches.
        times.extend(watch::job_times(&format!("c{c}"), admin.jobs().await.unwrap()));
        if c == 0 {
            let s1 = admin.stats().await.unwrap();
            first_conn = json!({
                "requests": s1.requests_total - stats0[0].as_ref().unwrap().requests_total,
                "faultsInjected": s1.faults_injected,
                "jobsStarted": s1.jobs_started,
            });
        }
    }
    let lags = watch::lags(&seen, &times, &others);
    let last = seen
        .iter()
        .filter(|(n, _)| others(n))
        .filter_map(|(_, s)| s.succeeded_ms)
        .max();
    let res = json!({
        "connections": conns, "buildsPerConnection": per, "jobMs": job_ms,
        "budgetRps": budget, "maxInFlight": in_flight,
        "otherBuilds": (conns - 1) * per,
        "otherSucceeded": seen.iter().filter(|(n, s)| others(n) && watch::done(n, s)).count(),
        "allWaitedForSucceeded": all.is_some(),
        "otherAllSucceededSeconds": last.filter(|_| all.is_some()).map(|ms| (ms - t0_ms) as f64 / 1000.0),
        "otherDetectionLagSeconds": watch::summary(&lags),
        "firstConnection": first_conn,
        "panics": op.panicked(),
    });
    eprintln!("tenants ({}): {res}", first.key());
    op.stop();
    for (emu, _) in emus {
        emu.shutdown().await;
    }
    res
}

pub(crate) async fn run(client: &Client) -> Value {
    let mut res = json!({});
    for first in [First::Healthy, First::Throttled, First::Hung] {
        res[first.key()] = one_run(client, first).await;
    }
    let p99 = |k: &str| res[k]["otherDetectionLagSeconds"]["p99"].as_f64();
    let ratio = |k: &str| Some(p99(k)? / p99("healthy")?).filter(|r| r.is_finite());
    let (throttled, hung) = (ratio("throttled"), ratio("hung"));
    res["throttledOverHealthyP99"] = json!(throttled);
    res["hungOverHealthyP99"] = json!(hung);
    res["panics"] = json!(
        ["healthy", "throttled", "hung"]
            .iter()
            .any(|k| res[*k]["panics"].as_bool() == Some(true))
    );
    res
}
