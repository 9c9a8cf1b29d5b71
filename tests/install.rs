//! Install and operate, proven against real parts: the operator runs with exactly the RBAC the Helm
//! chart renders (as its ServiceAccount, with a token from the TokenRequest API), every rule of that
//! RBAC is needed, a second replica takes over when the leader is killed, and the GitOps health of
//! objects the operator produced is what kstatus and Argo CD's Lua runtime say it is.

// Set-up helpers fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::{path::PathBuf, process::Stdio, time::Duration};

use harness::{Operator, TestNs, wait_for, wait_gone};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret, events::v1::Event, rbac::v1::Role};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use kube_dss::{
    crd::{DSSConnection, DatasetBuild, DatasetBuildSchedule, Phase},
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
apiKeys:
  - {key: install-key-3e4f5a6b, id: kube-dss-operator, projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}
"#;

async fn emulator() -> (emulator::Handle, AdminClient) {
    let emu = harness::emulator(EMULATOR).await;
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
    spec["connectionRef"] = json!({"name": "dss"});
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

/// The builds a schedule created.
async fn scheduled_builds(ns: &TestNs, schedule: &str) -> Vec<DatasetBuild> {
    let lp = ListParams::default().labels(&format!("kube-dss.dev/schedule={schedule}"));
    ns.api::<DatasetBuild>()
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
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
    let op = Operator::start_env(
        &watched.name,
        &[
            "--leader-election",
            "--lease-namespace",
            &release.name,
            "--lease-name",
            "kd-kube-dss",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    op.ready().await;
    build(&watched, "ok", json!({"outputs": [{"id": "quick"}]})).await;
    build(&watched, "bad", json!({"outputs": [{"id": "broken"}]})).await;
    build(&watched, "long", json!({"outputs": [{"id": "slow"}]})).await;
    schedule(&watched, "every-2s", json!({"concurrencyPolicy": "Allow"})).await;
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
    assert!(!op.log_text().contains(KEY), "the API key leaked into the log");
    let metrics = op.metrics().await;
    assert!(!metrics.contains(KEY), "the API key leaked into metrics");
    for series in [
        "kube_dss_builds{",
        "kube_dss_dss_requests_total{",
        "kube_dss_dss_request_duration_seconds_bucket{",
        "kube_dss_jobs_started_total",
        "kube_dss_job_duration_seconds_bucket{",
        "kube_dss_leader 1",
    ] {
        assert!(
            metrics.contains(series),
            "missing {series} in /metrics:\n{metrics}"
        );
    }
    drop(op);
    watched.cleanup().await;
    release.cleanup().await;
    emu.shutdown().await;
}

/// What one RBAC variant achieved.
#[derive(Debug, Default)]
struct Outcome {
    succeeded: bool,
    connection_status: bool,
    events: bool,
    scheduled: bool,
    schedule_status: bool,
}

async fn run_variant(admin: &Client, index: usize, rules: Vec<serde_json::Value>) -> Outcome {
    let ns = TestNs::new(admin, &format!("rbac-rule{index}")).await;
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
    let builds: Api<DatasetBuild> = ns.api();
    let mut outcome = Outcome::default();
    for _ in 0..100 {
        outcome.succeeded = builds
            .get("ok")
            .await
            .is_ok_and(|b| phase(&b) == Some(Phase::Succeeded));
        if outcome.succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Give events and the connection status a moment to land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let conns: Api<DSSConnection> = ns.api();
    outcome.connection_status = conns.get("dss").await.is_ok_and(|c| c.status.is_some());
    let events: Api<Event> = ns.api();
    outcome.events = events
        .list(&ListParams::default())
        .await
        .is_ok_and(|l| !l.items.is_empty());
    outcome.scheduled = !scheduled_builds(&ns, "every-2s").await.is_empty();
    let schedules: Api<DatasetBuildSchedule> = ns.api();
    outcome.schedule_status = schedules.get("every-2s").await.is_ok_and(|s| s.status.is_some());
    drop(op);
    let _ = schedules.delete("every-2s", &DeleteParams::default()).await;
    let _ = harness::kubectl(&[
        "patch",
        "dsbs",
        "every-2s",
        "-n",
        &ns.name,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    for b in scheduled_builds(&ns, "every-2s").await {
        let name = b.metadata.name.unwrap_or_default();
        let _ = builds.delete(&name, &DeleteParams::default()).await;
        let _ = harness::kubectl(&[
            "patch",
            "dsb",
            &name,
            "-n",
            &ns.name,
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
    let _ = builds.delete("ok", &DeleteParams::default()).await;
    // Without the finalizer rule the operator cannot release its finalizer: do it as the admin.
    let _ = harness::kubectl(&[
        "patch",
        "dsb",
        "ok",
        "-n",
        &ns.name,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    ns.cleanup().await;
    emu.shutdown().await;
    outcome
}

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
    assert!(
        rules.len() >= 7,
        "expected the operator and Lease rules, got {rules:?}"
    );
    let variants = (0..rules.len()).map(|i| {
        let mut without = rules.clone();
        without.remove(i);
        let admin = admin.clone();
        async move { run_variant(&admin, i, without).await }
    });
    let outcomes = futures::future::join_all(variants).await;
    let mut report = String::new();
    let mut unneeded = Vec::new();
    for (rule, outcome) in rules.iter().zip(&outcomes) {
        let lost: Vec<&str> = [
            (!outcome.succeeded, "builds never succeed"),
            (!outcome.connection_status, "DSSConnection status is not written"),
            (!outcome.events, "no events"),
            (!outcome.scheduled, "schedules create no build"),
            (
                !outcome.schedule_status,
                "DatasetBuildSchedule status is not written",
            ),
        ]
        .into_iter()
        .filter_map(|(lost, what)| lost.then_some(what))
        .collect();
        report.push_str(&format!(
            "without {}: {}\n",
            rule,
            if lost.is_empty() {
                "nothing lost".into()
            } else {
                lost.join(", ")
            }
        ));
        if lost.is_empty() {
            unneeded.push(rule.clone());
        }
    }
    println!("{report}");
    assert!(
        unneeded.is_empty(),
        "rules the operator does not need (least privilege):\n{report}"
    );
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
