//! The scale curve: the operator started on a namespace holding 1,000, 10,000 and 50,000 finished
//! builds (`SCALE_SIZES`), measured after it is ready and settled. Running 50,000 builds through
//! the operator would take hours on this machine, so one build really runs to Succeeded through
//! the operator and its status is stamped onto the others (each with its own job id, with the
//! operator's finalizer, written by server-side apply under the operator's field manager): to the
//! operator they are builds it finished earlier. The namespace grows from one size to the next.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use kube_dss::crd::{DatasetBuild, FIELD_MANAGER, FINALIZER};
use serde_json::{Value, json};

use super::{
    KEY, Op, TestNs, api_table, apiserver_counts, create_builds, delta, emulator_yaml, env_usize,
    route_delta, spawn_emulator, sum,
    watch::{self, BuildWatch},
};

fn sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .unwrap_or_else(|_| "1000,10000,50000".into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Creates builds `s{from}`..`s{to}` as copies of `template` (spec, labels, finalizer) and stamps
/// its status on each with a job id of its own, everywhere the status names it (the conditions'
/// messages too): the status the operator itself would have written, so it finds nothing to change.
async fn stamp(api: &Api<DatasetBuild>, template: &DatasetBuild, from: usize, to: usize) {
    let status = serde_json::to_string(template.status.as_ref().unwrap()).unwrap();
    let job = template.status.as_ref().and_then(|s| s.job_id.clone()).unwrap();
    let spec = serde_json::to_value(&template.spec).unwrap();
    let labels = json!(template.metadata.labels.clone().unwrap_or_default());
    let concurrency = env_usize("SCALE_STAMP_CONCURRENCY", 48);
    let failed: Vec<String> = stream::iter(from..to)
        .map(|i| {
            let (api, spec, labels) = (api.clone(), spec.clone(), labels.clone());
            let status: Value = serde_json::from_str(&status.replace(&job, &format!("{job}_s{i}"))).unwrap();
            async move {
                let name = format!("s{i}");
                let b: DatasetBuild = serde_json::from_value(json!({
                    "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
                    "metadata": {"name": name, "labels": labels, "finalizers": [FINALIZER]},
                    "spec": spec,
                }))
                .unwrap();
                let patch = json!({
                    "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
                    "metadata": {"name": name}, "status": status,
                });
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                for _ in 0..5 {
                    let created = match api.create(&PostParams::default(), &b).await {
                        Ok(_) => true,
                        Err(kube::Error::Api(e)) => e.code == 409,
                        Err(_) => false,
                    };
                    if created && api.patch_status(&name, &pp, &Patch::Apply(&patch)).await.is_ok() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some(name)
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    assert!(failed.is_empty(), "could not stamp {} builds", failed.len());
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

pub(crate) async fn run(client: &Client) -> Value {
    let sizes = sizes();
    let settle = env_usize("SCALE_SETTLE_SECONDS", 20) as u64;
    let window = env_usize("SCALE_WINDOW_SECONDS", 60) as u64;
    let (emu, admin) = spawn_emulator(&emulator_yaml(1, 1, 5, 0)).await;
    let ns = TestNs::new(client, "bench-scale").await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    ns.connection("dss", &emu.base_url(), Some((20, 8))).await;
    let api: Api<DatasetBuild> = ns.api();

    // The template: a build the operator really started, polled and recorded as Succeeded.
    let op = Op::start(&ns.name, "scale-template");
    op.ready(Duration::from_secs(60)).await;
    let watch = BuildWatch::start(api.clone()).await;
    let t = Instant::now();
    create_builds(
        &api,
        vec![("template".into(), "dss".into(), "P0".into(), "d0".into())],
    )
    .await;
    watch
        .wait_for(1, Duration::from_secs(300), t, "Succeeded", &watch::done, || {})
        .await
        .expect("the template build succeeds");
    drop(watch);
    // Its last write is done once Succeeded is seen; a moment more for its event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let template_panics = op.panicked();
    op.stop();
    let template = api.get("template").await.unwrap();
    eprintln!(
        "scale: template status {}",
        serde_json::to_string(&template.status).unwrap()
    );

    let mut have = 1usize;
    let mut points = Vec::new();
    for size in sizes {
        let t = Instant::now();
        if size > have {
            stamp(&api, &template, have, size).await;
        }
        let stamp_secs = t.elapsed().as_secs_f64();
        eprintln!(
            "scale: {} builds stamped in {stamp_secs:.0}s; {size} in the namespace",
            size.saturating_sub(have)
        );
        have = have.max(size);

        let f0 = admin.stats().await.unwrap();
        let op = Op::start(&ns.name, &format!("scale-{size}"));
        let ready = op.ready(Duration::from_secs(900)).await;
        tokio::time::sleep(Duration::from_secs(settle)).await;
        let rss_settled = op.rss_mib();
        let s0 = admin.stats().await.unwrap();
        let a0 = apiserver_counts(client).await;
        let cpu0 = op.cpu_seconds();
        let mut rss_max = rss_settled;
        let w = Instant::now();
        while w.elapsed() < Duration::from_secs(window) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss_max = rss_max.max(op.rss_mib());
        }
        let cpu = op.cpu_seconds() - cpu0;
        let a_d = delta(&apiserver_counts(client).await, &a0);
        let s1 = admin.stats().await.unwrap();
        let minutes = window as f64 / 60.0;
        let jobs = |routes: &std::collections::BTreeMap<String, u64>| -> u64 {
            routes
                .iter()
                .filter(|(k, _)| k.contains("/jobs"))
                .map(|(_, v)| v)
                .sum()
        };
        let window_routes = route_delta(&s1, &s0);
        let since_start = route_delta(&s1, &f0);
        let point = json!({
            "builds": size, "stampSeconds": stamp_secs,
            "readySeconds": ready.as_secs_f64(),
            "settleSeconds": settle, "windowSeconds": window,
            "rssSettledMiB": rss_settled, "rssWindowMaxMiB": rss_max, "rssWindowEndMiB": op.rss_mib(),
            "peakRssMiB": op.peak_rss_mib(), "rssFileMiB": op.rss_file_mib(),
            "apiserverRequestsPerMinute": sum(&a_d, |_, _, _| true) / minutes,
            "apiserverRequests": api_table(&a_d),
            "dssRequestsPerMinute": (s1.requests_total - s0.requests_total) as f64 / minutes,
            "dssRequestsForBuildsPerMinute": jobs(&window_routes) as f64 / minutes,
            "dssCallsForBuildsSinceStart": jobs(&since_start),
            "dssRequestsByRouteSinceStart": since_start,
            "operatorCpuPercent": cpu / window as f64 * 100.0,
            "panics": op.panicked(),
        });
        eprintln!("scale: {point}");
        op.stop();
        points.push(point);
    }
    emu.shutdown().await;

    let fit = |key: &str, scale: f64| {
        let xy: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|p| Some((p["builds"].as_f64()?, p[key].as_f64()?)))
            .collect();
        slope(&xy).map(|s| s * scale)
    };
    json!({
        "points": points,
        "slope": {
            "rssKiBPerBuild": fit("rssSettledMiB", 1024.0),
            "readySecondsPer1000Builds": fit("readySeconds", 1000.0),
            "apiserverRequestsPerMinutePer1000Builds": fit("apiserverRequestsPerMinute", 1000.0),
            "dssRequestsPerMinutePer1000Builds": fit("dssRequestsPerMinute", 1000.0),
        },
        "templateStatus": template.status,
        "panics": template_panics || points.iter().any(|p| p["panics"].as_bool() == Some(true)),
    })
}
