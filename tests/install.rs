//! Install and operate, proven against real parts: the operator runs with exactly the RBAC the Helm
//! chart renders (as its ServiceAccount, with a token from the TokenRequest API), every rule of that
//! RBAC is needed, a second replica takes over when the leader is killed, and the GitOps health of
//! objects the operator produced is what kstatus and Argo CD's Lua runtime say it is.

// Set-up helpers fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::{path::PathBuf, process::Stdio, time::Duration};

use base64::Engine as _;
use harness::{Operator, TestNs, wait_for, wait_gone};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret, events::v1::Event, rbac::v1::Role};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use kube_dss::{
    crd::{DSSConnection, DatasetBuild, DatasetBuildSchedule, Phase, ScenarioRun},
    emulator::{self, admin::AdminClient},
};
use serde_json::json;

const KEY: &str = "install-key-3e4f5a6b";
const EMULATOR: &str = r#"
instance: {maxRunningActivities: 20}
projects:
  - projectKey: PROJ
    datasets:
      - name: quick
        build: {durationMs: 1000}
      - name: medium
        build: {durationMs: 8000}
      - name: slow
        build: {durationMs: 600000}
      - name: broken
        build: {durationMs: 500, outcome: FAILED, message: "Job failed: boom", log: ["boom"]}
    scenarios:
      - id: QUICK
        steps: [{type: build, id: build, outputs: [{id: quick}]}]
apiKeys:
  - {key: install-key-3e4f5a6b, id: kube-dss-operator, projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS, RUN_SCENARIOS]}}
"#;

async fn emulator() -> (emulator::Handle, AdminClient) {
    let emu = emulator::spawn(
        emulator::Config::from_yaml(EMULATOR).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let admin = AdminClient::new(emu.base_url());
    (emu, admin)
}

fn tool(name: &str) -> PathBuf {
    harness::tools_bin().join(name)
}

/// Applies YAML with server-side apply as the admin.
fn apply(yaml: &str) {
    let mut child = std::process::Command::new(tool("kubectl"))
        .env("KUBECONFIG", harness::control_plane())
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `helm template` of the chart.
fn helm_template(release_ns: &str, sets: &[&str]) -> String {
    let mut cmd = std::process::Command::new(tool("helm"));
    cmd.args([
        "template",
        "kd",
        harness::repo().join("charts/kube-dss").to_str().unwrap(),
        "-n",
        release_ns,
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn client_for(path: &PathBuf) -> Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    Client::try_from(
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap(),
    )
    .unwrap()
}

async fn connection(ns: &TestNs, url: &str) {
    ns.secret("dss-api-key", "apiKey", KEY).await;
    ns.connection("dss", url, None).await;
}

async fn build(ns: &TestNs, name: &str, spec: serde_json::Value) {
    let mut spec = spec;
    if spec["connectionRef"].is_null() {
        spec["connectionRef"] = json!({"name": "dss"});
    }
    spec["projectKey"] = json!("PROJ");
    let b: DatasetBuild = serde_json::from_value(json!({
        "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild", "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    ns.api::<DatasetBuild>()
        .create(&PostParams::default(), &b)
        .await
        .unwrap();
}

/// The metric families of docs/operations.md's table, with their types.
fn documented_metrics() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(harness::repo().join("docs/operations.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            (name.starts_with("kube_dss_") && ["counter", "gauge", "histogram"].contains(&kind))
                .then(|| (name.to_string(), kind.to_string()))
        })
        .collect()
}

/// A schedule of the `quick` dataset every 2 seconds; `extra` is merged into its spec.
async fn schedule(ns: &TestNs, name: &str, extra: serde_json::Value) {
    let mut spec = json!({
        "schedule": "*/2 * * * * *",
        "successfulBuildsHistoryLimit": 100,
        "buildTemplate": {"spec": {"connectionRef": {"name": "dss"}, "projectKey": "PROJ", "outputs": [{"id": "quick"}]}},
    });
    if let (Some(spec), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    let s: DatasetBuildSchedule = serde_json::from_value(json!({
        "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuildSchedule", "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    ns.api::<DatasetBuildSchedule>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// A ScenarioRun of the `QUICK` scenario.
async fn scenario_run(ns: &TestNs, name: &str) {
    let r: ScenarioRun = serde_json::from_value(json!({
        "apiVersion": "kube-dss.dev/v1alpha1", "kind": "ScenarioRun", "metadata": {"name": name},
        "spec": {"connectionRef": {"name": "dss"}, "projectKey": "PROJ", "scenarioId": "QUICK"},
    }))
    .unwrap();
    ns.api::<ScenarioRun>()
        .create(&PostParams::default(), &r)
        .await
        .unwrap();
}

/// The builds a schedule created.
async fn scheduled_builds(ns: &TestNs, schedule: &str) -> Vec<DatasetBuild> {
    let lp = ListParams::default().labels(&format!("kube-dss.dev/schedule={schedule}"));
    ns.api::<DatasetBuild>()
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Removes a finalizer as the admin (the operator may lack the rule to do it).
fn drop_finalizers(ns: &str, kind: &str, name: &str) {
    let _ = harness::kubectl(&[
        "patch",
        kind,
        name,
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
}

fn phase(b: &DatasetBuild) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_works_with_exactly_the_rbac_the_chart_renders() {
    let admin = harness::client().await;
    let watched = TestNs::new(&admin, "rbac-watched").await;
    let release = TestNs::new(&admin, "rbac-release").await;
    let rendered = helm_template(
        &release.name,
        &[
            &format!("watchNamespaces={{{}}}", watched.name),
            "leaderElection.enabled=true",
        ],
    );
    apply(&rendered);
    let kubeconfig = harness::sa_kubeconfig(&release.name, "kd-kube-dss");
    let (emu, dss) = emulator().await;
    connection(&watched, &emu.base_url()).await;
    // A connection with a budget of one call per second (its calls wait: dss_throttled), and one to
    // a DSS that goes away under a deleted build (reconcile errors, then a forced release).
    watched.connection("tight", &emu.base_url(), Some((1, 1))).await;
    let (doomed_emu, _) = emulator().await;
    watched.connection("doomed", &doomed_emu.base_url(), None).await;
    let op = Operator::start_env(
        &watched.name,
        &[
            "--leader-election",
            "--lease-namespace",
            &release.name,
            "--lease-name",
            "kd-kube-dss",
            "--finalizer-timeout-seconds",
            "5",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    op.ready().await;
    build(&watched, "ok", json!({"outputs": [{"id": "quick"}]})).await;
    build(&watched, "bad", json!({"outputs": [{"id": "broken"}]})).await;
    build(&watched, "long", json!({"outputs": [{"id": "slow"}]})).await;
    schedule(&watched, "every-2s", json!({"concurrencyPolicy": "Allow"})).await;
    build(
        &watched,
        "throttled",
        json!({"outputs": [{"id": "quick"}], "connectionRef": {"name": "tight"}}),
    )
    .await;
    build(
        &watched,
        "orphaned",
        json!({"outputs": [{"id": "slow"}], "connectionRef": {"name": "doomed"}}),
    )
    .await;
    let builds: Api<DatasetBuild> = watched.api();
    wait_for(&builds, "ok", Duration::from_secs(60), |b| {
        phase(b) == Some(Phase::Succeeded)
    })
    .await;
    let bad = wait_for(&builds, "bad", Duration::from_secs(60), |b| {
        phase(b) == Some(Phase::Failed)
    })
    .await;
    assert!(
        bad.status
            .unwrap()
            .failure
            .unwrap()
            .log_tail
            .unwrap_or_default()
            .contains("boom")
    );
    wait_for(&builds, "long", Duration::from_secs(60), |b| {
        phase(b) == Some(Phase::Running)
    })
    .await;
    builds.delete("long", &DeleteParams::default()).await.unwrap();
    wait_gone(&builds, "long", Duration::from_secs(60)).await;
    assert!(dss.jobs().await.unwrap().iter().any(|j| j.state == "ABORTED"));
    // The schedule creates builds, which run, and its status is written.
    let schedules: Api<DatasetBuildSchedule> = watched.api();
    wait_for(&schedules, "every-2s", Duration::from_secs(60), |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.last_successful_time.is_some())
    })
    .await;
    schedules
        .delete("every-2s", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&schedules, "every-2s", Duration::from_secs(60)).await;
    for b in scheduled_builds(&watched, "every-2s").await {
        wait_gone(
            &builds,
            &b.metadata.name.unwrap_or_default(),
            Duration::from_secs(60),
        )
        .await;
    }
    wait_for(&builds, "throttled", Duration::from_secs(60), |b| {
        phase(b) == Some(Phase::Succeeded)
    })
    .await;
    wait_for(&builds, "orphaned", Duration::from_secs(60), |b| {
        phase(b) == Some(Phase::Running)
    })
    .await;
    doomed_emu.shutdown().await;
    builds.delete("orphaned", &DeleteParams::default()).await.unwrap();
    wait_gone(&builds, "orphaned", Duration::from_secs(60)).await;
    let conns: Api<DSSConnection> = watched.api();
    let c = conns.get("dss").await.unwrap();
    assert!(
        c.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    let events: Api<Event> = watched.api();
    assert!(
        !events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "events are recorded"
    );
    let leases: Api<Lease> = release.api();
    assert!(
        leases.get("kd-kube-dss").await.is_ok(),
        "the operator took its Lease"
    );

    // As that identity, Secrets outside the watched namespaces stay out of reach, and none can be listed.
    let sa = client_for(&kubeconfig).await;
    release.secret("elsewhere", "k", "v").await;
    let other: Api<Secret> = Api::namespaced(sa.clone(), &release.name);
    assert!(matches!(other.get("elsewhere").await, Err(kube::Error::Api(s)) if s.code == 403));
    let mine: Api<Secret> = Api::namespaced(sa, &watched.name);
    assert!(matches!(mine.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403));
    let metrics = op.metrics().await;
    // Every family docs/operations.md documents is served, with its documented type.
    let documented = documented_metrics();
    assert_eq!(documented.len(), 19, "docs/operations.md lists {documented:?}");
    for (name, kind) in &documented {
        let family = if kind == "counter" {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        assert!(
            metrics.lines().any(|l| l == format!("# TYPE {family} {kind}")),
            "/metrics has no {kind} {family}:\n{metrics}"
        );
    }
    // And the ones this scenario exercises have samples.
    for series in [
        "kube_dss_builds{",
        "kube_dss_dss_requests_total{",
        "kube_dss_dss_request_duration_seconds_bucket{",
        "kube_dss_reconciles_total{",
        "kube_dss_dss_throttled_total{",
        "kube_dss_reconcile_errors_total{category=\"DssUnreachable\"}",
        "kube_dss_finalizer_forced_releases_total{reason=\"DssUnreachable\"} 1",
        "kube_dss_jobs_started_total",
        "kube_dss_jobs_adopted_total 0",
        "kube_dss_start_outcome_unknown_total 0",
        "kube_dss_job_duration_seconds_bucket{",
        "kube_dss_leader 1",
    ] {
        assert!(
            metrics.contains(series),
            "missing {series} in /metrics:\n{metrics}"
        );
    }
    // The key shows nowhere the operator writes: its log, its metrics, the objects' status, events;
    // neither as such nor in its HTTP Basic form.
    let objects = harness::kubectl(&["get", "dsb,dssconn", "-n", &watched.name, "-o", "json"]);
    assert!(objects.status.success());
    let objects: serde_json::Value = serde_json::from_slice(&objects.stdout).unwrap();
    let statuses: Vec<String> = objects["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].to_string())
        .collect();
    assert!(
        statuses.len() >= 6 && statuses.iter().all(|s| s.len() > 10),
        "{statuses:?}"
    );
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    for (place, text) in [
        ("the log", op.log_text()),
        ("/metrics", metrics.clone()),
        (".status", statuses.join("\n")),
        ("events", notes.join("\n")),
    ] {
        assert!(!text.contains(KEY), "the API key leaked into {place}");
        assert!(
            !text.contains(&basic),
            "the API key's Basic form leaked into {place}"
        );
    }
    drop(op);
    watched.cleanup().await;
    release.cleanup().await;
    emu.shutdown().await;
}

/// What one RBAC variant achieved, and what the API server refused it.
#[derive(Debug, Default)]
struct Outcome {
    succeeded: bool,
    connection_status: bool,
    events: bool,
    scheduled: bool,
    schedule_status: bool,
    scenario_succeeded: bool,
    /// `(verb, resource)` requests the API server refused, as the operator reported them (its log,
    /// and the DSSConnection's condition for the Secret it may not read).
    denied: Vec<(String, String)>,
}

impl Outcome {
    fn lost(&self) -> Vec<&'static str> {
        [
            (!self.succeeded, "builds never succeed"),
            (!self.connection_status, "DSSConnection status is not written"),
            (!self.events, "no events"),
            (!self.scheduled, "schedules create no build"),
            (
                !self.schedule_status,
                "DatasetBuildSchedule status is not written",
            ),
            (!self.scenario_succeeded, "scenario runs never succeed"),
        ]
        .into_iter()
        .filter_map(|(lost, what)| lost.then_some(what))
        .collect()
    }

    /// Whether the API server refused a request that `rule` grants.
    fn denied_by(&self, rule: &serde_json::Value) -> bool {
        let listed = |field: &str, value: &str| {
            rule[field]
                .as_array()
                .is_some_and(|values| values.iter().any(|v| v == value))
        };
        self.denied
            .iter()
            .any(|(verb, resource)| listed("verbs", verb) && listed("resources", resource))
    }
}

/// The `(verb, resource)` pairs of the API server's refusals (`cannot VERB resource "RESOURCE"`) in
/// a text, whatever its JSON escaping.
fn refusals(text: &str) -> Vec<(String, String)> {
    let text = text.replace('\\', "");
    let mut found = Vec::new();
    for (at, _) in text.match_indices("cannot ") {
        let rest = &text[at + "cannot ".len()..];
        let Some((verb, rest)) = rest.split_once(" resource \"") else {
            continue;
        };
        let Some((resource, _)) = rest.split_once('"') else {
            continue;
        };
        if !verb.contains(' ') {
            found.push((verb.to_string(), resource.to_string()));
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn refusals_are_read_whatever_the_escaping() {
    let log = r#"{"error":"ApiError: leases.coordination.k8s.io \"kube-dss\" is forbidden: User \"system:serviceaccount:ns:op\" cannot get resource \"leases\" in API group \"coordination.k8s.io\""}
        {"message":"cannot reach DSS"} msg: "... cannot patch resource \\\"datasetbuilds/status\\\" in API group""#;
    assert_eq!(
        refusals(log),
        [
            ("get".to_string(), "leases".to_string()),
            ("patch".to_string(), "datasetbuilds/status".to_string())
        ]
    );
}

/// When the control variant (every rule) achieved everything: the others are judged against it.
type ControlDone = tokio::sync::watch::Receiver<Option<std::time::Instant>>;

/// How long a variant may take beyond the control variant before what it lacks counts as lost.
const GRACE_AFTER_CONTROL: Duration = Duration::from_secs(20);
/// The longest any variant waits (the control included).
const VARIANT_DEADLINE: Duration = Duration::from_secs(180);

async fn run_variant(
    admin: &Client,
    name: &str,
    rules: Vec<serde_json::Value>,
    mut control_done: ControlDone,
) -> Outcome {
    let ns = TestNs::new(admin, &format!("rbac-{name}")).await;
    apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: op, namespace: {ns}}}\n---\n{}\n---\n{}",
        serde_json::to_string(
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "op", "namespace": ns.name}, "rules": rules})
        )
        .unwrap(),
        serde_json::to_string(
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "op", "namespace": ns.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": ns.name}]})
        )
        .unwrap(),
        ns = ns.name,
    ));
    let kubeconfig = harness::sa_kubeconfig(&ns.name, "op");
    let (emu, _) = emulator().await;
    connection(&ns, &emu.base_url()).await;
    let op = Operator::start_env(
        &ns.name,
        &[
            "--leader-election",
            "--lease-namespace",
            &ns.name,
            "--lease-name",
            "kube-dss",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    build(&ns, "ok", json!({"outputs": [{"id": "quick"}]})).await;
    schedule(&ns, "every-2s", json!({})).await;
    scenario_run(&ns, "scr").await;
    let builds: Api<DatasetBuild> = ns.api();
    let scenario_runs: Api<ScenarioRun> = ns.api();
    let schedules: Api<DatasetBuildSchedule> = ns.api();
    let conns: Api<DSSConnection> = ns.api();
    let events: Api<Event> = ns.api();
    let started = std::time::Instant::now();
    let mut outcome = Outcome::default();
    loop {
        outcome.succeeded = builds
            .get("ok")
            .await
            .is_ok_and(|b| phase(&b) == Some(Phase::Succeeded));
        outcome.connection_status = conns.get("dss").await.is_ok_and(|c| c.status.is_some());
        outcome.events = events
            .list(&ListParams::default())
            .await
            .is_ok_and(|l| !l.items.is_empty());
        outcome.scheduled = !scheduled_builds(&ns, "every-2s").await.is_empty();
        outcome.schedule_status = schedules.get("every-2s").await.is_ok_and(|s| s.status.is_some());
        outcome.scenario_succeeded = scenario_runs
            .get("scr")
            .await
            .is_ok_and(|r| r.status.and_then(|s| s.phase) == Some(Phase::Succeeded));
        if outcome.lost().is_empty() {
            break;
        }
        let control = *control_done.borrow_and_update();
        if control.is_some_and(|t| t.elapsed() > GRACE_AFTER_CONTROL) || started.elapsed() > VARIANT_DEADLINE
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut reported = op.log_text();
    if let Ok(c) = conns.get("dss").await {
        reported.push_str(&serde_json::to_string(&c.status).unwrap());
        // The operator reports a Secret it may not read on the connection, not in its log.
        if c.status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.reason == "SecretForbidden")
        {
            outcome.denied.push(("get".into(), "secrets".into()));
        }
    }
    outcome.denied.extend(refusals(&reported));
    drop(op);
    // Without the finalizer rules the operator cannot release its finalizers: do it as the admin.
    let _ = schedules.delete("every-2s", &DeleteParams::default()).await;
    drop_finalizers(&ns.name, "dsbs", "every-2s");
    for b in scheduled_builds(&ns, "every-2s").await {
        let name = b.metadata.name.unwrap_or_default();
        let _ = builds.delete(&name, &DeleteParams::default()).await;
        drop_finalizers(&ns.name, "dsb", &name);
    }
    let _ = builds.delete("ok", &DeleteParams::default()).await;
    drop_finalizers(&ns.name, "dsb", "ok");
    let _ = scenario_runs.delete("scr", &DeleteParams::default()).await;
    drop_finalizers(&ns.name, "scr", "scr");
    ns.cleanup().await;
    emu.shutdown().await;
    outcome
}

/// Each rule of the chart's RBAC, removed in turn, must cost the operator something, and the cost
/// must come from the API server refusing that rule's requests: a variant that merely ran out of
/// time proves nothing. All variants run in one batch with a control variant holding every rule, so
/// they share the machine's load; the others get a grace period after the control succeeded.
#[tokio::test(flavor = "multi_thread")]
async fn every_rule_of_the_charts_rbac_is_needed() {
    let admin = harness::client().await;
    let rendered = helm_template(
        "kube-dss",
        &["watchNamespaces={team-a}", "leaderElection.enabled=true"],
    );
    let mut rules = Vec::new();
    for doc in rendered.split("\n---") {
        let Ok(value) = serde_yaml::from_str::<serde_json::Value>(doc) else {
            continue;
        };
        if value["kind"] == "Role" {
            let role: Role = serde_json::from_value(value).unwrap();
            for rule in role.rules.unwrap_or_default() {
                // The Lease rules pin the chart's Lease name; the variants use their own name.
                let mut rule = serde_json::to_value(rule).unwrap();
                if rule["resourceNames"].is_array() {
                    rule["resourceNames"] = json!(["kube-dss"]);
                }
                rules.push(rule);
            }
        }
    }
    // Ten rules for the watched namespace, two for the Lease.
    assert_eq!(rules.len(), 12, "the chart's rules changed: {rules:#?}");
    let (control_tx, control_rx) = tokio::sync::watch::channel(None);
    let control = {
        let (admin, rules, rx) = (admin.clone(), rules.clone(), control_rx.clone());
        async move {
            let outcome = run_variant(&admin, "all", rules, rx).await;
            let _ = control_tx.send(Some(std::time::Instant::now()));
            outcome
        }
    };
    let variants = (0..rules.len()).map(|i| {
        let mut without = rules.clone();
        without.remove(i);
        let (admin, rx) = (admin.clone(), control_rx.clone());
        async move { run_variant(&admin, &format!("rule{i}"), without, rx).await }
    });
    let (control, outcomes) = futures::future::join(control, futures::future::join_all(variants)).await;
    assert!(
        control.lost().is_empty() && control.denied.is_empty(),
        "the control variant with every rule did not do everything ({:?}; refused: {:?}): the batch \
         proves nothing about single rules (too slow a machine, or a broken operator)",
        control.lost(),
        control.denied
    );
    let mut report = String::new();
    let mut failures = Vec::new();
    for (rule, outcome) in rules.iter().zip(&outcomes) {
        let lost = outcome.lost();
        let verdict = match (lost.is_empty(), outcome.denied_by(rule)) {
            (true, _) => {
                failures.push("unneeded");
                "NOT NEEDED: nothing lost".to_string()
            }
            (false, true) => format!("needed: {} (the API server refused it)", lost.join(", ")),
            (false, false) => {
                failures.push("inconclusive");
                format!(
                    "INCONCLUSIVE: {} but no request of this rule was refused (timed out?); refused: {:?}",
                    lost.join(", "),
                    outcome.denied
                )
            }
        };
        report.push_str(&format!("without {rule}: {verdict}\n"));
    }
    println!("{report}");
    assert!(failures.is_empty(), "every rule must be proven needed:\n{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_replica_finishes_the_build_when_the_leader_is_killed() {
    let admin = harness::client().await;
    let ns = TestNs::new(&admin, "ha").await;
    let (emu, dss) = emulator().await;
    connection(&ns, &emu.base_url()).await;
    let le = |id: &str| -> Vec<String> {
        [
            "--leader-election",
            "--lease-namespace",
            &ns.name,
            "--lease-name",
            "kube-dss",
            "--lease-duration-seconds",
            "4",
            "--pod-name",
            id,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a_args = le("replica-a");
    let b_args = le("replica-b");
    let mut a = Operator::start(&ns.name, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    a.ready().await;
    let mut b = Operator::start(&ns.name, &b_args.iter().map(String::as_str).collect::<Vec<_>>());
    b.ready().await;
    build(&ns, "ha", json!({"outputs": [{"id": "medium"}]})).await;
    let builds: Api<DatasetBuild> = ns.api();
    wait_for(&builds, "ha", Duration::from_secs(60), |b| {
        phase(b) == Some(Phase::Running)
    })
    .await;
    let leases: Api<Lease> = ns.api();
    let holder = leases
        .get("kube-dss")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let (leader, follower) = if holder == "replica-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(follower.metrics().await.contains("kube_dss_leader 0"));
    leader.kill();
    wait_for(&builds, "ha", Duration::from_secs(60), |b| {
        phase(b) == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(
        dss.jobs().await.unwrap().len(),
        1,
        "never two jobs across a leader change"
    );
    let new_holder = leases
        .get("kube-dss")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert_ne!(new_holder, holder);
    assert!(follower.metrics().await.contains("kube_dss_leader 1"));
    drop(a);
    drop(b);
    ns.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kstatus_and_argo_cd_read_the_truth_from_real_builds() {
    let admin = harness::client().await;
    let ns = TestNs::new(&admin, "gitops").await;
    let (emu, _) = emulator().await;
    connection(&ns, &emu.base_url()).await;
    let op = Operator::start(&ns.name, &[]);
    op.ready().await;
    build(&ns, "ok", json!({"outputs": [{"id": "quick"}]})).await;
    build(&ns, "bad", json!({"outputs": [{"id": "broken"}]})).await;
    build(&ns, "running", json!({"outputs": [{"id": "slow"}]})).await;
    build(
        &ns,
        "suspended",
        json!({"outputs": [{"id": "quick"}], "suspend": true}),
    )
    .await;
    let builds: Api<DatasetBuild> = ns.api();
    for (name, p) in [
        ("ok", Phase::Succeeded),
        ("bad", Phase::Failed),
        ("running", Phase::Running),
        ("suspended", Phase::Suspended),
    ] {
        wait_for(&builds, name, Duration::from_secs(60), |b| phase(b) == Some(p)).await;
    }
    schedule(&ns, "yearly", json!({"schedule": "@yearly"})).await;
    schedule(&ns, "paused", json!({"schedule": "@yearly", "suspend": true})).await;
    schedule(
        &ns,
        "bad-zone",
        json!({"schedule": "@yearly", "timeZone": "Mars/Olympus"}),
    )
    .await;
    let schedules: Api<DatasetBuildSchedule> = ns.api();
    for name in ["yearly", "paused", "bad-zone"] {
        wait_for(&schedules, name, Duration::from_secs(30), |s| {
            s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
        })
        .await;
    }
    let conns: Api<DSSConnection> = ns.api();
    wait_for(&conns, "dss", Duration::from_secs(30), |c| c.status.is_some()).await;
    let dir = tempfile::tempdir().unwrap();
    for (kind, name) in [
        ("dsb", "ok"),
        ("dsb", "bad"),
        ("dsb", "running"),
        ("dsb", "suspended"),
        ("dssconn", "dss"),
        ("dsbs", "yearly"),
        ("dsbs", "paused"),
        ("dsbs", "bad-zone"),
    ] {
        let out = harness::kubectl(&["get", kind, name, "-n", &ns.name, "-o", "json"]);
        assert!(out.status.success());
        std::fs::write(dir.path().join(format!("{kind}-{name}.json")), out.stdout).unwrap();
    }
    std::fs::write(
        dir.path().join("expected.tsv"),
        "ok\tCurrent\tHealthy\nbad\tFailed\tDegraded\nrunning\tInProgress\tProgressing\nsuspended\tInProgress\tSuspended\ndss\tCurrent\tHealthy\n\
         yearly\tCurrent\tHealthy\npaused\tInProgress\tSuspended\nbad-zone\tFailed\tDegraded\n",
    )
    .unwrap();
    let out = std::process::Command::new(harness::repo().join("hack/gitops-check.sh"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GitOps health of real objects:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(op);
    ns.cleanup().await;
    emu.shutdown().await;
}
