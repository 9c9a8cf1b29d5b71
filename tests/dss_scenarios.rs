//! The scenario calls of `DssClient` and `ScenarioWaiter`: against the emulator for behaviour (fires,
//! runs, steps and their jobs, cancellation, abort, a lost run answer found by its marker, errors),
//! and against the recording test server (`tests/support`) for the exact wire forms and hostile
//! answers.

// Test code: a failed unwrap is a failed test (helpers included).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use kube_dss::{
    dss::{
        ApiKey, ApiPrefix, ClientConfig, DssClient, Error, Limits, Operation, Outcome, RequestObserver,
        ScenarioOutcome, ScenarioWait, ScenarioWaiter, log_tail,
    },
    emulator::{self, Config, Faults, admin::AdminClient},
};
use serde_json::{Map, Value, json};
use support::{Fault, KEY, TestDss};

const EMULATOR_KEY: &str = "client-scenario-key";
const P: &str = "P";

fn emulator_config() -> Config {
    Config::from_yaml(&format!(
        r#"
instance: {{scenarioStartDelayMs: 30}}
defaults: {{durationMs: 40}}
projects:
  - projectKey: P
    datasets:
      - {{name: clean}}
      - {{name: noisy, build: {{warnings: 3}}}}
      - {{name: scored, build: {{outcome: FAILED, message: "Job failed: KeyError 'segment'", log: ["reading clean", "ERROR: KeyError: 'segment'"]}}}}
      - {{name: slow, build: {{durationMs: 3600000}}}}
    scenarios:
      - id: DAILY
        name: Daily
        steps:
          - {{type: build, id: build_clean, name: Build clean, outputs: [{{id: clean}}]}}
          - {{type: wait, id: settle, durationMs: 20}}
      - id: NOISY
        steps: [{{type: build, id: noisy, outputs: [{{id: noisy}}]}}]
      - id: SCORE
        steps:
          - {{type: build, id: build_clean, outputs: [{{id: clean}}]}}
          - {{type: build, id: score, name: Score, outputs: [{{id: scored}}]}}
          - {{type: wait, id: never, durationMs: 10}}
      - id: LONG
        steps: [{{type: build, id: forever, outputs: [{{id: slow}}]}}]
apiKeys:
  - {{key: {EMULATOR_KEY}, id: operator, projects: {{P: [READ_CONF, RUN_SCENARIOS, MONITOR_JOBS]}}}}
  - {{key: reader-key, id: reader, projects: {{P: [READ_CONF]}}}}
"#
    ))
    .unwrap()
}

struct Env {
    emulator: emulator::Handle,
    client: DssClient,
    admin: AdminClient,
}

fn client_for(base: &str, key: &str) -> DssClient {
    let mut config = ClientConfig::new(url::Url::parse(base).unwrap(), ApiKey::from(key));
    config.request_timeout = Duration::from_secs(5);
    config.limits = Limits::new(1000.0, 16);
    DssClient::new(config).unwrap()
}

async fn env() -> Env {
    let emulator = emulator::spawn(emulator_config(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = client_for(&emulator.base_url(), EMULATOR_KEY);
    let admin = AdminClient::new(emulator.admin_url());
    Env {
        emulator,
        client,
        admin,
    }
}

fn params(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect()
}

/// A waiter that polls fast (the emulator's steps take tens of milliseconds).
fn waiter() -> ScenarioWaiter {
    ScenarioWaiter::new()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_timeout(Some(Duration::from_secs(20)))
}

async fn finished(env: &Env, scenario: &str, with: Map<String, Value>) -> kube_dss::dss::ScenarioRunDetails {
    let fire = env.client.run_scenario(P, scenario, &with).await.unwrap();
    match waiter()
        .wait_for_fire(&env.client, P, scenario, &fire)
        .await
        .unwrap()
    {
        ScenarioWait::Finished(details) => details,
        other => panic!("{scenario}: {other:?}"),
    }
}

#[tokio::test]
async fn a_run_goes_from_fire_to_run_with_its_steps_and_their_jobs() {
    let env = env().await;
    let fire = env
        .client
        .run_scenario(P, "DAILY", &params(&[("kube-dss/request", "uid-1")]))
        .await
        .unwrap();
    assert_eq!(fire.trigger_id, "manual");
    assert!(!fire.cancelled);
    // Before the start delay the fire has no run.
    assert_eq!(
        env.client
            .get_run_for_trigger(P, "DAILY", &fire.trigger_id, &fire.trigger_run_id)
            .await
            .unwrap(),
        None
    );
    let ScenarioWait::Finished(details) = waiter()
        .wait_for_fire(&env.client, P, "DAILY", &fire)
        .await
        .unwrap()
    else {
        panic!("not finished")
    };
    let run = &details.run;
    assert_eq!(run.outcome, Some(ScenarioOutcome::Success));
    assert_ne!(run.run_id, fire.trigger_run_id);
    assert_eq!(run.trigger_run_id.as_deref(), Some(fire.trigger_run_id.as_str()));
    assert_eq!(run.trigger_id.as_deref(), Some("manual"));
    assert!(run.has_param("kube-dss/request", "uid-1"));
    assert_eq!(
        (run.project_key.as_deref(), run.scenario_id.as_deref()),
        (Some(P), Some("DAILY"))
    );
    assert!(run.start.is_some() && run.end >= run.start);
    let names: Vec<_> = details
        .steps
        .iter()
        .map(|s| (s.step_id.as_deref(), s.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (Some("build_clean"), Some("Build clean")),
            (Some("settle"), Some("settle"))
        ]
    );
    assert_eq!(details.steps[0].job_ids.len(), 1);
    assert!(details.failing_step().is_none());
    // The step's job is a real DSS job.
    let job = env
        .client
        .get_status(P, &details.steps[0].job_ids[0])
        .await
        .unwrap();
    assert_eq!(job.state.as_str(), "DONE");
    // The same run, by id, in the listings, and by the fire.
    let again = env
        .client
        .get_scenario_run(P, "DAILY", &run.run_id)
        .await
        .unwrap();
    assert_eq!(again.run.run_id, run.run_id);
    let last = env
        .client
        .get_last_scenario_runs(P, "DAILY", 5, true)
        .await
        .unwrap();
    assert_eq!(last[0].run_id, run.run_id);
    let by_fire = env
        .client
        .get_run_for_trigger(P, "DAILY", &fire.trigger_id, &fire.trigger_run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_fire.run_id, run.run_id);
    let day = run.start.unwrap().date_naive();
    let by_date = env
        .client
        .get_scenario_runs_by_date(P, "DAILY", day, day.succ_opt().unwrap())
        .await
        .unwrap();
    assert_eq!(by_date.len(), 1);
    let list = env.client.list_scenarios(P).await.unwrap();
    assert_eq!(
        list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["DAILY", "NOISY", "SCORE", "LONG"]
    );
    assert_eq!(list[0].name.as_deref(), Some("Daily"));
    let status = env.client.get_scenario_status(P, "DAILY").await.unwrap();
    assert!(!status.running && status.next_run.is_none());
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn a_failed_run_names_its_failing_step_and_that_steps_log_tail_says_why() {
    let env = env().await;
    let details = finished(&env, "SCORE", Map::new()).await;
    assert_eq!(details.run.outcome, Some(ScenarioOutcome::Failed));
    let outcomes: Vec<_> = details.steps.iter().map(|s| s.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        [Some(ScenarioOutcome::Success), Some(ScenarioOutcome::Failed)]
    );
    let failing = details.failing_step().unwrap();
    assert_eq!(failing.step_id.as_deref(), Some("score"));
    assert_eq!(failing.name.as_deref(), Some("Score"));
    assert_eq!(failing.job_ids.len(), 1);
    let message = failing.thrown.as_ref().and_then(|t| t.text()).unwrap();
    assert!(message.ends_with("Job failed: KeyError 'segment'"), "{message}");
    let log = env
        .client
        .get_scenario_run_log(P, "SCORE", &details.run.run_id, failing.step_id.as_deref())
        .await
        .unwrap();
    let tail = log_tail(&log, 3, 4096);
    assert!(tail.contains("failed: Job failed: KeyError 'segment'"), "{tail}");
    assert!(tail.lines().count() <= 3);
    let whole = env
        .client
        .get_scenario_run_log(P, "SCORE", &details.run.run_id, None)
        .await
        .unwrap();
    assert!(whole.contains("build_clean") && whole.contains("started by trigger"));

    let noisy = finished(&env, "NOISY", Map::new()).await;
    assert_eq!(noisy.run.outcome, Some(ScenarioOutcome::Warning));
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn a_fire_while_running_is_cancelled_and_abort_stops_the_current_run() {
    let env = env().await;
    let first = env
        .client
        .run_scenario(P, "LONG", &params(&[("who", "a")]))
        .await
        .unwrap();
    let run = loop {
        if let Some(run) = env
            .client
            .get_run_for_trigger(P, "LONG", &first.trigger_id, &first.trigger_run_id)
            .await
            .unwrap()
        {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(run.is_running());
    assert!(env.client.get_scenario_status(P, "LONG").await.unwrap().running);
    let second = env
        .client
        .run_scenario(P, "LONG", &params(&[("who", "b")]))
        .await
        .unwrap();
    // The waiter re-reads the fire (here on every poll) and reports the cancellation.
    let waited = waiter()
        .with_fire_refresh_every(1)
        .wait_for_fire(&env.client, P, "LONG", &second)
        .await
        .unwrap();
    let ScenarioWait::Cancelled(fire) = waited else {
        panic!("{waited:?}")
    };
    assert!(fire.cancelled);
    assert_eq!(fire.trigger_run_id, second.trigger_run_id);
    assert!(
        env.client
            .get_trigger_fire(P, "LONG", &second.trigger_id, &second.trigger_run_id)
            .await
            .unwrap()
            .cancelled
    );
    // A wait that times out reports the run as last seen.
    let timed_out = waiter()
        .with_timeout(Some(Duration::from_millis(100)))
        .wait_for_run(&env.client, P, "LONG", &run.run_id)
        .await
        .unwrap();
    assert!(
        matches!(&timed_out, ScenarioWait::TimedOut(Some(r)) if r.run_id == run.run_id),
        "{timed_out:?}"
    );
    // Abort: the current run, whoever started it.
    env.client.abort_scenario(P, "LONG").await.unwrap();
    let details = env.client.get_scenario_run(P, "LONG", &run.run_id).await.unwrap();
    assert_eq!(details.run.outcome, Some(ScenarioOutcome::Aborted));
    let job = env
        .client
        .get_status(P, &details.steps[0].job_ids[0])
        .await
        .unwrap();
    assert_eq!(job.state.as_str(), "ABORTED");
    // Nothing running: abort does nothing and is no error.
    env.client.abort_scenario(P, "LONG").await.unwrap();
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn a_lost_run_answer_is_not_retried_and_its_run_is_found_by_its_marker() {
    let env = env().await;
    env.admin
        .set_faults(&Faults {
            drop_run_responses: 1,
            ..Faults::default()
        })
        .await
        .unwrap();
    let marker = params(&[("kube-dss/request", "uid-lost")]);
    let lost = env.client.run_scenario(P, "DAILY", &marker).await.unwrap_err();
    assert!(
        matches!(
            lost,
            Error::Transport {
                operation: Operation::RunScenario,
                ..
            }
        ),
        "{lost:?}"
    );
    assert!(
        lost.is_retryable(),
        "retryable for the caller, never retried by the client"
    );
    assert_eq!(env.admin.stats().await.unwrap().trigger_fires, 1, "sent once");
    // The fire happened: its run shows up in the last runs, found by the marker.
    let ours = loop {
        let runs = env
            .client
            .get_last_scenario_runs(P, "DAILY", 10, false)
            .await
            .unwrap();
        if let Some(run) = runs
            .into_iter()
            .find(|r| r.has_param("kube-dss/request", "uid-lost"))
        {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ScenarioWait::Finished(done) = waiter()
        .wait_for_run(&env.client, P, "DAILY", &ours.run_id)
        .await
        .unwrap()
    else {
        panic!("not finished")
    };
    assert_eq!(done.run.outcome, Some(ScenarioOutcome::Success));
    // Another run with another marker: the search tells them apart.
    finished(&env, "DAILY", params(&[("kube-dss/request", "uid-other")])).await;
    let runs = env
        .client
        .get_last_scenario_runs(P, "DAILY", 10, false)
        .await
        .unwrap();
    let ours: Vec<_> = runs
        .iter()
        .filter(|r| r.has_param("kube-dss/request", "uid-lost"))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(runs.len(), 2);
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn errors_keep_their_status_and_error_type() {
    let env = env().await;
    let missing = env.client.get_scenario_status(P, "NOPE").await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert!(missing.is_not_found());
    assert_eq!(missing.operation(), Some(Operation::GetScenarioStatus));
    assert!(matches!(&missing, Error::Api { error_type: Some(t), .. } if t.ends_with("NotFoundException")));
    assert!(
        missing.to_string().contains("Scenario P.NOPE does not exist"),
        "{missing}"
    );
    let reader = client_for(&env.emulator.base_url(), "reader-key");
    let forbidden = reader.run_scenario(P, "DAILY", &Map::new()).await.unwrap_err();
    assert_eq!(
        (forbidden.status(), forbidden.category()),
        (Some(403), "DssUnauthorized")
    );
    assert!(forbidden.to_string().contains("RUN_SCENARIOS"), "{forbidden}");
    assert!(reader.get_last_scenario_runs(P, "DAILY", 1, false).await.is_ok());
    let no_run = env
        .client
        .get_scenario_run(P, "DAILY", "2020-01-01-00-00-00-000")
        .await
        .unwrap_err();
    assert!(no_run.is_not_found());
    let no_fire = env
        .client
        .get_run_for_trigger(P, "DAILY", "manual", "nope")
        .await
        .unwrap_err();
    assert!(no_fire.is_not_found());
    // Identifiers are path segments: `..` is refused before sending, `/` is encoded.
    let dots = env.client.get_scenario_status(P, "..").await.unwrap_err();
    assert!(matches!(dots, Error::InvalidArgument { .. }));
    assert!(
        env.client
            .get_scenario_status(P, "A/B")
            .await
            .unwrap_err()
            .is_not_found()
    );
    env.emulator.shutdown().await;
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(Operation, Outcome)>>);

impl RequestObserver for Recorder {
    fn observe(&self, operation: Operation, outcome: Outcome, _elapsed: Duration) {
        self.0.lock().unwrap().push((operation, outcome));
    }
}

fn ok(body: Value) -> Fault {
    Fault::status(200, &body.to_string())
}

fn test_client(server: &TestDss, prefix: ApiPrefix) -> DssClient {
    let mut config = ClientConfig::new(server.url(), ApiKey::from(KEY));
    config.request_timeout = Duration::from_secs(5);
    config.limits = Limits::new(1000.0, 16);
    config.prefix = prefix;
    DssClient::new(config).unwrap()
}

#[tokio::test]
async fn every_scenario_path_matches_the_python_client() {
    let server = support::spawn().await;
    let recorder = Arc::new(Recorder::default());
    let client = test_client(&server, ApiPrefix::DipPublicApi).with_observer(recorder.clone());
    let run = json!({"runId": "R1", "trigger": {"trigger": {"id": "manual"}, "runId": "T1", "params": {}}, "start": 1, "end": 0});
    for answer in [
        json!([]),
        json!({"trigger": {"id": "manual"}, "runId": "T1", "cancelled": false}),
        json!({"trigger": {"id": "manual"}, "runId": "T1", "cancelled": false}),
        json!({}),
        json!([run.clone()]),
        json!([]),
        json!({"scenarioRun": run.clone(), "stepRuns": []}),
        json!({"running": false}),
        json!({"aborted": false}),
    ] {
        server.push_fault(ok(answer));
    }
    server.push_fault(Fault::status(200, "the log"));
    let day = chrono::NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    client.list_scenarios("PK").await.unwrap();
    client
        .run_scenario("PK", "SC", &params(&[("k", "v")]))
        .await
        .unwrap();
    client
        .get_trigger_fire("PK", "SC", "manual", "T 1")
        .await
        .unwrap();
    client
        .get_run_for_trigger("PK", "SC", "manual", "T1")
        .await
        .unwrap();
    client
        .get_last_scenario_runs("PK", "SC", 10, false)
        .await
        .unwrap();
    client
        .get_scenario_runs_by_date("PK", "SC", day, day.succ_opt().unwrap())
        .await
        .unwrap();
    client.get_scenario_run("PK", "SC", "R1").await.unwrap();
    client.get_scenario_status("PK", "SC").await.unwrap();
    client.abort_scenario("PK", "SC").await.unwrap();
    assert_eq!(
        client
            .get_scenario_run_log("PK", "SC", "R1", Some("step_1"))
            .await
            .unwrap(),
        "the log"
    );
    let requests = server.requests();
    let seen: Vec<String> = requests
        .iter()
        .map(|r| {
            format!(
                "{} {}{}",
                r.method,
                r.path,
                r.query.as_ref().map(|q| format!("?{q}")).unwrap_or_default()
            )
        })
        .collect();
    let p = "/dip/publicapi/projects/PK/scenarios";
    assert_eq!(
        seen,
        [
            format!("GET {p}/"),
            format!("POST {p}/SC/run"),
            format!("GET {p}/trigger/SC/manual?triggerRunId=T+1"),
            format!("GET {p}/SC/get-run-for-trigger?triggerId=manual&triggerRunId=T1"),
            format!("GET {p}/SC/get-last-runs?limit=10&onlyFinishedRuns=False"),
            format!("GET {p}/SC/get-runs-by-date?fromDate=2024-05-01&toDate=2024-05-02"),
            format!("GET {p}/SC/R1/"),
            format!("GET {p}/SC/light"),
            format!("POST {p}/SC/abort"),
            format!("GET {p}/SC/R1/log?stepId=step_1"),
        ]
    );
    // The run's body is the parameters, as JSON; abort has none.
    assert_eq!(
        serde_json::from_slice::<Value>(&requests[1].body).unwrap(),
        json!({"k": "v"})
    );
    assert_eq!(requests[1].headers["content-type"], "application/json");
    assert!(requests[8].body.is_empty());
    let ops: Vec<Operation> = recorder.0.lock().unwrap().iter().map(|(op, _)| *op).collect();
    assert_eq!(
        ops,
        [
            Operation::ListScenarios,
            Operation::RunScenario,
            Operation::GetTriggerFire,
            Operation::GetRunForTrigger,
            Operation::GetLastScenarioRuns,
            Operation::GetScenarioRunsByDate,
            Operation::GetScenarioRun,
            Operation::GetScenarioStatus,
            Operation::AbortScenario,
            Operation::GetScenarioRunLog,
        ]
    );
    assert!(
        recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|(_, o)| *o == Outcome::Success)
    );
}

#[tokio::test]
async fn hostile_answers_are_errors_not_panics_and_never_show_the_key() {
    let server = support::spawn().await;
    let client = test_client(&server, ApiPrefix::PublicApi);
    let huge = format!(
        "{{\"trigger\":{{\"id\":\"m\"}},\"runId\":\"{}\"}}",
        "x".repeat(33 * 1024 * 1024)
    );
    type Check = fn(&Error) -> bool;
    let cases: Vec<(Fault, Check)> = vec![
        (
            ok(json!({"runId": "T1"})),
            |e| matches!(e, Error::Decode { detail, .. } if detail.contains("trigger.id")),
        ),
        (
            ok(json!({"trigger": {"id": "m"}})),
            |e| matches!(e, Error::Decode { detail, .. } if detail.contains("runId")),
        ),
        (ok(json!([1, 2])), |e| matches!(e, Error::Decode { .. })),
        (Fault::status(200, "<html>not json</html>"), |e| {
            matches!(e, Error::Decode { .. })
        }),
        (Fault::status(200, ""), |e| matches!(e, Error::Decode { .. })),
        (
            Fault::status(200, &huge),
            |e| matches!(e, Error::TooLarge { limit, .. } if limit.contains("33554432")),
        ),
        (
            Fault::status(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
            |e| e.status() == Some(502) && e.is_retryable(),
        ),
        (Fault::status(429, "").header("retry-after", "0"), |e| {
            e.status() == Some(429) && e.category() == "DssRateLimited"
        }),
        (
            Fault::status(500, &format!(r#"{{"errorType":"X","message":"echo {KEY}"}}"#)),
            |e| e.status() == Some(500),
        ),
    ];
    for (fault, check) in cases {
        server.push_fault(fault);
        let err = client
            .run_scenario("TEST_PROJECT", "S", &Map::new())
            .await
            .unwrap_err();
        assert!(check(&err), "{err:?}");
        assert!(!format!("{err} {err:?}").contains(KEY), "the key leaked: {err}");
    }
    // A run for a trigger that is not a run, run details without a run, a status without `running`.
    server.push_fault(ok(json!({"scenarioRun": "running"})));
    let err = client
        .get_run_for_trigger("TEST_PROJECT", "S", "m", "T")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }));
    server.push_fault(ok(json!({"stepRuns": []})));
    assert!(matches!(
        client.get_scenario_run("TEST_PROJECT", "S", "R").await,
        Err(Error::Decode { .. })
    ));
    server.push_fault(ok(json!({"active": true})));
    assert!(matches!(
        client.get_scenario_status("TEST_PROJECT", "S").await,
        Err(Error::Decode { .. })
    ));
    // A listing with junk items keeps the usable ones.
    server.push_fault(ok(
        json!([{"runId": "R1"}, null, {"runId": 3}, {"runId": "R2", "result": {"outcome": 5}}]),
    ));
    let runs = client
        .get_last_scenario_runs("TEST_PROJECT", "S", 10, true)
        .await
        .unwrap();
    assert_eq!(
        runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["R1", "R2"]
    );
    assert!(
        runs[1].is_running(),
        "an outcome that is not a string is no outcome"
    );
    // A slow answer is a timeout of that call.
    let mut config = ClientConfig::new(server.url(), ApiKey::from(KEY));
    config.request_timeout = Duration::from_millis(200);
    let impatient = DssClient::new(config).unwrap();
    server.push_fault(Fault::delay(Duration::from_secs(2)));
    let err = impatient.abort_scenario("TEST_PROJECT", "S").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: Operation::AbortScenario
            }
        ),
        "{err:?}"
    );
}
