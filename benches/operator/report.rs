//! The results table: every figure with its target and whether it was met, as markdown.

use serde_json::{Value, json};

pub(crate) fn machine() -> Value {
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

/// Whether a figure met its target.
enum Met {
    Check(bool),
    /// The target is stated for the scenario's own sizes, and this run used others.
    OtherSize,
    None,
}

impl Met {
    fn nominal(nominal: bool, ok: bool) -> Met {
        if nominal { Met::Check(ok) } else { Met::OtherSize }
    }
}

#[derive(Default)]
struct Table(Vec<[String; 5]>);

impl Table {
    fn row(
        &mut self,
        scenario: &str,
        what: impl Into<String>,
        value: String,
        target: impl Into<String>,
        met: Met,
    ) {
        let met = match met {
            Met::Check(true) => "yes",
            Met::Check(false) => "NO",
            Met::OtherSize => "(other size)",
            Met::None => "",
        };
        self.0
            .push([scenario.into(), what.into(), value, target.into(), met.into()]);
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// `a / b / c` of figures.
fn fs(vs: &[&Value]) -> String {
    vs.iter().map(|v| f(v)).collect::<Vec<_>>().join(" / ")
}

fn lag(t: &mut Table, s: &str, what: &str, l: &Value, target: Option<f64>) {
    let value = format!(
        "{} ({} builds)",
        fs(&[&l["min"], &l["p50"], &l["p90"], &l["p99"], &l["max"]]),
        f(&l["samples"])
    );
    match target {
        Some(p99) => t.row(
            s,
            format!("{what}: min / p50 / p90 / p99 / max (s)"),
            value,
            format!("p99 <= {p99}"),
            Met::Check(num(&l["p99"]) <= p99),
        ),
        None => t.row(
            s,
            format!("{what}: min / p50 / p90 / p99 / max (s)"),
            value,
            "",
            Met::None,
        ),
    }
}

/// Burst and queued share their figures.
fn load(t: &mut Table, s: &str, r: &Value) {
    let budget = num(&r["budgetRps"]);
    let n = num(&r["builds"]);
    let nominal = r["nominalSize"].as_bool() == Some(true);
    t.row(
        s,
        format!(
            "builds / all Succeeded ({} ms jobs, {} DSS activity slots)",
            f(&r["jobMs"]),
            f(&r["slots"])
        ),
        fs(&[&r["builds"], &r["succeeded"]]),
        "all",
        Met::Check(r["allSucceeded"].as_bool() == Some(true)),
    );
    let bound = format!("lower bound {}", f(&r["lowerBoundSeconds"]));
    let secs = num(&r["allSucceededSeconds"]);
    if s == "burst" {
        t.row(
            s,
            "time until all Succeeded, seen by the bench (s)",
            f(&r["allSucceededSeconds"]),
            format!("<= 165 ({bound})"),
            Met::nominal(nominal, secs <= 165.0),
        );
    } else {
        t.row(
            s,
            "time until all Succeeded, seen by the bench (s)",
            f(&r["allSucceededSeconds"]),
            bound,
            Met::None,
        );
    }
    lag(
        t,
        s,
        "detection lag, seen by the bench",
        &r["detectionLagSeconds"],
        Some(2.0),
    );
    lag(
        t,
        s,
        "detection lag, operator's own clock (lower bound)",
        &r["detectionLagOperatorClockSeconds"],
        None,
    );
    let parts = [
        (
            "lag part 1: job end -> first listing without it",
            "detectionLagEndToListedSeconds",
        ),
        (
            "lag part 2: that listing -> first status call finding it ended",
            "detectionLagListedToStatusReadSeconds",
        ),
        (
            "lag part 3: that call -> seen by the bench (write, watch)",
            "detectionLagStatusReadToSeenSeconds",
        ),
    ];
    for (what, key) in parts {
        lag(t, s, what, &r[key], None);
    }
    t.row(
        s,
        "DSS requests total / per build",
        fs(&[&r["dssRequests"], &r["dssRequestsPerBuild"]]),
        "<= 2.2 per build",
        Met::Check(num(&r["dssRequestsPerBuild"]) <= 2.2),
    );
    let by_route = r["dssRequestsByRoute"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {:.2}", num(v) / n))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    t.row(s, "DSS requests per build by route", by_route, "", Met::None);
    t.row(
        s,
        "DSS response bytes total / per build",
        fs(&[&r["dssResponseBytes"], &r["dssResponseBytesPerBuild"]]),
        "",
        Met::None,
    );
    t.row(
        s,
        "DSS peak requests in one second / seconds above budget",
        fs(&[&r["dssPeakRequestsPerSecond"], &r["dssSecondsAboveBudget"]]),
        format!("<= {budget} (+ bucket burst {budget})"),
        Met::Check(num(&r["dssPeakRequestsPerSecond"]) <= 2.0 * budget),
    );
    t.row(
        s,
        "DSS highest 10 s average (req/s)",
        f(&r["dssPeak10sAverage"]),
        format!("<= {budget} + {}", budget / 10.0),
        Met::Check(num(&r["dssPeak10sAverage"]) <= budget * 1.1),
    );
    t.row(
        s,
        "apiserver writes per build: DatasetBuild (status + finalizer)",
        f(&r["datasetbuildWritesPerBuild"]),
        "<= 5",
        Met::Check(num(&r["datasetbuildWritesPerBuild"]) <= 5.0),
    );
    t.row(
        s,
        "apiserver writes per build: events",
        f(&r["eventWritesPerBuild"]),
        "",
        Met::None,
    );
    t.row(
        s,
        "operator status writes/s (average until all Succeeded)",
        f(&r["statusWritesPerSecond"]),
        "",
        Met::None,
    );
    let rss = fs(&[&r["operatorPeakRssMiB"], &r["operatorCpuSeconds"]]);
    if s == "burst" {
        t.row(
            s,
            "operator peak RSS (MiB) / CPU (s)",
            rss,
            "peak RSS <= 20",
            Met::nominal(nominal, num(&r["operatorPeakRssMiB"]) <= 20.0),
        );
    } else {
        t.row(s, "operator peak RSS (MiB) / CPU (s)", rss, "", Met::None);
    }
    t.row(
        s,
        "operator RSS file-backed (binary's code, MiB), at the end",
        f(&r["operatorRssFileMiB"]),
        "",
        Met::None,
    );
}

fn idle(t: &mut Table, r: &Value) {
    let s = "idle";
    t.row(
        s,
        "finished builds (run through the operator)",
        f(&r["builds"]),
        "",
        Met::None,
    );
    t.row(
        s,
        "DSS requests per minute: for builds / all (with the connection check)",
        fs(&[&r["dssRequestsForBuildsPerMinute"], &r["dssRequestsPerMinute"]]),
        "0 for builds",
        Met::Check(num(&r["dssRequestsForBuildsPerMinute"]) == 0.0),
    );
    t.row(
        s,
        "apiserver requests per minute",
        f(&r["apiserverRequestsPerMinute"]),
        "",
        Met::None,
    );
    t.row(
        s,
        "operator RSS, long-running (MiB) / peak while finishing them",
        fs(&[&r["operatorRssMiB"], &r["operatorPeakRssMiB"]]),
        "RSS <= 40 at 10000 builds",
        Met::nominal(num(&r["builds"]) == 10_000.0, num(&r["operatorRssMiB"]) <= 40.0),
    );
    t.row(
        s,
        "operator RSS file-backed (binary's code, MiB)",
        f(&r["operatorRssFileMiB"]),
        "",
        Met::None,
    );
    t.row(
        s,
        "operator CPU (% of one core)",
        f(&r["operatorCpuPercent"]),
        "",
        Met::None,
    );
}

fn restart(t: &mut Table, r: &Value) {
    let s = "restart";
    t.row(
        s,
        format!(
            "time to /readyz with {} finished + {} running (s)",
            f(&r["finishedBuilds"]),
            f(&r["runningBuilds"])
        ),
        f(&r["readySeconds"]),
        "<= 10",
        Met::Check(num(&r["readySeconds"]) <= 10.0),
    );
    t.row(
        s,
        "DSS job calls for finished builds",
        f(&r["dssCallsForFinishedBuilds"]),
        "0",
        Met::Check(num(&r["dssCallsForFinishedBuilds"]) == 0.0),
    );
    t.row(
        s,
        "operator RSS after restart (MiB)",
        f(&r["operatorRssMiB"]),
        "",
        Met::None,
    );
}

fn scale(t: &mut Table, r: &Value) {
    let s = "scale";
    for p in r["points"].as_array().into_iter().flatten() {
        let n = f(&p["builds"]);
        t.row(
            s,
            format!("{n} finished builds: time to /readyz after a restart (s)"),
            f(&p["readySeconds"]),
            "",
            Met::None,
        );
        t.row(
            s,
            format!("{n} finished builds: RSS settled / highest in the idle window (MiB)"),
            fs(&[&p["rssSettledMiB"], &p["rssWindowMaxMiB"]]),
            "",
            Met::None,
        );
        t.row(
            s,
            format!("{n} finished builds: idle requests per minute, apiserver / DSS (all)"),
            fs(&[&p["apiserverRequestsPerMinute"], &p["dssRequestsPerMinute"]]),
            "",
            Met::None,
        );
        t.row(
            s,
            format!("{n} finished builds: DSS job calls for them since start"),
            f(&p["dssCallsForBuildsSinceStart"]),
            "0",
            Met::Check(num(&p["dssCallsForBuildsSinceStart"]) == 0.0),
        );
    }
    let sl = &r["slope"];
    t.row(
        s,
        "slope: RSS (KiB per build) / ready (s per 1000 builds)",
        fs(&[&sl["rssKiBPerBuild"], &sl["readySecondsPer1000Builds"]]),
        "",
        Met::None,
    );
    t.row(
        s,
        "slope per 1000 builds: idle apiserver / DSS requests per minute",
        fs(&[
            &sl["apiserverRequestsPerMinutePer1000Builds"],
            &sl["dssRequestsPerMinutePer1000Builds"],
        ]),
        "",
        Met::None,
    );
}

fn tenants(t: &mut Table, r: &Value) {
    let s = "tenants";
    for (key, what) in [
        ("healthy", "A, all connections healthy"),
        ("throttled", "B, first connection throttled (429)"),
        ("hung", "C, first connection hung"),
    ] {
        let run = &r[key];
        if !run.is_object() {
            continue;
        }
        lag(
            t,
            s,
            &format!(
                "{what}: lag of the other {} connections' {} builds",
                f(&(num(&run["connections"]) - 1.0).into()),
                f(&run["otherBuilds"])
            ),
            &run["otherDetectionLagSeconds"],
            None,
        );
        t.row(
            s,
            format!("{what}: other connections all Succeeded after (s)"),
            f(&run["otherAllSucceededSeconds"]),
            "",
            Met::None,
        );
    }
    for (key, what) in [
        ("throttledOverHealthyP99", "lag p99 of the others, B / A"),
        ("hungOverHealthyP99", "lag p99 of the others, C / A"),
    ] {
        t.row(s, what, f(&r[key]), "<= 1.2", Met::Check(num(&r[key]) <= 1.2));
    }
}

fn rows(results: &Value) -> Vec<[String; 5]> {
    let mut t = Table::default();
    for run in results["ceiling"]["runs"].as_array().into_iter().flatten() {
        t.row(
            "ceiling",
            format!(
                "status patches/s through kube-rs, concurrency {}",
                run["concurrency"]
            ),
            f(&run["patchesPerSecond"]),
            "",
            Met::None,
        );
    }
    for s in ["burst", "queued"] {
        if results[s].is_object() {
            load(&mut t, s, &results[s]);
        }
    }
    if results["idle"].is_object() {
        idle(&mut t, &results["idle"]);
    }
    if results["restart"].is_object() {
        restart(&mut t, &results["restart"]);
    }
    if results["scale"].is_object() {
        scale(&mut t, &results["scale"]);
    }
    if results["tenants"].is_object() {
        tenants(&mut t, &results["tenants"]);
    }
    t.0
}

pub(crate) fn markdown(results: &Value) -> String {
    let m = &results["machine"];
    let mut s = format!(
        "Machine: {} cores ({}), {} GiB, Linux {}, {}; operator: release build, leader election on.\n\n| Scenario | Figure | Value | Target | Met |\n|---|---|---|---|---|\n",
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
