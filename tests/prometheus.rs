//! The chart's dashboard and alerts against a real Prometheus (built from the pinned module by
//! `hack/build-tools.sh prometheus`) that scrapes a real operator during an end-to-end run: a build
//! that succeeds, one that fails, one on a DSSConnection whose API key DSS refuses, polls that DSS
//! answers with 500 (a reconcile error), and a small DSS budget (2 requests per second, one at a time). Every
//! dashboard query and every alert expression is read from the shipped files and run through
//! Prometheus's HTTP API: each must return series, and so must every selector inside it (Prometheus
//! parses the expression, `/api/v1/parse_query`), so a renamed metric or label value breaks the test.
//! The series must also carry the labels that are read from them: a panel's legend labels, and for an
//! alert, what it measures (its expression without the threshold) must carry the labels it groups by
//! and those its labels and annotations name, so a renamed label name breaks the test too. The
//! alerts that this run should fire do, the others do not, and the rule file loaded into the server
//! evaluates without error.

// Set-up helpers fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use harness::{Operator, TestNs, wait_for};
use kube::api::PostParams;
use kube_dss::{
    crd::{DSSConnection, DatasetBuild, Phase},
    emulator::{Faults, admin::AdminClient},
};
use serde_json::{Value, json};

const KEY: &str = "prom-key-7a1c2e9d";
const EMULATOR: &str = r#"
projects:
  - projectKey: PROJ
    datasets:
      - name: quick
        build: {durationMs: 1500, log: ["building quick"]}
      - name: broken
        build: {durationMs: 1000, outcome: FAILED, message: "Job failed: boom", log: ["ERROR: boom"]}
      - name: steady
        build: {durationMs: 10000}
apiKeys:
  - {key: prom-key-7a1c2e9d, id: kube-dss-operator, projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}
"#;

/// What Grafana puts in place of the dashboard's variables: rates over the whole run, and the
/// operator namespace the scrape labels the target with.
const RATE_INTERVAL: &str = "5m";

/// The operator pod, as a ServiceMonitor's scrape labels the target.
const POD: &str = "kube-dss-5d8c7b9f4-x2k7q";

/// PromQL's comparison operators: the threshold of an alert.
const COMPARISONS: [&str; 6] = ["==", "!=", ">=", "<=", ">", "<"];

/// A Prometheus server scraping one target every second, with the chart's rule file loaded.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, namespace: &str) -> Prometheus {
        let out = Command::new(harness::repo().join("hack/build-tools.sh"))
            .arg("prometheus")
            .stderr(Stdio::inherit())
            .output()
            .expect("run hack/build-tools.sh prometheus");
        assert!(out.status.success(), "hack/build-tools.sh prometheus failed");
        let bin = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .trim(),
        );
        let data = tempfile::tempdir().unwrap();
        let rules = harness::repo().join("charts/kube-dss/rules/kube-dss.rules.yaml");
        // The namespace and pod labels are what a ServiceMonitor's scrape adds: the operator's.
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules}]\n\
             scrape_configs:\n\
             - job_name: kube-dss\n  \
               static_configs:\n  \
               - targets: ['{target}']\n    \
                 labels: {{namespace: {namespace}, pod: {POD}}}\n",
            rules = rules.display(),
        );
        let config_path = data.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = harness::free_port();
        let log = harness::repo().join(format!("target/test-logs/prometheus-{port}.log"));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin.join("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _data: data,
        }
    }

    async fn ready(&self) {
        for _ in 0..600 {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", self.url)).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "prometheus not ready; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// GET /api/v1/<path> with query parameters; the `data` of a successful answer.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let answer: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "{path} {params:?}: {answer}");
        answer["data"].clone()
    }

    /// The series an instant query returns now.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]).await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().unwrap().clone()
    }

    /// The expression as Prometheus parses it.
    async fn parse(&self, expr: &str) -> Value {
        self.api("parse_query", &[("query", expr)]).await
    }

    /// Every vector selector of an expression, as Prometheus parses it, written back as PromQL.
    async fn selectors(&self, expr: &str) -> Vec<String> {
        let ast = self.parse(expr).await;
        let mut out = Vec::new();
        collect_selectors(&ast, &mut out);
        assert!(!out.is_empty(), "{expr}: no selector found in {ast}");
        out
    }

    /// What an alert measures: its expression without the threshold (the left-hand side of a
    /// top-level comparison with a number), or the argument of a top-level `absent()`. Cut from the
    /// rule file's text, and checked to be exactly that part of Prometheus's own parse of it.
    async fn measured(&self, expr: &str) -> String {
        let ast = self.parse(expr).await;
        let text = expr.trim();
        let op = ast["op"].as_str().unwrap_or_default();
        let (cut, want) = if ast["type"] == "binaryExpr"
            && COMPARISONS.contains(&op)
            && ast["rhs"]["type"] == "numberLiteral"
        {
            // The threshold is a number at the end: the last occurrence of the operator is its.
            let at = text.rfind(op).unwrap();
            (text[..at].trim().to_string(), ast["lhs"].clone())
        } else if ast["type"] == "call" && ast["func"]["name"] == "absent" {
            let inner = text
                .strip_prefix("absent(")
                .and_then(|t| t.strip_suffix(')'))
                .unwrap();
            (inner.trim().to_string(), ast["args"][0].clone())
        } else {
            panic!("{expr}: neither a comparison with a threshold nor absent(): {ast}")
        };
        assert_eq!(
            self.parse(&cut).await,
            want,
            "{expr}: {cut:?} is not what it measures"
        );
        cut
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_selectors(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if matches!(
                map.get("type").and_then(Value::as_str),
                Some("vectorSelector" | "matrixSelector")
            ) {
                let matchers: Vec<String> = map["matchers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        let value = serde_json::to_string(m["value"].as_str().unwrap()).unwrap();
                        format!(
                            "{}{}{value}",
                            m["name"].as_str().unwrap(),
                            m["type"].as_str().unwrap()
                        )
                    })
                    .collect();
                out.push(format!("{{{}}}", matchers.join(", ")));
            }
            map.values().for_each(|v| collect_selectors(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_selectors(v, out)),
        _ => {}
    }
}

/// The labels the outermost aggregations of an expression keep (`by (...)`).
fn grouping(ast: &Value, out: &mut BTreeSet<String>) {
    match ast {
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("aggregation") => {
            assert_ne!(map.get("without"), Some(&Value::Bool(true)), "{ast}");
            for label in map["grouping"].as_array().into_iter().flatten() {
                out.insert(label.as_str().unwrap().to_string());
            }
        }
        Value::Object(map) => map.values().for_each(|v| grouping(v, out)),
        Value::Array(items) => items.iter().for_each(|v| grouping(v, out)),
        _ => {}
    }
}

/// The label names a Grafana legend (`{{label}}`) or an alert template (`$labels.label`) reads.
fn label_names(text: &str, open: &str, close: fn(char) -> bool) -> BTreeSet<String> {
    text.split(open)
        .skip(1)
        .map(|rest| {
            let rest = rest.trim_start();
            rest[..rest.find(close).unwrap_or(rest.len())].to_string()
        })
        .collect()
}

/// Every series carries each of `labels`, non-empty; and there is at least one.
fn assert_labelled(what: &str, series: &[Value], labels: &BTreeSet<String>) {
    assert!(!series.is_empty(), "{what}: no series");
    for s in series {
        for label in labels {
            assert!(
                s["metric"][label].as_str().is_some_and(|v| !v.is_empty()),
                "{what}: a series without the label {label:?}: {s}"
            );
        }
    }
}

/// A query of a dashboard panel.
struct Panel {
    title: String,
    expr: String,
    /// The labels its legend shows.
    legend: BTreeSet<String>,
}

/// Every `targets[].expr` of the dashboard, with the panel title, variables replaced.
fn dashboard_queries(namespace: &str) -> Vec<Panel> {
    let path = harness::repo().join("charts/kube-dss/dashboards/kube-dss.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some(),
        "the dashboard has no schemaVersion"
    );
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no target", panel["title"]);
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$namespace", namespace);
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            queries.push(Panel {
                title: panel["title"].as_str().unwrap().to_string(),
                expr,
                legend: label_names(legend, "{{", |c| c == '}' || c.is_whitespace()),
            });
        }
    }
    queries
}

/// An alert of the rule file.
struct Alert {
    name: String,
    expr: String,
    /// The labels of the alerting series its labels and annotations read (`$labels.x`).
    templated: BTreeSet<String>,
}

/// Every alert of the rule file.
fn alert_rules(path: &Path) -> Vec<Alert> {
    let file: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut rules = Vec::new();
    for group in file["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let templates: String = ["labels", "annotations"]
                .iter()
                .filter_map(|k| rule[k].as_object())
                .flat_map(|m| m.values())
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n");
            rules.push(Alert {
                name: rule["alert"].as_str().unwrap().to_string(),
                expr: rule["expr"].as_str().unwrap().to_string(),
                templated: label_names(&templates, "$labels.", |c| {
                    !(c.is_ascii_alphanumeric() || c == '_')
                }),
            });
        }
    }
    rules
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_and_alert_expression_returns_series_from_a_real_prometheus() {
    let emu = harness::emulator(EMULATOR).await;
    let client = harness::client().await;
    let ns = TestNs::new(&client, "e2e-prom").await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    ns.secret("dss-bad-key", "apiKey", "not-the-key").await;
    // A budget of 2 requests per second, one at a time: polls and starts wait for it.
    ns.connection("dss", &emu.base_url(), Some((2, 1))).await;
    let bad: DSSConnection = serde_json::from_value(json!({
        "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DSSConnection",
        "metadata": {"name": "bad-key"},
        "spec": {"url": emu.base_url(), "apiKeySecretRef": {"name": "dss-bad-key", "key": "apiKey"}},
    }))
    .unwrap();
    let conns = ns.api::<DSSConnection>();
    conns.create(&PostParams::default(), &bad).await.unwrap();

    let op = Operator::start(&ns.name, &[]);
    op.ready().await;
    let target = op.admin.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target, &ns.name);
    prom.ready().await;
    // Scraped twice before anything happens: every counter then has a sample to grow from.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while prom
        .query("count_over_time(kube_dss_leader[1m]) >= 2")
        .await
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never scraped the operator"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let builds = ns.api::<DatasetBuild>();
    // "polled" runs long enough for DSS to answer its polls with 500 for a while.
    for (name, conn, output) in [
        ("polled", "dss", "steady"),
        ("ok", "dss", "quick"),
        ("fails", "dss", "broken"),
        ("refused", "bad-key", "quick"),
    ] {
        let build: DatasetBuild = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
            "metadata": {"name": name},
            "spec": {"connectionRef": {"name": conn}, "projectKey": "PROJ", "outputs": [{"id": output}]},
        }))
        .unwrap();
        builds.create(&PostParams::default(), &build).await.unwrap();
    }
    let phase = |p: Phase| move |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(p);
    wait_for(&builds, "polled", Duration::from_secs(120), phase(Phase::Running)).await;
    // A running job is polled through the running-jobs listing, and through its own status when the
    // listing fails: DSS answers 500 to both until the operator has counted the failed poll as a
    // reconcile error (DssServerError), which it then waits out.
    let admin = AdminClient::new(emu.base_url());
    admin
        .set_faults(&Faults {
            error_rate: 1.0,
            error_status: Some(500),
            routes: vec![
                "GET /projects/{pk}/jobs/running/".into(),
                "GET /projects/{pk}/jobs/{id}/".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let server_error = r#"kube_dss_reconcile_errors_total{category="DssServerError"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while op.metric(server_error).await.unwrap_or(0.0) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconcile error counted while DSS answered 500: {}",
            op.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin.clear_faults().await.unwrap();
    wait_for(
        &builds,
        "polled",
        Duration::from_secs(120),
        phase(Phase::Succeeded),
    )
    .await;
    wait_for(&builds, "ok", Duration::from_secs(120), phase(Phase::Succeeded)).await;
    wait_for(&builds, "fails", Duration::from_secs(120), phase(Phase::Failed)).await;
    wait_for(&conns, "bad-key", Duration::from_secs(60), |c: &DSSConnection| {
        c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False")
        })
    })
    .await;
    // Enough scrapes after the last change for every rate and every rule evaluation to see it: the
    // failed build read 1 in each of at least five scrapes of the last six seconds.
    let scraped = format!(
        "min_over_time(kube_dss_builds{{namespace=\"{ns}\", phase=\"Failed\"}}[6s]) == 1 \
         and count_over_time(kube_dss_builds{{namespace=\"{ns}\", phase=\"Failed\"}}[6s]) >= 5",
        ns = ns.name
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while prom.query(&scraped).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never scraped the failed build five times"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The reconcile error reached Prometheus, under its category.
    let errors = prom
        .query(&format!(
            "kube_dss_reconcile_errors_total{{namespace=\"{}\", category=\"DssServerError\"}} > 0",
            ns.name
        ))
        .await;
    assert_eq!(errors.len(), 1, "the reconcile error in Prometheus: {errors:?}");

    // The dashboard: every query, and every selector in it, returns series, and the series carry the
    // labels the legend shows.
    let queries = dashboard_queries(&ns.name);
    for Panel { title, expr, legend } in &queries {
        let result = prom.query(expr).await;
        assert_labelled(&format!("dashboard panel {title:?}: {expr}"), &result, legend);
        for selector in prom.selectors(expr).await {
            assert!(
                !prom.query(&selector).await.is_empty(),
                "panel {title:?}: {selector} (in {expr}) matches no series"
            );
        }
    }
    // The namespace variable lists the operator's namespace.
    let values = prom
        .api("label/namespace/values", &[("match[]", "kube_dss_leader")])
        .await;
    assert!(
        values.as_array().unwrap().iter().any(|v| v == ns.name.as_str()),
        "namespace variable: {values}"
    );
    // The reconcile-errors panel shows the error's rate under its category.
    let panel = queries
        .iter()
        .find(|p| p.title == "Reconcile errors by category" && p.legend.contains("category"))
        .unwrap();
    let rates = prom.query(&panel.expr).await;
    let rate = rates
        .iter()
        .find(|s| s["metric"]["category"] == "DssServerError")
        .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
    assert!(rate.is_some_and(|r| r > 0.0), "{}: {rates:?}", panel.expr);
    println!("dashboard: {} queries returned series", queries.len());

    // The alerts: every selector returns series; what each measures returns series carrying the
    // labels it groups by and those its labels and annotations name; the whole expression fires
    // exactly for the alerts this run provokes (a failed build, a refused key) and for no other.
    let rules_path = harness::repo().join("charts/kube-dss/rules/kube-dss.rules.yaml");
    let rules = alert_rules(&rules_path);
    assert_eq!(rules.len(), 9, "alerts in the rule file");
    for Alert {
        name: alert,
        expr,
        templated,
    } in &rules
    {
        for selector in prom.selectors(expr).await {
            assert!(
                !prom.query(&selector).await.is_empty(),
                "alert {alert}: {selector} (in {expr}) matches no series"
            );
        }
        let measured = prom.measured(expr).await;
        let mut labels = templated.clone();
        grouping(&prom.parse(&measured).await, &mut labels);
        let values = prom.query(&measured).await;
        assert_labelled(&format!("alert {alert}, measuring {measured}"), &values, &labels);
        for v in &values {
            assert_eq!(v["metric"]["namespace"], ns.name.as_str(), "alert {alert}: {v}");
        }
        println!(
            "alert {alert}: measures {} series labelled {labels:?}, e.g. {}",
            values.len(),
            values[0]["value"][1]
        );
        let result = prom.query(expr).await;
        match alert.as_str() {
            "KubeDssConnectionNotReady" => {
                assert_eq!(result.len(), 1, "{alert}: {result:?}");
                assert_eq!(
                    result[0]["metric"]["reason"], "Unauthorized",
                    "{alert}: {result:?}"
                );
                assert_eq!(result[0]["metric"]["namespace"], ns.name.as_str());
                assert_eq!(
                    result[0]["value"][1], "1",
                    "{alert}: one connection, the bad-key one"
                );
            }
            "KubeDssBuildsFailed" => {
                assert_eq!(result.len(), 1, "{alert}: {result:?}");
                assert_eq!(result[0]["value"][1], "1", "{alert}: the one failed build");
            }
            // Its ratio depends on how often calls wait for the budget in this run: only what it
            // measures is checked, above.
            "KubeDssBudgetSaturated" => {}
            _ => assert!(
                result.is_empty(),
                "{alert} fires in a run that should not fire it: {result:?}"
            ),
        }
        println!("alert {alert}: {} series now", result.len());
    }

    // The server loaded the same file: every rule evaluates without error, and the two alerts are
    // pending (or already firing, for the one with `for: 1m`).
    let groups = prom.api("rules", &[("type", "alert")]).await;
    let loaded: Vec<&Value> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), rules.len(), "rules loaded: {groups}");
    for rule in &loaded {
        assert_eq!(
            rule["health"], "ok",
            "rule {} evaluates with an error: {rule}",
            rule["name"]
        );
    }
    // Rules are evaluated every second, on their own schedule: allow a few rounds.
    let active = |alerts: &Value, name: &str| {
        alerts["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == name && matches!(a["state"].as_str(), Some("pending" | "firing"))
        })
    };
    let wanted = ["KubeDssConnectionNotReady", "KubeDssBuildsFailed"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = prom.api("alerts", &[]).await;
        if wanted.iter().all(|name| active(&alerts, name)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{wanted:?} are not all active in Prometheus: {alerts}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    drop(prom);
    drop(op);
    ns.cleanup().await;
    emu.shutdown().await;
}
