//! End to end: ScenarioRuns through the operator binary against the real kube-apiserver and the DSS
//! emulator's scenario API. Fires and runs are counted in the emulator's own records.

// Fixture helpers outside #[test] functions fail loudly on set-up errors, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{Operator, TestNs, wait_for, wait_gone};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kube_dss::{
    crd::{Phase, ScenarioRun},
    dss::{ApiKey, ClientConfig, DssClient},
    emulator::{
        self, Config, Faults,
        admin::{AdminClient, ScenarioRecord},
    },
};
use serde_json::{Map, json};

const KEY: &str = "scenario-operator-key-7Hq2";
const USER_KEY: &str = "scenario-user-key-p01Z";

const EMULATOR: &str = r#"
instance: {maxRunningActivities: 50, scenarioStartDelayMs: 1500}
defaults: {durationMs: 400}
projects:
  - projectKey: PROJ
    datasets:
      - name: quick
        build: {durationMs: 400, log: ["building quick"]}
    scenarios:
      - id: OK
        name: Build quick
        steps:
          - {type: build, id: build, name: Build quick, outputs: [{id: quick}]}
      - id: BROKEN
        steps:
          - {type: wait, id: settle, durationMs: 200}
          - {type: fail, id: check, name: Check rows, message: "Check failed: 0 rows", code: ERR_CHECK}
      - id: WARNED
        steps:
          - {type: warn, id: soft, name: Soft check, message: "3 rows arrived late", durationMs: 200}
      - id: SLOW
        steps: [{type: wait, id: forever, durationMs: 3600000}]
      - id: SHARED
        steps: [{type: wait, id: forever, durationMs: 3600000}]
      - id: BUSY
        steps: [{type: wait, id: a_while, durationMs: 4000}]
apiKeys:
  - key: scenario-operator-key-7Hq2
    id: kube-dss-operator
    projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS, RUN_SCENARIOS]}
  - key: scenario-user-key-p01Z
    id: someone
    projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS, RUN_SCENARIOS]}
"#;

struct Fixture {
    ns: TestNs,
    emu: emulator::Handle,
    admin: AdminClient,
    op: Operator,
    runs: Api<ScenarioRun>,
}

/// The operator's flags: a short request timeout keeps the crash guard's grace (timeout + 10 s) short.
const OPERATOR_ARGS: &[&str] = &["--dss-request-timeout-seconds", "5"];

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let emu = emulator::spawn(
            Config::from_yaml(EMULATOR).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let admin = AdminClient::new(emu.admin_url());
        let client = harness::client().await;
        let ns = TestNs::new(&client, prefix).await;
        ns.secret("dss-api-key", "apiKey", KEY).await;
        ns.connection("dss", &emu.base_url(), Some((50, 8))).await;
        let op = Operator::start(&ns.name, OPERATOR_ARGS);
        op.ready().await;
        let runs = ns.api();
        Fixture {
            ns,
            emu,
            admin,
            op,
            runs,
        }
    }

    async fn create(&self, name: &str, spec: serde_json::Value) {
        let mut spec = spec;
        spec["connectionRef"] = json!({"name": "dss"});
        spec["projectKey"] = json!("PROJ");
        let run: ScenarioRun = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "ScenarioRun",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.runs.create(&PostParams::default(), &run).await.unwrap();
    }

    async fn wait_phase(&self, name: &str, phase: Phase, secs: u64) -> ScenarioRun {
        wait_for(&self.runs, name, Duration::from_secs(secs), |r: &ScenarioRun| {
            r.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// The emulator's record of a scenario: its fires and runs.
    async fn record(&self, scenario: &str) -> ScenarioRecord {
        self.admin.scenario("PROJ", scenario).await.unwrap()
    }

    /// A DSS client with another user's key, as someone running the scenario by hand.
    fn user(&self) -> DssClient {
        DssClient::new(ClientConfig::new(
            self.emu.base_url().parse().unwrap(),
            ApiKey::new(USER_KEY.to_string()),
        ))
        .unwrap()
    }

    /// Waits until the operator's `/metrics` series reads `want` (metrics follow the status write the
    /// test saw), and fails with what it reads otherwise.
    async fn wait_metric(&self, series: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.op.metric(series).await;
            if value == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} reads {value:?}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = self.ns.api();
        api.list(&ListParams::default()).await.unwrap().items
    }

    async fn cleanup(self) {
        assert!(
            !self.op.log_text().contains(KEY),
            "the API key leaked into the operator log"
        );
        let _ = self
            .runs
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        for r in self
            .runs
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            wait_gone(
                &self.runs,
                &r.metadata.name.unwrap_or_default(),
                Duration::from_secs(30),
            )
            .await;
        }
        drop(self.op);
        self.ns.cleanup().await;
        self.emu.shutdown().await;
    }
}

fn condition<'a>(
    r: &'a ScenarioRun,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    r.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// The fires of `record` made with the operator's key.
fn our_fires(record: &ScenarioRecord) -> usize {
    record
        .fires
        .iter()
        .filter(|f| f.api_key_id == "kube-dss-operator")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scenario_run_succeeds_and_kubectl_wait_returns() {
    let f = Fixture::new("scr-ok").await;
    f.create("ok", json!({"scenarioId": "OK", "params": {"day": "2026-12-01"}}))
        .await;
    let out = harness::kubectl(&[
        "wait",
        "--for=condition=Succeeded",
        "scr/ok",
        "-n",
        &f.ns.name,
        "--timeout=120s",
    ]);
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = f.runs.get("ok").await.unwrap();
    let s = r.status.clone().unwrap();
    assert_eq!(
        (s.phase, s.outcome.as_deref()),
        (Some(Phase::Succeeded), Some("SUCCESS"))
    );
    assert_eq!(condition(&r, "Ready").map(|c| c.status.as_str()), Some("True"));
    let record = f.record("OK").await;
    assert_eq!(record.runs.len(), 1, "one run");
    assert_eq!(s.run_id.as_deref(), Some(record.runs[0].run_id.as_str()));
    assert_eq!(
        s.trigger_run_id.as_deref(),
        Some(record.fires[0].trigger_run_id.as_str())
    );
    // The run carried the spec's parameters and the operator's request marker.
    let params = &record.runs[0].params;
    assert_eq!(params["day"], "2026-12-01");
    assert!(
        params["kube-dss.dev/request"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    // The steps are summarised with the jobs they ran.
    assert_eq!(s.steps.len(), 1);
    assert_eq!(s.steps[0].name, "Build quick");
    assert_eq!(s.steps[0].job_ids.len(), 1);
    let events: Vec<String> = f.events().await.into_iter().filter_map(|e| e.reason).collect();
    assert!(
        events.contains(&"ScenarioStarted".to_string()) && events.contains(&"ScenarioSucceeded".to_string())
    );
    // The operator's metrics: one run fired and finished well, none adopted.
    f.wait_metric(STARTED, 1.0).await;
    f.wait_metric(
        r#"kube_dss_scenario_run_duration_seconds_count{outcome="done"}"#,
        1.0,
    )
    .await;
    f.wait_metric(ADOPTED, 0.0).await;
    f.wait_metric(
        r#"kube_dss_scenario_run_duration_seconds_count{outcome="failed"}"#,
        0.0,
    )
    .await;
    f.cleanup().await;
}

const STARTED: &str = "kube_dss_scenario_runs_started_total";
const ADOPTED: &str = "kube_dss_scenario_runs_adopted_total";

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_explains_the_failure() {
    let f = Fixture::new("scr-fail").await;
    f.create("bad", json!({"scenarioId": "BROKEN"})).await;
    let r = f.wait_phase("bad", Phase::Failed, 120).await;
    let failure = r.status.clone().unwrap().failure.unwrap();
    assert_eq!(failure.reason, "ScenarioFailed");
    assert_eq!(
        failure.activity.as_deref(),
        Some("Check rows"),
        "the failing step"
    );
    assert!(
        failure
            .message
            .unwrap_or_default()
            .contains("Check failed: 0 rows")
    );
    // The tail of the failing step's own log, not of the whole run's.
    let tail = failure.log_tail.unwrap_or_default();
    assert!(
        tail.contains("Check failed: 0 rows") && tail.contains("Step 2/2 Check rows"),
        "{tail}"
    );
    assert!(!tail.contains("Step 1/2"), "only the failing step: {tail}");
    assert_eq!(
        condition(&r, "Stalled").map(|c| c.reason.as_str()),
        Some("ScenarioFailed")
    );
    f.wait_metric(
        r#"kube_dss_scenario_run_duration_seconds_count{outcome="failed"}"#,
        1.0,
    )
    .await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warning_outcome_succeeds_unless_fail_on_warnings() {
    let f = Fixture::new("scr-warn").await;
    f.create("lenient", json!({"scenarioId": "WARNED"})).await;
    let r = f.wait_phase("lenient", Phase::Succeeded, 120).await;
    let s = r.status.unwrap();
    assert_eq!(
        (s.outcome.as_deref(), s.warnings_count),
        (Some("WARNING"), Some(1))
    );
    f.create("strict", json!({"scenarioId": "WARNED", "failOnWarnings": true}))
        .await;
    let r = f.wait_phase("strict", Phase::Failed, 120).await;
    assert_eq!(r.status.unwrap().failure.unwrap().reason, "FailedWithWarnings");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_aborts_our_run_and_never_another_one() {
    let f = Fixture::new("scr-abort").await;
    // Ours: deleted while running, so its run is aborted.
    f.create("mine", json!({"scenarioId": "SLOW"})).await;
    f.wait_phase("mine", Phase::Running, 120).await;
    f.runs.delete("mine", &DeleteParams::default()).await.unwrap();
    wait_gone(&f.runs, "mine", Duration::from_secs(60)).await;
    let slow = f.record("SLOW").await;
    assert_eq!(slow.runs.len(), 1);
    assert_eq!(slow.runs[0].outcome.as_deref(), Some("ABORTED"));
    // Someone else's: the scenario runs by hand, our fire is cancelled, and deleting ours must leave
    // theirs running (DSS's abort would stop whatever run is current).
    f.user()
        .run_scenario("PROJ", "SHARED", &Map::new())
        .await
        .unwrap();
    wait_running(&f, "SHARED").await;
    f.create("late", json!({"scenarioId": "SHARED"})).await;
    // Deleted while its fire waits to start (DSS then cancels it): the abort must not reach the user's
    // run, which is the scenario's current one.
    f.wait_phase("late", Phase::Queued, 120).await;
    f.runs.delete("late", &DeleteParams::default()).await.unwrap();
    wait_gone(&f.runs, "late", Duration::from_secs(60)).await;
    assert!(
        f.record("SHARED")
            .await
            .fires
            .iter()
            .any(|x| x.state == "CANCELLED")
    );
    let shared = f.record("SHARED").await;
    assert_eq!(shared.runs.len(), 1, "only the user's run");
    assert!(
        shared.runs[0].outcome.is_none(),
        "the user's run goes on: {:?}",
        shared.runs[0]
    );
    f.cleanup().await;
}

/// Waits until a run of `scenario` is running in the emulator.
async fn wait_running(f: &Fixture, scenario: &str) {
    for _ in 0..200 {
        if f.record(scenario).await.runs.iter().any(|r| r.outcome.is_none()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no run of {scenario} started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_fire_has_its_reason_and_is_retried() {
    let f = Fixture::new("scr-cancel").await;
    f.user().run_scenario("PROJ", "BUSY", &Map::new()).await.unwrap();
    wait_running(&f, "BUSY").await;
    f.create(
        "retry",
        json!({"scenarioId": "BUSY", "retry": {"limit": 1, "backoffSeconds": 6}}),
    )
    .await;
    // The first fire is cancelled (the user's run is on): the failure names it, and a retry is due.
    wait_for(&f.runs, "retry", Duration::from_secs(60), |r: &ScenarioRun| {
        r.status.as_ref().is_some_and(|s| {
            s.failure.as_ref().is_some_and(|f| f.reason == "TriggerCancelled")
                && s.phase == Some(Phase::Pending)
        })
    })
    .await;
    // The retry fires once the user's run ended, and succeeds.
    let r = f.wait_phase("retry", Phase::Succeeded, 120).await;
    assert_eq!(r.status.unwrap().attempts, Some(2));
    let busy = f.record("BUSY").await;
    assert_eq!(our_fires(&busy), 2, "one fire cancelled, one retry");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_fire_response_is_found_by_its_marker_not_fired_twice() {
    let f = Fixture::new("scr-lost").await;
    f.admin
        .set_faults(&Faults {
            drop_run_responses: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    f.create("lost", json!({"scenarioId": "OK"})).await;
    let r = f.wait_phase("lost", Phase::Succeeded, 120).await;
    let record = f.record("OK").await;
    assert_eq!(our_fires(&record), 1, "the lost fire is adopted, not repeated");
    assert_eq!(
        r.status.unwrap().run_id.as_deref(),
        Some(record.runs[0].run_id.as_str())
    );
    assert!(
        f.events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("ScenarioAdopted"))
    );
    // Adopted, not counted as fired: its fire's answer never reached the operator.
    f.wait_metric(ADOPTED, 1.0).await;
    f.wait_metric(STARTED, 0.0).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_between_the_fire_and_its_record_fires_once() {
    let mut f = Fixture::new("scr-kill").await;
    f.admin
        .set_faults(&Faults {
            drop_run_responses: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    f.create("k", json!({"scenarioId": "OK"})).await;
    for _ in 0..200 {
        if !f.record("OK").await.fires.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.op.kill();
    let r = f.runs.get("k").await.unwrap();
    let s = r.status.unwrap();
    assert!(
        s.start_request.is_some() && s.trigger_run_id.is_none(),
        "the fire was never recorded: {s:?}"
    );
    f.op = Operator::start(&f.ns.name, OPERATOR_ARGS);
    f.op.ready().await;
    f.wait_phase("k", Phase::Succeeded, 120).await;
    assert_eq!(our_fires(&f.record("OK").await), 1);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_rerun_token_runs_exactly_once_more() {
    let f = Fixture::new("scr-rerun").await;
    f.create("r", json!({"scenarioId": "OK", "rerunToken": "a"}))
        .await;
    f.wait_phase("r", Phase::Succeeded, 120).await;
    f.runs
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rerunToken": "b"}})),
        )
        .await
        .unwrap();
    wait_for(&f.runs, "r", Duration::from_secs(120), |r: &ScenarioRun| {
        r.status.as_ref().is_some_and(|s| {
            s.last_handled_rerun_token.as_deref() == Some("b") && s.phase == Some(Phase::Succeeded)
        })
    })
    .await;
    // Settled: no further fire follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(our_fires(&f.record("OK").await), 2);
    assert_eq!(f.runs.get("r").await.unwrap().status.unwrap().history.len(), 1);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_fires_nothing_and_the_rerun_annotation_runs_exactly_once_more() {
    let f = Fixture::new("scr-controls").await;
    f.create("c", json!({"scenarioId": "OK", "suspend": true})).await;
    f.wait_phase("c", Phase::Suspended, 60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        our_fires(&f.record("OK").await),
        0,
        "a suspended ScenarioRun fires nothing"
    );
    f.runs
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    f.wait_phase("c", Phase::Succeeded, 120).await;
    assert_eq!(our_fires(&f.record("OK").await), 1, "resumed: one run");
    // The rerun annotation (what `kubectl dss rerun` and the Argo CD action stamp): one more run.
    let stamp = "2026-12-01T02:00:00Z";
    f.runs
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kube-dss.dev/rerun": stamp}}})),
        )
        .await
        .unwrap();
    let r = wait_for(&f.runs, "c", Duration::from_secs(120), |r: &ScenarioRun| {
        r.status.as_ref().is_some_and(|s| {
            s.last_handled_rerun_annotation.as_deref() == Some(stamp) && s.phase == Some(Phase::Succeeded)
        })
    })
    .await;
    // Settled: no further fire follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record = f.record("OK").await;
    assert_eq!(our_fires(&record), 2, "exactly one more run");
    assert_eq!(record.runs.len(), 2);
    let s = r.status.unwrap();
    assert_eq!(s.run_id.as_deref(), Some(record.runs[1].run_id.as_str()));
    assert_eq!(s.history.len(), 1, "the first run is in the history");
    f.wait_metric(STARTED, 2.0).await;
    f.wait_metric(
        r#"kube_dss_scenario_run_duration_seconds_count{outcome="done"}"#,
        2.0,
    )
    .await;
    f.cleanup().await;
}
