//! `kubectl dss` end to end: the real kubectl finds the kube-dss binary on PATH under the name
//! `kubectl-dss` and runs it as its plugin, with the kubeconfig of a user whose RBAC allows only what
//! the commands need, against the real apiserver, a running operator and the DSS emulator.

// Set-up helpers fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use harness::{Operator, TestNs, wait_for};
use kube::api::PostParams;
use kube_dss::{
    crd::{DatasetBuild, Phase},
    emulator::admin::AdminClient,
};
use serde_json::json;

const KEY: &str = "plugin-key-91c0d2e4";
const EMULATOR: &str = r#"
projects:
  - projectKey: PROJ
    datasets:
      - name: quick
        build: {durationMs: 1000, log: ["building quick", "wrote 42 rows"]}
      - name: slow
        build: {durationMs: 600000}
apiKeys:
  - {key: plugin-key-91c0d2e4, id: kube-dss-operator, projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}
"#;

/// A user (a ServiceAccount) with exactly the permissions `kubectl dss` needs, or those without
/// reading Secrets.
fn user(ns: &str, name: &str, secrets: bool) -> PathBuf {
    let mut rules = vec![
        json!({"apiGroups": ["kube-dss.dev"], "resources": ["datasetbuilds"], "verbs": ["get", "patch"]}),
        json!({"apiGroups": ["kube-dss.dev"], "resources": ["dssconnections"], "verbs": ["get"]}),
        json!({"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}),
    ];
    if secrets {
        rules.push(json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["dss-api-key"], "verbs": ["get"]}));
    }
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": ns}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
    ]});
    let file = harness::repo().join(format!("target/test-logs/plugin-user-{ns}-{name}.json"));
    std::fs::write(&file, objects.to_string()).unwrap();
    let out = harness::kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    harness::sa_kubeconfig(ns, name)
}

/// A directory holding `kubectl-dss`, a symlink to the kube-dss binary: what the README's install does.
fn plugin_dir() -> PathBuf {
    let dir = harness::repo().join(format!("target/test-logs/plugin-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("kubectl-dss");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kube-dss"), &link).unwrap();
    dir
}

/// `kubectl dss ARGS` as the user of `kubeconfig`, found by kubectl through PATH.
fn kubectl_dss(plugins: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(harness::tools_bin().join("kubectl"))
        .arg("dss")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_dss_status_logs_rerun_and_abort_with_the_users_rbac() {
    let emu = harness::emulator(EMULATOR).await;
    let admin = AdminClient::new(emu.base_url());
    let client = harness::client().await;
    let ns = TestNs::new(&client, "e2e-plugin").await;
    ns.secret("dss-api-key", "apiKey", KEY).await;
    ns.connection("dss", &emu.base_url(), None).await;
    let op = Operator::start(&ns.name, &[]);
    op.ready().await;
    let analyst = user(&ns.name, "analyst", true);
    let viewer = user(&ns.name, "viewer", false);
    let plugins = plugin_dir();
    let dss = |kubeconfig: &Path, args: &[&str]| text(&kubectl_dss(&plugins, kubeconfig, args));

    let builds = ns.api::<DatasetBuild>();
    for (name, output) in [("ok", "quick"), ("long", "slow")] {
        let build: DatasetBuild = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
            "metadata": {"name": name},
            "spec": {"connectionRef": {"name": "dss"}, "projectKey": "PROJ", "outputs": [{"id": output}]},
        }))
        .unwrap();
        builds.create(&PostParams::default(), &build).await.unwrap();
    }
    let phase = |p: Phase| move |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(p);
    let done = wait_for(&builds, "ok", Duration::from_secs(120), phase(Phase::Succeeded)).await;
    let job = done.status.as_ref().unwrap().job_id.clone().unwrap();
    wait_for(&builds, "long", Duration::from_secs(120), phase(Phase::Running)).await;

    // status: one screen, the namespace from the kubeconfig's context.
    let (code, out, err) = dss(&analyst, &["status", "ok"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("$ kubectl dss status ok\n{out}");
    let page = format!(
        "{}/projects/PROJ/jobs/{job}/",
        emu.base_url().trim_end_matches('/')
    );
    for want in [
        format!("DatasetBuild: {}/ok", ns.name),
        "Phase:        Succeeded (DSS state DONE)".to_owned(),
        format!("Job:          {job} (attempt 1)"),
        format!("DSS job page: {page}"),
        "Ready=True (Authenticated)".to_owned(),
        "Outputs:      project PROJ: quick (DATASET, NP)".to_owned(),
        "Succeeded  True".to_owned(),
        "Normal  JobSucceeded".to_owned(),
    ] {
        assert!(out.contains(&want), "status lacks {want:?}:\n{out}");
    }

    // logs: the DSS log, read with the connection's key, which the user may read.
    let (code, out, err) = dss(&analyst, &["logs", "ok", "-n", &ns.name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("building quick") && out.contains("wrote 42 rows"),
        "{out}"
    );
    let (code, out, err) = dss(&analyst, &["logs", "ok", "--activity", "compute_quick_NP"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("building quick"), "activity log: {out}");
    let (code, _, err) = dss(&analyst, &["logs", "ok", "--activity", "compute_other_NP"]);
    assert_eq!(
        (code, err.contains("does not exist")),
        (4, true),
        "an unknown activity: {err}"
    );
    // Without get on the Secret, logs is refused by the apiserver, and status still works.
    let (code, _, err) = dss(&viewer, &["logs", "ok"]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("forbidden by your RBAC") && err.contains("secret"),
        "{err}"
    );
    assert!(!err.contains(KEY), "the key leaked: {err}");
    assert_eq!(dss(&viewer, &["status", "ok"]).0, 0);

    // rerun: refused while a job runs; accepted after a finished one, and the operator starts one job.
    let (code, _, err) = dss(&analyst, &["rerun", "long"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the last run has not finished (phase Running)"),
        "{err}"
    );
    let (code, out, err) = dss(&analyst, &["rerun", "ok"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("$ kubectl dss rerun ok\n{out}");
    let stamped = builds.get("ok").await.unwrap().metadata.annotations.unwrap()["kube-dss.dev/rerun"].clone();
    assert!(out.contains(&format!("kube-dss.dev/rerun={stamped}")), "{out}");
    let rerun = wait_for(&builds, "ok", Duration::from_secs(120), |b: &DatasetBuild| {
        b.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::Succeeded)
                && s.last_handled_rerun_annotation.as_deref() == Some(stamped.as_str())
        })
    })
    .await;
    assert_ne!(rerun.status.unwrap().job_id.unwrap(), job, "a new job ran");
    let jobs: Vec<_> = admin
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.def["outputs"].to_string().contains("quick"))
        .collect();
    assert_eq!(jobs.len(), 2, "one job for the build, one for the rerun");

    // abort: refused without an active job; stamped on a running one, and not twice.
    let (code, _, err) = dss(&analyst, &["abort", "ok"]);
    assert_eq!(
        (
            code,
            err.contains("no DSS job is queued or running (phase Succeeded)")
        ),
        (1, true),
        "{err}"
    );
    let (code, out, err) = dss(&analyst, &["abort", "long"]);
    assert_eq!(code, 0, "{out}{err}");
    let value = builds.get("long").await.unwrap().metadata.annotations.unwrap()["kube-dss.dev/abort"].clone();
    assert!(out.contains(&format!("kube-dss.dev/abort={value}")), "{out}");
    // A second abort is refused: the first is pending, being carried out, or (once handled) no job is
    // active any more.
    let (code, _, err) = dss(&analyst, &["abort", "long"]);
    assert_eq!(code, 1, "a second abort: {err}");
    assert!(
        err.contains("an abort is already requested")
            || err.contains("the operator is already aborting the job")
            || err.contains("no DSS job is queued or running"),
        "{err}"
    );
    // The operator aborts the job once, and the build ends Aborted with reason AbortRequested.
    let aborted = wait_for(&builds, "long", Duration::from_secs(60), |b| {
        b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Aborted)
    })
    .await;
    let stalled = aborted
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
        .map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(
        stalled,
        Some(("True".to_owned(), "AbortRequested".to_owned())),
        "Stalled says why"
    );
    let status = aborted.status.unwrap();
    assert_eq!(status.failure.map(|f| f.reason.as_str()), Some("AbortRequested"));
    assert_eq!(
        status.last_handled_abort_annotation.as_deref(),
        Some(value.as_str())
    );
    let long_jobs: Vec<_> = admin
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.def["outputs"].to_string().contains("slow"))
        .collect();
    assert_eq!(long_jobs.len(), 1, "no job started after the abort");
    assert_eq!(long_jobs[0].state, "ABORTED");

    // Errors say what is wrong.
    let (code, _, err) = dss(&analyst, &["status", "missing"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("missing") && err.contains("not found"), "{err}");
    let (code, _, _) = dss(&analyst, &["rerun"]);
    assert_eq!(code, 64, "a usage error");

    drop(op);
    ns.cleanup().await;
    emu.shutdown().await;
}
