//! End to end: the operator binary against the real kube-apiserver and the DSS emulator. Job counts
//! come from the emulator's own records.

// Fixture helpers outside #[test] functions fail loudly on set-up errors, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{Operator, TestNs, wait_for, wait_gone};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kube_dss::{
    crd::{DSSConnection, DatasetBuild, Phase},
    emulator::{
        self, Config, Faults,
        admin::{AdminClient, JobRecord, KeySpec},
    },
};
use serde_json::json;

const KEY: &str = "test-key-5f2b9c0d7e";

const EMULATOR: &str = r#"
instance: {maxRunningActivities: 50}
defaults: {durationMs: 1500}
projects:
  - projectKey: PROJ
    datasets:
      - name: quick
        build: {durationMs: 1500, log: ["building quick"]}
      - name: quick2
        build: {durationMs: 1500}
      - name: slow
        build: {durationMs: 600000}
      - name: broken
        build:
          durationMs: 1000
          outcome: FAILED
          message: "Job failed: boom in recipe"
          log: ["reading input", "ERROR: boom in recipe"]
      - name: warned
        build: {durationMs: 1000, warnings: 2}
apiKeys:
  - key: test-key-5f2b9c0d7e
    id: kube-dss-operator
    projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}
"#;

struct Fixture {
    ns: TestNs,
    emu: emulator::Handle,
    admin: AdminClient,
    op: Operator,
    builds: Api<DatasetBuild>,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        Self::with(prefix, EMULATOR, &[]).await
    }

    async fn with(prefix: &str, emulator_yaml: &str, operator_args: &[&str]) -> Fixture {
        let emu = emulator::spawn(
            Config::from_yaml(emulator_yaml).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let admin = AdminClient::new(emu.base_url());
        let client = harness::client().await;
        let ns = TestNs::new(&client, prefix).await;
        ns.secret("dss-api-key", "apiKey", KEY).await;
        ns.connection("dss", &emu.base_url(), Some((50, 8))).await;
        let op = Operator::start(&ns.name, operator_args);
        op.ready().await;
        let builds = ns.api();
        Fixture {
            ns,
            emu,
            admin,
            op,
            builds,
        }
    }

    async fn create(&self, name: &str, spec: serde_json::Value) -> DatasetBuild {
        let mut spec = spec;
        if spec.get("connectionRef").is_none() {
            spec["connectionRef"] = json!({"name": "dss"});
        }
        if spec.get("projectKey").is_none() {
            spec["projectKey"] = json!("PROJ");
        }
        let build: DatasetBuild = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.builds.create(&PostParams::default(), &build).await.unwrap()
    }

    async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.builds
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    async fn wait_phase(&self, name: &str, phase: Phase, secs: u64) -> DatasetBuild {
        wait_for(
            &self.builds,
            name,
            Duration::from_secs(secs),
            |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(phase),
        )
        .await
    }

    async fn jobs_of(&self, output: &str) -> Vec<JobRecord> {
        self.admin
            .jobs()
            .await
            .unwrap()
            .into_iter()
            .filter(|j| {
                j.def["outputs"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o.to_string().contains(output)))
            })
            .collect()
    }

    async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = self.ns.api();
        api.list(&ListParams::default()).await.unwrap().items
    }

    /// The API key must never show in logs or events.
    async fn assert_no_secret_leak(&self) {
        assert!(
            !self.op.log_text().contains(KEY),
            "the API key leaked into the operator log"
        );
        for e in self.events().await {
            assert!(
                !e.note.unwrap_or_default().contains(KEY),
                "the API key leaked into an event"
            );
        }
    }

    async fn cleanup(self) {
        self.assert_no_secret_leak().await;
        let _ = self
            .builds
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        for b in self
            .builds
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            wait_gone(&self.builds, &b.name_any(), Duration::from_secs(30)).await;
        }
        drop(self.op);
        self.ns.cleanup().await;
        self.emu.shutdown().await;
    }
}

fn condition<'a>(
    b: &'a DatasetBuild,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    b.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

#[tokio::test(flavor = "multi_thread")]
async fn build_succeeds_and_kubectl_wait_returns() {
    let f = Fixture::new("e2e-ok").await;
    f.create("ok", json!({"outputs": [{"id": "quick"}]})).await;
    let out = harness::kubectl(&[
        "wait",
        "--for=condition=Succeeded",
        "dsb/ok",
        "-n",
        &f.ns.name,
        "--timeout=60s",
    ]);
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = f.builds.get("ok").await.unwrap();
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(s.state.as_deref(), Some("DONE"));
    assert_eq!(s.observed_generation, b.metadata.generation);
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    assert_eq!(condition(&b, "Ready").unwrap().status, "True");
    assert!(condition(&b, "Reconciling").is_none() && condition(&b, "Stalled").is_none());
    let jobs = f.jobs_of("quick").await;
    assert_eq!(jobs.len(), 1, "exactly one DSS job per build");
    assert_eq!(Some(&jobs[0].id), s.job_id.as_ref());
    assert_eq!(b.finalizers(), ["kube-dss.dev/abort-job"]);
    let reasons: Vec<String> = f.events().await.into_iter().filter_map(|e| e.reason).collect();
    assert!(
        reasons.contains(&"JobStarted".into()) && reasons.contains(&"JobSucceeded".into()),
        "{reasons:?}"
    );
    // Terminal builds are not polled again: no DSS call for this job in a few seconds.
    let before = f.admin.stats().await.unwrap().requests_total;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = f.admin.stats().await.unwrap().requests_total;
    assert!(
        after - before <= 1,
        "terminal builds must not be polled ({} calls)",
        after - before
    );
    let metrics = f.op.metrics().await;
    assert!(
        metrics.contains("kube_dss_builds{phase=\"Succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kube_dss_dss_requests_total{operation=\"start_job\",status_class=\"2xx\"} 1"),
        "{metrics}"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_output_is_failed_and_stalled_with_the_log_tail() {
    let f = Fixture::new("e2e-fail").await;
    f.create("bad", json!({"outputs": [{"id": "broken"}]})).await;
    let b = f.wait_phase("bad", Phase::Failed, 60).await;
    let s = b.status.clone().unwrap();
    let failure = s.failure.unwrap();
    assert_eq!(failure.reason, "JobFailed");
    assert!(failure.log_tail.unwrap_or_default().contains("boom in recipe"));
    let stalled = condition(&b, "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "JobFailed")
    );
    assert_eq!(condition(&b, "Succeeded").unwrap().status, "False");
    let out = harness::kubectl(&[
        "wait",
        "--for=condition=Succeeded=False",
        "dsb/bad",
        "-n",
        &f.ns.name,
        "--timeout=10s",
    ]);
    assert!(out.status.success());
    let warned = f.events().await.into_iter().any(|e| {
        e.reason.as_deref() == Some("JobFailed") && e.note.unwrap_or_default().contains("boom in recipe")
    });
    assert!(warned, "a Warning event carries the log tail");
    assert_eq!(f.jobs_of("broken").await.len(), 1, "no retry without spec.retry");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_running_build_aborts_the_dss_job() {
    let f = Fixture::new("e2e-del").await;
    f.create("long", json!({"outputs": [{"id": "slow"}]})).await;
    f.wait_phase("long", Phase::Running, 60).await;
    f.builds.delete("long", &DeleteParams::default()).await.unwrap();
    wait_gone(&f.builds, "long", Duration::from_secs(60)).await;
    let jobs = f.jobs_of("slow").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, "ABORTED");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_policy_leaves_the_job_running() {
    let f = Fixture::new("e2e-orphan").await;
    f.create(
        "long",
        json!({"outputs": [{"id": "slow"}], "deletionPolicy": "Orphan"}),
    )
    .await;
    f.wait_phase("long", Phase::Running, 60).await;
    let calls_before = f.admin.stats().await.unwrap();
    f.builds.delete("long", &DeleteParams::default()).await.unwrap();
    wait_gone(&f.builds, "long", Duration::from_secs(30)).await;
    let jobs = f.jobs_of("slow").await;
    assert_eq!(jobs[0].state, "RUNNING", "Orphan leaves the DSS job alone");
    let aborts = f
        .admin
        .stats()
        .await
        .unwrap()
        .requests_by_route
        .get("POST /projects/{pk}/jobs/{id}/abort")
        .copied();
    assert_eq!(
        aborts,
        calls_before
            .requests_by_route
            .get("POST /projects/{pk}/jobs/{id}/abort")
            .copied()
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dss_outage_is_waited_out_without_a_hot_loop() {
    let f = Fixture::new("e2e-outage").await;
    f.admin
        .set_faults(&Faults {
            outage: true,
            ..Default::default()
        })
        .await
        .unwrap();
    f.create("ok", json!({"outputs": [{"id": "quick"}]})).await;
    let b = wait_for(&f.builds, "ok", Duration::from_secs(60), |b: &DatasetBuild| {
        condition(b, "Reconciling").is_some_and(|c| c.reason.starts_with("Dss"))
    })
    .await;
    assert_eq!(condition(&b, "Ready").unwrap().status, "False");
    let before = f.admin.stats().await.unwrap().requests_total;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = f.admin.stats().await.unwrap().requests_total - before;
    assert!(
        during <= 12,
        "{during} DSS calls in 8 s of outage: the operator must back off"
    );
    f.admin.clear_faults().await.unwrap();
    f.wait_phase("ok", Phase::Succeeded, 120).await;
    assert_eq!(f.jobs_of("quick").await.len(), 1);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_used_without_a_restart() {
    let f = Fixture::new("e2e-rotate").await;
    f.create("first", json!({"outputs": [{"id": "quick"}]})).await;
    f.wait_phase("first", Phase::Succeeded, 60).await;
    let new_key = "rotated-key-8c1d2e3f";
    let spec = KeySpec {
        key: new_key.into(),
        projects: [(
            "PROJ".to_string(),
            vec!["READ_CONF".into(), "RUN_JOBS".into(), "MONITOR_JOBS".into()],
        )]
        .into(),
        admin: false,
        groups: vec![],
    };
    f.admin.put_key("kube-dss-operator", &spec).await.unwrap();
    f.ns.secret("dss-api-key", "apiKey", new_key).await;
    f.create("second", json!({"outputs": [{"id": "quick2"}]})).await;
    f.wait_phase("second", Phase::Succeeded, 90).await;
    assert!(!f.op.log_text().contains(new_key));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_connection_or_secret_gives_a_clear_condition() {
    let f = Fixture::new("e2e-missing").await;
    f.create(
        "noconn",
        json!({"outputs": [{"id": "quick"}], "connectionRef": {"name": "nope"}}),
    )
    .await;
    let b = wait_for(
        &f.builds,
        "noconn",
        Duration::from_secs(30),
        |b: &DatasetBuild| condition(b, "Ready").is_some_and(|c| c.reason == "ConnectionNotFound"),
    )
    .await;
    assert!(condition(&b, "Ready").unwrap().message.contains("nope"));
    let conns: Api<DSSConnection> = f.ns.api();
    let conn: DSSConnection = serde_json::from_value(json!({
        "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DSSConnection", "metadata": {"name": "nosecret"},
        "spec": {"url": f.emu.base_url(), "apiKeySecretRef": {"name": "absent", "key": "apiKey"}}
    }))
    .unwrap();
    conns.create(&PostParams::default(), &conn).await.unwrap();
    wait_for(
        &conns,
        "nosecret",
        Duration::from_secs(30),
        |c: &DSSConnection| {
            c.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SecretNotFound"))
        },
    )
    .await;
    // A refused key and an unreachable DSS say so in the connection's Ready condition.
    f.ns.secret("wrong-key", "apiKey", "not-a-valid-key").await;
    let port = harness::free_port();
    for (name, url, secret) in [
        ("badkey", f.emu.base_url(), "wrong-key"),
        ("down", format!("http://127.0.0.1:{port}"), "dss-api-key"),
    ] {
        let conn: DSSConnection = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DSSConnection", "metadata": {"name": name},
            "spec": {"url": url, "apiKeySecretRef": {"name": secret, "key": "apiKey"}}
        }))
        .unwrap();
        conns.create(&PostParams::default(), &conn).await.unwrap();
    }
    for (name, reason) in [("badkey", "Unauthorized"), ("down", "Unreachable")] {
        wait_for(&conns, name, Duration::from_secs(30), |c: &DSSConnection| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
            })
        })
        .await;
    }
    wait_for(&conns, "dss", Duration::from_secs(30), |c: &DSSConnection| {
        c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    assert!(
        f.admin.jobs().await.unwrap().is_empty(),
        "nothing starts without a connection"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_rerun_token_starts_exactly_one_new_job() {
    let f = Fixture::new("e2e-rerun").await;
    f.create("r", json!({"outputs": [{"id": "quick"}], "rerunToken": "a"}))
        .await;
    f.wait_phase("r", Phase::Succeeded, 60).await;
    f.patch_spec("r", json!({"rerunToken": "b"})).await;
    let b = wait_for(&f.builds, "r", Duration::from_secs(60), |b: &DatasetBuild| {
        b.status.as_ref().is_some_and(|s| {
            s.last_handled_rerun_token.as_deref() == Some("b") && s.phase == Some(Phase::Succeeded)
        })
    })
    .await;
    assert_eq!(f.jobs_of("quick").await.len(), 2);
    assert_eq!(b.status.unwrap().history.len(), 1);
    // The rerun annotation does the same without editing the spec.
    f.builds
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kube-dss.dev/rerun": "1"}}})),
        )
        .await
        .unwrap();
    wait_for(&f.builds, "r", Duration::from_secs(60), |b: &DatasetBuild| {
        b.status.as_ref().is_some_and(|s| {
            s.last_handled_rerun_annotation.as_deref() == Some("1") && s.phase == Some(Phase::Succeeded)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.jobs_of("quick").await.len(), 3, "one job per run request");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_change_waits_or_aborts_per_on_spec_change() {
    let f = Fixture::new("e2e-change").await;
    // Wait: the running job continues; the new definition runs after it.
    f.create("w", json!({"outputs": [{"id": "slow"}]})).await;
    f.wait_phase("w", Phase::Running, 60).await;
    f.patch_spec("w", json!({"outputs": [{"id": "quick"}]})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        f.jobs_of("slow").await[0].state,
        "RUNNING",
        "Wait lets the active job run"
    );
    assert!(f.jobs_of("quick").await.is_empty());
    let slow = f.jobs_of("slow").await[0].id.clone();
    f.admin
        .finish("PROJ", &slow, emulator::admin::FinishState::Done)
        .await
        .unwrap();
    wait_for(&f.builds, "w", Duration::from_secs(60), |b: &DatasetBuild| {
        b.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Succeeded) && s.history.len() == 1)
    })
    .await;
    assert_eq!(f.jobs_of("quick").await.len(), 1);

    // Abort: the running job is aborted and the new definition starts.
    f.create("a", json!({"outputs": [{"id": "slow"}], "onSpecChange": "Abort"}))
        .await;
    f.wait_phase("a", Phase::Running, 60).await;
    f.patch_spec("a", json!({"outputs": [{"id": "quick2"}]})).await;
    f.wait_phase("a", Phase::Succeeded, 60).await;
    let slow_jobs = f.jobs_of("slow").await;
    assert!(slow_jobs.iter().any(|j| j.state == "ABORTED"));
    assert_eq!(f.jobs_of("quick2").await.len(), 1);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_starts_nothing_until_resumed() {
    let f = Fixture::new("e2e-suspend").await;
    f.create("s", json!({"outputs": [{"id": "quick"}], "suspend": true}))
        .await;
    f.wait_phase("s", Phase::Suspended, 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        f.admin.jobs().await.unwrap().is_empty(),
        "a suspended build starts no job"
    );
    f.patch_spec("s", json!({"suspend": false})).await;
    f.wait_phase("s", Phase::Succeeded, 60).await;
    assert_eq!(f.jobs_of("quick").await.len(), 1);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deadlines_abort_with_deadline_exceeded() {
    let f = Fixture::with(
        "e2e-deadline",
        &EMULATOR.replace("maxRunningActivities: 50", "maxRunningActivities: 1"),
        &[],
    )
    .await;
    f.create(
        "active",
        json!({"outputs": [{"id": "slow"}], "activeDeadlineSeconds": 3}),
    )
    .await;
    let b = f.wait_phase("active", Phase::Failed, 60).await;
    assert_eq!(b.status.unwrap().failure.unwrap().reason, "DeadlineExceeded");
    // The only activity slot is taken, so this job stays NOT_STARTED past its start deadline.
    f.create("blocker", json!({"outputs": [{"id": "slow"}], "rerunToken": "x"}))
        .await;
    f.wait_phase("blocker", Phase::Running, 60).await;
    f.create(
        "queued",
        json!({"outputs": [{"id": "quick"}], "startDeadlineSeconds": 3}),
    )
    .await;
    let b = f.wait_phase("queued", Phase::Failed, 60).await;
    assert_eq!(condition(&b, "Stalled").unwrap().reason, "DeadlineExceeded");
    let quick = f.jobs_of("quick").await;
    assert_eq!(quick.len(), 1);
    assert_eq!(quick[0].state, "ABORTED");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_abort_annotation_aborts_a_queued_job_and_only_it() {
    let f = Fixture::with(
        "e2e-abort-queued",
        &EMULATOR.replace("maxRunningActivities: 50", "maxRunningActivities: 1"),
        &[],
    )
    .await;
    // The only activity slot is taken, so the next job waits in NOT_STARTED.
    f.create("blocker", json!({"outputs": [{"id": "slow"}]})).await;
    f.wait_phase("blocker", Phase::Running, 60).await;
    f.create("queued", json!({"outputs": [{"id": "quick"}]})).await;
    let queued = f.wait_phase("queued", Phase::Queued, 60).await;
    let job = queued.status.unwrap().job_id.unwrap();
    assert_eq!(f.jobs_of("quick").await[0].state, "NOT_STARTED");
    let stamp = "2026-12-01T02:00:00Z";
    f.builds
        .patch(
            "queued",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kube-dss.dev/abort": stamp}}})),
        )
        .await
        .unwrap();
    let b = f.wait_phase("queued", Phase::Aborted, 60).await;
    assert_eq!(
        condition(&b, "Stalled").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "AbortRequested"))
    );
    let s = b.status.unwrap();
    assert_eq!(s.failure.map(|f| f.reason.as_str()), Some("AbortRequested"));
    assert_eq!(s.last_handled_abort_annotation.as_deref(), Some(stamp));
    assert_eq!(s.job_id.as_deref(), Some(job.as_str()));
    let quick = f.jobs_of("quick").await;
    assert_eq!(quick.len(), 1, "no job started after the abort");
    assert_eq!(
        (quick[0].id.as_str(), quick[0].state.as_str()),
        (job.as_str(), "ABORTED")
    );
    // The build is kept, and the other job runs on.
    assert!(f.builds.get_opt("queued").await.unwrap().is_some());
    assert_eq!(f.jobs_of("slow").await[0].state, "RUNNING");
    assert!(
        f.events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("AbortRequested"))
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_stop_at_the_limit_and_warnings_fail_when_asked() {
    let f = Fixture::new("e2e-retry").await;
    f.create(
        "r",
        json!({"outputs": [{"id": "broken"}], "retry": {"limit": 2, "backoffSeconds": 1}}),
    )
    .await;
    wait_for(&f.builds, "r", Duration::from_secs(90), |b: &DatasetBuild| {
        b.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Failed) && s.attempts == Some(3))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        f.jobs_of("broken").await.len(),
        3,
        "1 job + 2 retries, then no more"
    );

    f.create(
        "w",
        json!({"outputs": [{"id": "warned"}], "failOnWarnings": true}),
    )
    .await;
    let b = f.wait_phase("w", Phase::Failed, 60).await;
    assert_eq!(b.status.unwrap().failure.unwrap().reason, "FailedWithWarnings");
    f.create("w2", json!({"outputs": [{"id": "warned"}], "rerunToken": "2"}))
        .await;
    let b = f.wait_phase("w2", Phase::Succeeded, 60).await;
    assert_eq!(b.status.unwrap().warnings_count, Some(2));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_start_response_is_adopted_not_started_twice() {
    let f = Fixture::new("e2e-lost").await;
    f.admin
        .set_faults(&Faults {
            drop_start_responses: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    f.create("l", json!({"outputs": [{"id": "quick"}]})).await;
    let b = f.wait_phase("l", Phase::Succeeded, 120).await;
    let jobs = f.jobs_of("quick").await;
    assert_eq!(jobs.len(), 1, "the lost start must be adopted, not repeated");
    assert_eq!(b.status.unwrap().job_id.as_ref(), Some(&jobs[0].id));
    assert!(
        f.events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("JobAdopted"))
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_between_start_and_status_write_starts_no_second_job() {
    let mut f = Fixture::new("e2e-kill").await;
    // The start is accepted but its answer never arrives; the operator is SIGKILLed right after.
    f.admin
        .set_faults(&Faults {
            drop_start_responses: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    f.create("k", json!({"outputs": [{"id": "quick"}]})).await;
    // Kill as soon as the start was sent and its answer dropped: the operator waits the crash
    // guard's grace (15 s here) before it could learn the job id by a search.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while f.admin.faults().await.unwrap().drop_start_responses != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator sent no start in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.op.kill();
    // The scenario happened: DSS created exactly one job, whose answer was dropped, and the
    // operator recorded its start request but no job id.
    let stats = f.admin.stats().await.unwrap();
    assert_eq!(stats.faults_injected.dropped_start_responses, 1);
    assert_eq!(stats.jobs_started, 1, "one job in DSS at kill time");
    let at_kill = f.jobs_of("quick").await;
    assert_eq!(at_kill.len(), 1, "one job in DSS at kill time: {at_kill:?}");
    let s = f.builds.get("k").await.unwrap().status.unwrap();
    assert!(
        s.start_request.is_some() && s.job_id.is_none(),
        "killed between the start and the status write: {s:?}"
    );
    f.op = Operator::start(&f.ns.name, &[]);
    f.op.ready().await;
    let b = f.wait_phase("k", Phase::Succeeded, 120).await;
    let jobs = f.jobs_of("quick").await;
    assert_eq!(jobs.len(), 1, "no second job: {jobs:?}");
    assert_eq!(b.status.unwrap().job_id.as_ref(), Some(&at_kill[0].id));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_racing_operators_start_one_job_per_build() {
    let f = Fixture::new("e2e-race").await;
    let second = Operator::start(&f.ns.name, &[]);
    second.ready().await;
    for i in 0..6 {
        f.create(
            &format!("b{i}"),
            json!({"outputs": [{"id": "quick"}], "rerunToken": format!("{i}")}),
        )
        .await;
    }
    for i in 0..6 {
        f.wait_phase(&format!("b{i}"), Phase::Succeeded, 120).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        f.jobs_of("quick").await.len(),
        6,
        "exactly one job per build with two operators"
    );
    drop(second);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_definition_is_not_retried_and_polls_write_nothing() {
    let f = Fixture::new("e2e-reject").await;
    f.create("nosuch", json!({"outputs": [{"id": "no_such_dataset"}]}))
        .await;
    let b = f.wait_phase("nosuch", Phase::Failed, 30).await;
    assert_eq!(b.status.unwrap().failure.unwrap().reason, "StartRejected");
    let starts = |s: &emulator::Stats| {
        s.requests_by_route
            .get("POST /projects/{pk}/jobs/")
            .copied()
            .unwrap_or(0)
    };
    let stats = f.admin.stats().await.unwrap();
    assert_eq!(
        starts(&stats),
        1,
        "the definition is sent once: {:?}",
        stats.requests_by_route
    );
    assert_eq!(stats.jobs_started, 0, "DSS created no job for it");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        starts(&f.admin.stats().await.unwrap()),
        1,
        "a rejected definition is not sent again"
    );

    // A running job is polled, but its status is written only when something changes.
    f.create("long", json!({"outputs": [{"id": "slow"}]})).await;
    let running = f.wait_phase("long", Phase::Running, 60).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = f.builds.get("long").await.unwrap();
    assert_eq!(
        later.resource_version(),
        running.resource_version(),
        "no status write per poll"
    );
    f.cleanup().await;
}

/// Statuses seen per build: distinct resourceVersions, whether it ever waited for its turn, and the
/// start requests recorded before a job id.
#[derive(Default, Debug)]
struct Seen {
    versions: std::collections::BTreeSet<String>,
    queued: bool,
    recorded: std::collections::BTreeSet<String>,
}

/// Builds that wait for a place at the connection's start gate record their start request once and
/// send it when their turn comes: at most five writes each (finalizer, Starting, Queued, Running,
/// Succeeded), one job each; a queued build deleted or suspended before its turn sends nothing.
/// Without leader election a request that waited longer than a few seconds is recorded again before
/// it is sent.
async fn queued_starts(prefix: &str, elected: bool) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::{collections::HashMap, sync::Arc};

    let lease_ns = format!("{prefix}-lease");
    // Start calls may take 8 s (see the faults below) without timing out.
    let mut args: Vec<&str> = vec!["--dss-request-timeout-seconds", "20"];
    if elected {
        args.extend([
            "--leader-election",
            "--lease-name",
            &lease_ns,
            "--lease-duration-seconds",
            "6",
        ]);
    }
    let f = Fixture::with(prefix, EMULATOR, &args).await;
    // One start at a time (maxInFlight 1), each held 8 s by DSS: the others queue at the gate.
    f.ns.connection("narrow", &f.emu.base_url(), Some((50, 1))).await;
    f.admin
        .set_faults(&Faults {
            latency_ms: 8000,
            routes: vec!["POST /projects/{pk}/jobs/".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    let seen: Arc<std::sync::Mutex<HashMap<String, Seen>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let stream = watcher(f.builds.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(b)) = stream.next().await {
                let queued = b.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Reconciling" && c.reason == "StartQueued")
                });
                let recorded = b
                    .status
                    .as_ref()
                    .filter(|s| s.job_id.is_none())
                    .and_then(|s| s.start_request.as_ref())
                    .map(|r| r.requested_at.0.to_string());
                let mut seen = seen.lock().unwrap();
                let entry = seen.entry(b.name_any()).or_default();
                entry.versions.insert(b.resource_version().unwrap_or_default());
                entry.queued |= queued;
                entry.recorded.extend(recorded);
            }
        })
    };
    let queued = |name: &str| seen.lock().unwrap().get(name).is_some_and(|s| s.queued);
    let narrow = |output: &str, token: &str| json!({"connectionRef": {"name": "narrow"}, "outputs": [{"id": output}], "rerunToken": token});

    // The first build takes the gate: its start request is recorded (Starting) and in flight.
    f.create("holder", narrow("quick", "h")).await;
    wait_for(
        &f.builds,
        "holder",
        Duration::from_secs(30),
        |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Starting),
    )
    .await;
    // While the holder's start is in flight, two more builds queue. Deleted or suspended before
    // their turn, they never send their requests.
    f.create("victim", narrow("warned", "v")).await;
    f.create("paused", narrow("quick2", "p")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(queued("victim") && queued("paused")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "victim or paused never queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.builds.delete("victim", &DeleteParams::default()).await.unwrap();
    f.patch_spec("paused", json!({"suspend": true})).await;
    wait_gone(&f.builds, "victim", Duration::from_secs(10)).await;
    let paused = f.wait_phase("paused", Phase::Suspended, 10).await;
    assert!(
        paused.status.unwrap().start_request.is_none(),
        "the request is withdrawn"
    );
    for name in ["q1", "q2", "q3"] {
        f.create(name, narrow("quick", name)).await;
    }

    for name in ["holder", "q1", "q2", "q3"] {
        f.wait_phase(name, Phase::Succeeded, 120).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch.abort();
    assert_eq!(f.jobs_of("quick").await.len(), 4, "one job per build");
    assert_eq!(
        f.jobs_of("warned").await.len(),
        0,
        "the deleted build sent nothing"
    );
    assert_eq!(
        f.jobs_of("quick2").await.len(),
        0,
        "the suspended build sent nothing"
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let writes = |name: &str| seen.get(name).map_or(0, |s| s.versions.len()) - 1;
    // One start at a time: at least two of the three waited for their turn.
    let waited = ["q1", "q2", "q3"]
        .iter()
        .filter(|n| seen.get(**n).is_some_and(|s| s.queued))
        .count();
    assert!(waited >= 2, "builds that waited for their turn: {seen:?}");
    let records = |name: &str| seen.get(name).map_or(0, |s| s.recorded.len());
    if elected {
        for name in ["holder", "q1", "q2", "q3"] {
            assert!(writes(name) <= 5, "{name}: {} writes: {seen:?}", writes(name));
            assert_eq!(records(name), 1, "{name} recorded its start once: {seen:?}");
        }
    } else {
        // The three queued starts wait about 8, 16 and 24 s: recorded again before they are sent.
        assert!(
            ["q1", "q2", "q3"].iter().any(|n| records(n) >= 2),
            "a start queued past the window is recorded again: {seen:?}"
        );
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_starts_are_recorded_once_under_leader_election() {
    queued_starts("e2e-queue-le", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_starts_without_leader_election_are_recorded_again_when_old() {
    queued_starts("e2e-queue", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_event_patches_its_series_on_the_apiserver() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{EventType, Reporter};
    use kube_dss::controller::events::Recorder;

    let client = harness::client().await;
    let ns = TestNs::new(&client, "events").await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kube-dss".into(),
            instance: Some("kube-dss-test".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("kube-dss.dev/v1alpha1".into()),
        kind: Some("DatasetBuild".into()),
        namespace: Some(ns.name.clone()),
        name: Some("b".into()),
        uid: Some("6f1d2c3b-0000-4000-8000-000000000001".into()),
        resource_version: Some("1".into()),
        field_path: None,
    };
    let started = |note: &str| {
        recorder.publish(
            &reference,
            EventType::Normal,
            "JobStarted",
            "StartJob",
            note.to_string(),
        )
    };
    started("job one").await.unwrap();
    started("job one").await.unwrap();
    started("job one").await.unwrap();
    recorder
        .publish(
            &reference,
            EventType::Warning,
            "JobFailed",
            "Poll",
            "job one failed".into(),
        )
        .await
        .unwrap();

    let api: Api<Event> = ns.api();
    let mut events = api.list(&ListParams::default()).await.unwrap().items;
    events.sort_by_key(|e| e.reason.clone());
    assert_eq!(events.len(), 2, "one Event per distinct event: {events:?}");
    let failed = &events[0];
    assert_eq!(failed.reason.as_deref(), Some("JobFailed"));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert!(failed.series.is_none());
    let started = &events[1];
    assert_eq!(started.reason.as_deref(), Some("JobStarted"));
    assert_eq!(started.action.as_deref(), Some("StartJob"));
    assert_eq!(started.type_.as_deref(), Some("Normal"));
    assert_eq!(started.note.as_deref(), Some("job one"));
    assert_eq!(started.regarding.as_ref(), Some(&reference));
    assert_eq!(started.reporting_controller.as_deref(), Some("kube-dss"));
    assert_eq!(started.reporting_instance.as_deref(), Some("kube-dss-test"));
    assert!(started.event_time.is_some());
    assert_eq!(
        started.series.as_ref().map(|s| s.count),
        Some(3),
        "two repeats patched the series"
    );
    assert!(started.name_any().starts_with("b."));
    ns.cleanup().await;
}

/// Deleting the API-key Secret revokes the key at once: a build created right after it starts no
/// job and says why; the Secret back, it runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_api_key_secret_starts_no_new_job() {
    let f = Fixture::new("e2e-revoked").await;
    f.create("before", json!({"outputs": [{"id": "quick"}]})).await;
    f.wait_phase("before", Phase::Succeeded, 60).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = f.ns.api();
    secrets
        .delete("dss-api-key", &DeleteParams::default())
        .await
        .unwrap();
    f.create("after", json!({"outputs": [{"id": "quick2"}]})).await;
    let b = wait_for(&f.builds, "after", Duration::from_secs(30), |b: &DatasetBuild| {
        condition(b, "Reconciling").is_some_and(|c| c.reason == "SecretNotFound")
    })
    .await;
    assert!(
        condition(&b, "Reconciling").is_some_and(|c| c.message.contains("dss-api-key")),
        "the condition names the missing Secret: {:?}",
        b.status
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        f.jobs_of("quick2").await.len(),
        0,
        "no job is started with a revoked key"
    );
    assert_eq!(
        f.admin.stats().await.unwrap().jobs_started,
        1,
        "only the first build's job exists"
    );
    f.ns.secret("dss-api-key", "apiKey", KEY).await;
    f.wait_phase("after", Phase::Succeeded, 90).await;
    assert_eq!(f.jobs_of("quick2").await.len(), 1, "the Secret back, one job");
    f.cleanup().await;
}

/// One DSS that stops answering (every call hangs) while 80 builds run on it delays nothing on a
/// healthy DSS: budget waits are bounded, a hung call holds only its own connection's in-flight
/// places, and each connection's listing runs on its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_dss_delays_no_build_on_another_connection() {
    let f = Fixture::new("e2e-hung").await;
    let hung = emulator::spawn(
        Config::from_yaml(&EMULATOR.replace("maxRunningActivities: 50", "maxRunningActivities: 100"))
            .unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let hung_admin = AdminClient::new(hung.base_url());
    f.ns.connection("hung", &hung.base_url(), Some((50, 8))).await;
    for i in 0..80 {
        let spec = json!({"connectionRef": {"name": "hung"}, "outputs": [{"id": "slow", "partition": format!("p{i}")}]});
        f.create(&format!("hung-{i}"), spec).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let running = f
            .builds
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running))
            .count();
        if running == 80 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{running}/80 running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The hung DSS accepts every call and never answers.
    hung_admin
        .set_faults(&Faults {
            hang: true,
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = tokio::time::Instant::now();
    f.create("healthy", json!({"outputs": [{"id": "quick"}]})).await;
    f.wait_phase("healthy", Phase::Succeeded, 60).await;
    let took = t.elapsed();
    // Its job takes 1.5 s; before the fix it took more than 90 s.
    assert!(
        took < Duration::from_secs(20),
        "a build on a healthy DSS took {took:?} while another DSS hung"
    );
    let hung_builds = f
        .builds
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| b.name_any().starts_with("hung-"))
        .count();
    assert_eq!(hung_builds, 80, "the builds of the hung DSS wait, none is lost");
    hung_admin.set_faults(&Faults::default()).await.unwrap();
    // Delete the slow builds without waiting for their aborts on the formerly hung DSS.
    for i in 0..80 {
        let name = format!("hung-{i}");
        let _ = f
            .builds
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"deletionPolicy": "Orphan"}})),
            )
            .await;
    }
    f.cleanup().await;
    hung.shutdown().await;
}

/// The last line of the failing dataset's log below, the error that explains the failure.
const FINAL_ERROR: &str = "ValueError: column 'amount' is missing from dataset orders_clean";

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_log_with_long_lines_keeps_its_final_error_and_never_the_key() {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    // Long lines of several KiB each, then the key and its Basic form echoed (with no credential
    // marker around them, so only removing the key itself hides them), then the failure.
    let long = |i: usize| format!("reading chunk {i}: {}", "amount=12.50;region=EMEA;".repeat(240));
    let yaml = format!(
        r#"
instance: {{maxRunningActivities: 50}}
projects:
  - projectKey: PROJ
    datasets:
      - name: orders_clean
        build:
          durationMs: 1000
          outcome: FAILED
          message: "{FINAL_ERROR}"
          log: ["{}", "{}", "{}", "retrying with api key {KEY} against the upstream", "upstream refused credentials Basic {basic} again"]
apiKeys:
  - key: {KEY}
    id: kube-dss-operator
    projects: {{PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}
"#,
        long(1),
        long(2),
        long(3)
    );
    assert!(long(1).len() > 5000);
    let f = Fixture::with("e2e-longlog", &yaml, &[]).await;
    f.create("orders", json!({"outputs": [{"id": "orders_clean"}]}))
        .await;
    let b = f.wait_phase("orders", Phase::Failed, 60).await;
    let status = b.status.clone().unwrap();
    let failure = status.failure.clone().unwrap();
    let tail = failure.log_tail.clone().unwrap();
    assert!(tail.len() <= 4096, "{} bytes", tail.len());
    assert!(
        tail.ends_with(FINAL_ERROR),
        "the tail keeps the log's end: {tail}"
    );
    assert!(
        tail.starts_with('…'),
        "the long lines were cut from the front: {tail}"
    );
    assert!(
        tail.contains("retrying with api key *** against") && tail.contains("credentials Basic *** again"),
        "the echoed key and Basic form are in the tail, removed: {tail}"
    );
    let job = status.job_id.clone().unwrap();
    let activity = failure.activity.clone().unwrap();
    assert_eq!(
        failure.message.as_deref(),
        Some(format!("DSS job {job} failed in activity {activity}: {FINAL_ERROR}").as_str()),
        "the message is the last error line"
    );
    let failed: Vec<String> = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("JobFailed"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let note = &failed[0];
    assert!(note.len() <= 1024, "{} bytes", note.len());
    assert!(
        note.starts_with(failure.message.as_deref().unwrap()),
        "the note starts with the message: {note}"
    );
    assert!(
        note.ends_with(FINAL_ERROR),
        "the note keeps the end of the tail: {note}"
    );
    // Neither form of the key anywhere: status, events, operator log.
    let written = serde_json::to_string(&status).unwrap();
    let notes: Vec<String> = f.events().await.into_iter().filter_map(|e| e.note).collect();
    for secret in [KEY, basic.as_str()] {
        assert!(!written.contains(secret), "{secret} in the status: {written}");
        assert!(!notes.iter().any(|n| n.contains(secret)), "{secret} in an event");
        assert!(!f.op.log_text().contains(secret), "{secret} in the operator log");
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_the_policy_refuses_are_not_ready_and_their_builds_wait_saying_why() {
    let f = Fixture::with(
        "e2e-policy",
        EMULATOR,
        &["--require-https", "--refuse-insecure-connections"],
    )
    .await;
    let conns: Api<DSSConnection> = f.ns.api();
    let port = harness::free_port();
    for (name, tls) in [
        ("skipping", json!({"insecureSkipVerify": true})),
        ("verified", json!({})),
    ] {
        let conn: DSSConnection = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DSSConnection", "metadata": {"name": name},
            "spec": {"url": format!("https://127.0.0.1:{port}"), "tls": tls,
                     "apiKeySecretRef": {"name": "dss-api-key", "key": "apiKey"}}
        }))
        .unwrap();
        conns.create(&PostParams::default(), &conn).await.unwrap();
    }
    let ready_reason = |name: &'static str, reason: &'static str| {
        let conns = conns.clone();
        async move {
            let c = wait_for(&conns, name, Duration::from_secs(30), |c: &DSSConnection| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
                })
            })
            .await;
            let status = c.status.unwrap();
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .message
        }
    };
    // The fixture's connection is the emulator's http:// URL.
    let message = ready_reason("dss", "HttpsRequired").await;
    assert!(
        message.contains("--require-https") && message.contains("https://"),
        "{message}"
    );
    let message = ready_reason("skipping", "InsecureConnectionRefused").await;
    assert!(
        message.contains("--refuse-insecure-connections") && message.contains("insecureSkipVerify"),
        "{message}"
    );
    // A verified https connection is not refused: it is tried (and DSS is not there).
    ready_reason("verified", "Unreachable").await;

    f.create("plain", json!({"outputs": [{"id": "quick"}]})).await;
    let b = wait_for(&f.builds, "plain", Duration::from_secs(30), |b: &DatasetBuild| {
        condition(b, "Reconciling").is_some_and(|c| c.reason == "HttpsRequired")
    })
    .await;
    let reconciling = condition(&b, "Reconciling").unwrap();
    assert_eq!(reconciling.status, "True");
    assert!(
        reconciling.message.contains("--require-https"),
        "{}",
        reconciling.message
    );
    assert_eq!(condition(&b, "Ready").unwrap().status, "False");
    assert!(b.status.as_ref().unwrap().job_id.is_none());
    let warned = f.events().await.into_iter().any(|e| {
        e.reason.as_deref() == Some("ConnectionFailed")
            && e.note.as_deref().is_some_and(|n| n.contains("--require-https"))
    });
    assert!(warned, "a Warning event says why the connection is refused");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        f.admin.jobs().await.unwrap().is_empty(),
        "nothing is sent over a refused connection"
    );
    assert_eq!(
        f.admin.stats().await.unwrap().requests_total,
        0,
        "not even a check call"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_about_an_object_with_a_253_character_name_is_accepted() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{EventType, Reporter};
    use kube_dss::controller::events::Recorder;

    let client = harness::client().await;
    let ns = TestNs::new(&client, "events-long").await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kube-dss".into(),
            instance: Some("kube-dss-test".into()),
        },
    );
    let name = format!("{}-{}", "a".repeat(240), "b".repeat(12));
    assert_eq!(name.len(), 253);
    let reference = ObjectReference {
        api_version: Some("kube-dss.dev/v1alpha1".into()),
        kind: Some("DatasetBuild".into()),
        namespace: Some(ns.name.clone()),
        name: Some(name.clone()),
        uid: Some("6f1d2c3b-0000-4000-8000-000000000002".into()),
        resource_version: Some("1".into()),
        field_path: None,
    };
    recorder
        .publish(
            &reference,
            EventType::Normal,
            "JobStarted",
            "StartJob",
            "job one".into(),
        )
        .await
        .expect("the apiserver accepts the Event");
    let api: Api<Event> = ns.api();
    let events = api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(events.len(), 1);
    let event_name = events[0].name_any();
    assert!(event_name.len() <= 253, "{event_name}");
    assert!(event_name.starts_with(&name[..200]), "{event_name}");
    assert_eq!(
        events[0].regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some(name.as_str())
    );
    ns.cleanup().await;
}

/// A gateway in front of DSS answering a bare HTML 404 for a few seconds (nginx while it reloads)
/// is DSS trouble that passes, never DSS saying the job is gone: the running build still succeeds
/// with its one job, the running-jobs listing comes back by itself, and a deletion in such a window
/// keeps its finalizer until the abort went through.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_404_window_fails_nothing_and_releases_no_finalizer() {
    let yaml = EMULATOR.replace(
        "name: quick2\n        build: {durationMs: 1500}",
        "name: quick2\n        build: {durationMs: 8000}",
    );
    let f = Fixture::with("e2e-gw404", &yaml, &[]).await;
    let routes = vec![
        "GET /projects/{pk}/jobs/{id}/".to_string(),
        "GET /jobs/running/".to_string(),
        "GET /projects/{pk}/jobs/running/".to_string(),
        "POST /projects/{pk}/jobs/{id}/abort".to_string(),
    ];
    let window = |ms: u64| Faults {
        gateway: Some(emulator::GatewayFault {
            window_ms: ms,
            routes: routes.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A running job meets a 5 s window of 404s on its status, the listings and abort.
    f.create("runs", json!({"outputs": [{"id": "quick2"}]})).await;
    f.wait_phase("runs", Phase::Running, 30).await;
    f.admin.set_faults(&window(5000)).await.unwrap();
    let b = f.wait_phase("runs", Phase::Succeeded, 60).await;
    let injected = f.admin.stats().await.unwrap().faults_injected;
    assert!(
        injected.gateway > 0,
        "the window answered some calls: {injected:?}"
    );
    assert_eq!(f.jobs_of("quick2").await.len(), 1, "one job");
    assert!(b.status.unwrap().failure.is_none());
    // The listing came back by itself: a new build is watched by it again.
    let listings = |s: &emulator::admin::Stats| {
        s.requests_by_route
            .get("GET /jobs/running/")
            .copied()
            .unwrap_or(0)
    };
    let before = listings(&f.admin.stats().await.unwrap());
    f.create("after", json!({"outputs": [{"id": "quick"}]})).await;
    f.wait_phase("after", Phase::Succeeded, 60).await;
    assert!(
        listings(&f.admin.stats().await.unwrap()) > before,
        "the running-jobs listing is asked again after the window"
    );

    // Deleted during a window: the finalizer holds until DSS itself confirms the abort.
    f.create("deleted", json!({"outputs": [{"id": "slow"}]})).await;
    f.wait_phase("deleted", Phase::Running, 30).await;
    f.admin.set_faults(&window(6000)).await.unwrap();
    f.builds
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = f.builds.get("deleted").await.unwrap();
    assert_eq!(
        held.finalizers(),
        ["kube-dss.dev/abort-job"],
        "no finalizer released on a gateway's answer"
    );
    wait_gone(&f.builds, "deleted", Duration::from_secs(60)).await;
    let slow = f.jobs_of("slow").await;
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].state, "ABORTED", "the job was aborted before the release");
    f.cleanup().await;
}
