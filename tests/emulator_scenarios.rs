//! The emulator's scenarios API served in-process and driven over HTTP with reqwest: trigger fires
//! and the runs they start, outcomes, cancelled fires, abort, listings, logs, errors, faults and the
//! admin API's view. Steps last tens of milliseconds; tests poll on the wall clock with a deadline.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kube_dss::emulator::{Config, Faults, Handle, admin::AdminClient, spawn};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const KEY: &str = "scenario-key";
const P: &str = "/public/api/projects/P/scenarios";

fn config() -> Config {
    Config::from_yaml(
        r#"
instance: {scenarioStartDelayMs: 50}
defaults: {durationMs: 50}
projects:
  - projectKey: P
    datasets:
      - {name: raw}
      - {name: clean, build: {warnings: 1}}
      - {name: scored, build: {outcome: FAILED, message: "Job failed: KeyError 'segment'"}}
      - {name: slow, build: {durationMs: 3600000}}
    recipes:
      - {name: compute_clean, inputs: [raw], outputs: [clean]}
      - {name: compute_scored, inputs: [clean], outputs: [scored]}
    scenarios:
      - id: NIGHTLY
        name: Nightly build
        tags: [prod]
        steps:
          - {type: build, id: build_clean, name: Build clean, outputs: [{id: clean}]}
          - {type: wait, id: settle, durationMs: 50}
      - id: OK
        active: false
        steps: [{type: wait, durationMs: 30}]
      - id: SCORE
        steps:
          - {type: build, id: score, outputs: [{id: scored}]}
          - {type: wait, id: never, durationMs: 10}
      - id: CHECK
        steps:
          - {type: warn, id: look, message: "3 rows look odd", durationMs: 10}
          - {type: fail, id: verify, message: "Check failed: 0 rows", code: ERR_CHECK}
      - id: LONG
        steps: [{type: build, id: forever, outputs: [{id: slow}]}]
apiKeys:
  - {key: scenario-key, id: tester, projects: {P: [READ_CONF, RUN_SCENARIOS, MONITOR_JOBS]}}
  - {key: reader-key, id: reader, projects: {P: [READ_CONF]}}
"#,
    )
    .unwrap()
}

struct Env {
    handle: Handle,
    http: Client,
    admin: AdminClient,
}

impl Env {
    async fn new() -> Env {
        Env::with(config()).await
    }

    /// An emulator whose fires wait `delay` before their run starts.
    async fn with_start_delay(delay: Duration) -> Env {
        let mut config = config();
        config.instance.scenario_start_delay_ms = u64::try_from(delay.as_millis()).unwrap();
        Env::with(config).await
    }

    async fn with(config: Config) -> Env {
        let handle = spawn(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let admin = AdminClient::new(handle.admin_url());
        Env {
            handle,
            http: Client::new(),
            admin,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    async fn get_as(&self, key: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .basic_auth(key, Some(""))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self.get_as(KEY, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.json().await.unwrap()
    }

    async fn post_as(&self, key: &str, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .basic_auth(key, Some(""))
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// `POST .../{id}/run` with these params; the trigger fire.
    async fn run(&self, scenario: &str, params: Value) -> Value {
        let resp = self
            .post_as(KEY, &format!("{P}/{scenario}/run"), &params.to_string())
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    async fn run_for(&self, scenario: &str, fire: &Value) -> Value {
        self.get(&format!(
            "{P}/{scenario}/get-run-for-trigger?triggerId={}&triggerRunId={}",
            fire["trigger"]["id"].as_str().unwrap(),
            fire["runId"].as_str().unwrap()
        ))
        .await
    }

    /// Polls until `cond` holds for the value `fetch` gives (10 s at most).
    async fn until<F, Fut>(&self, what: &str, fetch: F, cond: impl Fn(&Value) -> bool) -> Value
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Value>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = fetch().await;
            if cond(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: still {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fires the scenario and waits until its run is finished; the run details.
    async fn run_to_end(&self, scenario: &str, params: Value) -> Value {
        let fire = self.run(scenario, params).await;
        let run = self
            .until(
                "the run",
                || self.run_for(scenario, &fire),
                |v| v["scenarioRun"]["result"].is_object(),
            )
            .await;
        let run_id = run["scenarioRun"]["runId"].as_str().unwrap().to_owned();
        self.get(&format!("{P}/{scenario}/{run_id}/")).await
    }
}

#[tokio::test]
async fn a_run_is_a_trigger_fire_then_a_run_whose_build_step_ran_a_real_job() {
    // The run starts after the start delay: until then the fire has no run. The emulator's clock is
    // this process's monotonic clock, so an answer received within the delay of sending the fire
    // was given before the run could start; a test thread stalled past the delay fires again.
    let delay = Duration::from_millis(1000);
    let env = Env::with_start_delay(delay).await;
    let mut attempts = 0;
    let fire = loop {
        attempts += 1;
        let sent = Instant::now();
        let fire = env.run("NIGHTLY", json!({"requestId": "r-1"})).await;
        let before_start = env.run_for("NIGHTLY", &fire).await;
        if sent.elapsed() < delay {
            assert_eq!(before_start, json!({}), "a run before the start delay");
            break fire;
        }
        assert!(
            attempts < 5,
            "the test thread stalled past the start delay {attempts} times"
        );
        env.until(
            "the run",
            || env.run_for("NIGHTLY", &fire),
            |v| v["scenarioRun"]["result"].is_object(),
        )
        .await;
    };
    assert_eq!(fire["trigger"]["id"], "manual");
    assert_eq!(fire["cancelled"], false);
    assert_eq!(fire["params"], json!({"requestId": "r-1"}));
    assert_eq!(
        (fire["projectKey"].clone(), fire["scenarioId"].clone()),
        (json!("P"), json!("NIGHTLY"))
    );
    let details = env
        .until(
            "the run",
            || env.run_for("NIGHTLY", &fire),
            |v| v["scenarioRun"]["result"].is_object(),
        )
        .await;
    let run = &details["scenarioRun"];
    assert_ne!(
        run["runId"], fire["runId"],
        "the fire's runId is a trigger run id"
    );
    assert_eq!(run["trigger"]["runId"], fire["runId"]);
    assert_eq!(run["trigger"]["params"]["requestId"], "r-1");
    // By the emulator's own clock, the run started no sooner than the delay after its fire.
    let waited = run["start"].as_i64().unwrap() - fire["timestamp"].as_i64().unwrap();
    let delay_ms = i64::try_from(delay.as_millis()).unwrap();
    assert!(waited >= delay_ms, "the run started {waited} ms after its fire");
    assert_eq!(
        run["scenario"],
        json!({"projectKey": "P", "id": "NIGHTLY", "name": "Nightly build", "type": "step_based", "markedAsTest": false})
    );
    // The build of `clean` reported a warning: the step, hence the run, ends WARNING.
    assert_eq!(run["result"]["outcome"], "WARNING");
    assert!(run["end"].as_i64().unwrap() >= run["start"].as_i64().unwrap());

    let run_id = run["runId"].as_str().unwrap();
    let details = env.get(&format!("{P}/NIGHTLY/{run_id}/")).await;
    let steps = details["stepRuns"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["step"]["id"], "build_clean");
    assert_eq!(steps[0]["step"]["type"], "build_flowitem");
    assert_eq!(steps[0]["result"]["outcome"], "WARNING");
    assert_eq!(steps[1]["result"]["outcome"], "SUCCESS");
    assert_eq!(steps[1]["additionalReportItems"], json!([]));
    let item = &steps[0]["additionalReportItems"][0];
    assert_eq!(item["type"], "JOB_EXECUTED");
    let job_id = item["jobId"].as_str().unwrap();
    // The job is a real emulator job: in the jobs API, started from a scenario.
    let status = env.get(&format!("/public/api/projects/P/jobs/{job_id}/")).await;
    assert_eq!(status["baseStatus"]["state"], "DONE");
    assert_eq!(status["baseStatus"]["def"]["triggeredFrom"], "SCENARIO");
    assert!(
        env.admin
            .project_jobs("P")
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == job_id)
    );
    env.handle.shutdown().await;
}

#[tokio::test]
async fn failures_carry_the_failing_steps_error_and_stop_the_run() {
    let env = Env::new().await;
    let score = env.run_to_end("SCORE", json!({})).await;
    assert_eq!(score["scenarioRun"]["result"]["outcome"], "FAILED");
    let steps = score["stepRuns"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "the step after a failure does not run");
    let thrown = &steps[0]["result"]["thrown"];
    assert!(
        thrown["message"]
            .as_str()
            .unwrap()
            .ends_with("failed: Job failed: KeyError 'segment'"),
        "{thrown}"
    );
    assert_eq!(steps[0]["additionalReportItems"][0]["outcome"], "FAILED");
    assert_eq!(score["scenarioRun"]["result"]["thrown"], *thrown);

    let check = env.run_to_end("CHECK", json!({})).await;
    let steps = check["stepRuns"].as_array().unwrap();
    assert_eq!(steps[0]["result"], json!({"outcome": "WARNING"}));
    assert_eq!(steps[1]["result"]["thrown"]["code"], "ERR_CHECK");
    assert_eq!(steps[1]["result"]["thrown"]["message"], "Check failed: 0 rows");
    assert_eq!(check["scenarioRun"]["result"]["outcome"], "FAILED");

    // The logs: the whole run, and one step's (with the job's own lines).
    let run_id = score["scenarioRun"]["runId"].as_str().unwrap();
    let resp = env.get_as(KEY, &format!("{P}/SCORE/{run_id}/log")).await;
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let log = resp.text().await.unwrap();
    assert!(log.trim_end().ends_with("KeyError 'segment'"), "{log}");
    let step_log = env
        .get_as(KEY, &format!("{P}/SCORE/{run_id}/log?stepId=score"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        step_log.contains("Activity compute_scored_NP FAILED"),
        "{step_log}"
    );
    assert!(!step_log.contains("started by trigger"), "{step_log}");
    let unknown = env
        .get_as(KEY, &format!("{P}/SCORE/{run_id}/log?stepId=nope"))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn a_fire_while_running_is_cancelled_and_abort_stops_the_current_run() {
    let env = Env::new().await;
    let first = env.run("LONG", json!({"who": "first"})).await;
    let run = env
        .until(
            "the run",
            || env.run_for("LONG", &first),
            |v| v["scenarioRun"].is_object(),
        )
        .await;
    let run_id = run["scenarioRun"]["runId"].as_str().unwrap().to_owned();
    let light = env.get(&format!("{P}/LONG/light")).await;
    assert_eq!(light["running"], true);
    assert_eq!(light["start"], run["scenarioRun"]["start"]);

    let second = env.run("LONG", json!({"who": "second"})).await;
    assert_eq!(
        second["cancelled"], false,
        "the answer comes before the fire is settled"
    );
    let trigger = format!(
        "{P}/trigger/LONG/manual?triggerRunId={}",
        second["runId"].as_str().unwrap()
    );
    env.until(
        "the cancellation",
        || env.get(&trigger),
        |v| v["cancelled"] == true,
    )
    .await;
    assert_eq!(env.run_for("LONG", &second).await, json!({}));

    // Abort is not scoped to a run: it stops the current one, whoever started it.
    let job =
        env.get(&format!("{P}/LONG/{run_id}/")).await["stepRuns"][0]["additionalReportItems"][0]["jobId"]
            .as_str()
            .unwrap()
            .to_owned();
    let aborted: Value = env
        .post_as(KEY, &format!("{P}/LONG/abort"), "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        aborted,
        json!({"projectKey": "P", "scenarioId": "LONG", "aborted": true, "runId": run_id})
    );
    let details = env.get(&format!("{P}/LONG/{run_id}/")).await;
    assert_eq!(details["scenarioRun"]["result"]["outcome"], "ABORTED");
    assert_eq!(details["stepRuns"][0]["result"]["outcome"], "ABORTED");
    let job_state = env.get(&format!("/public/api/projects/P/jobs/{job}/")).await;
    assert_eq!(job_state["baseStatus"]["state"], "ABORTED");
    // Nothing running: abort does nothing, and says so.
    let again: Value = env
        .post_as(KEY, &format!("{P}/LONG/abort/"), "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["aborted"], false);
    assert_eq!(env.get(&format!("{P}/LONG/light")).await["running"], false);

    let record = env.admin.scenario("P", "LONG").await.unwrap();
    let states: Vec<&str> = record.fires.iter().map(|f| f.state.as_str()).collect();
    assert_eq!(states, ["STARTED", "CANCELLED"]);
    assert_eq!(record.runs.len(), 1);
    assert_eq!(record.runs[0].outcome.as_deref(), Some("ABORTED"));
    assert_eq!(record.runs[0].params, json!({"who": "first"}));
    env.handle.shutdown().await;
}

#[tokio::test]
async fn listings_status_and_dates() {
    let env = Env::new().await;
    let list = env.get(&format!("{P}/")).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["NIGHTLY", "OK", "SCORE", "CHECK", "LONG"]);
    assert_eq!(list[0]["name"], "Nightly build");
    assert_eq!(list[0]["tags"], json!(["prod"]));
    assert_eq!(
        (list[1]["active"].clone(), list[1]["running"].clone()),
        (json!(false), json!(false))
    );
    // An inactive scenario still runs when asked to.
    let first = env.run_to_end("OK", json!({"n": 1})).await;
    let second = env.run_to_end("OK", json!({"n": 2})).await;
    let last = env
        .get(&format!("{P}/OK/get-last-runs?limit=10&onlyFinishedRuns=False"))
        .await;
    assert_eq!(last.as_array().unwrap().len(), 2);
    assert_eq!(last[0]["runId"], second["scenarioRun"]["runId"], "newest first");
    assert_eq!(last[1]["trigger"]["params"], json!({"n": 1}));
    let one = env.get(&format!("{P}/OK/get-last-runs?limit=1")).await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let light = env.get(&format!("{P}/OK/light")).await;
    assert_eq!(light["running"], false);
    assert_eq!(light["lastRun"]["runId"], second["scenarioRun"]["runId"]);

    // Dates of the runs' own starts (UTC), not of the wall clock, so midnight changes nothing.
    let day = |run: &Value| {
        chrono::DateTime::from_timestamp_millis(run["scenarioRun"]["start"].as_i64().unwrap())
            .unwrap()
            .date_naive()
    };
    let (from, to) = (day(&first), day(&second).succ_opt().unwrap());
    let by_date = env
        .get(&format!("{P}/OK/get-runs-by-date?fromDate={from}&toDate={to}"))
        .await;
    assert_eq!(by_date.as_array().unwrap().len(), 2);
    // toDate is exclusive.
    let none = env
        .get(&format!(
            "{P}/OK/get-runs-by-date?fromDate={}&toDate={from}",
            from.pred_opt().unwrap()
        ))
        .await;
    assert_eq!(none, json!([]));
    assert_eq!(first["scenarioRun"]["result"]["outcome"], "SUCCESS");
    // The trailing-slash variants and the other prefix.
    let dip = env
        .get("/dip/publicapi/projects/P/scenarios/OK/get-last-runs/?limit=1")
        .await;
    assert_eq!(dip[0]["runId"], second["scenarioRun"]["runId"]);
    let stats = env.admin.stats().await.unwrap();
    assert_eq!((stats.trigger_fires, stats.scenario_runs_started), (2, 2));
    assert!(stats.requests_by_route["GET /projects/{pk}/scenarios/{id}/get-last-runs"] >= 3);
    assert!(stats.requests_by_route["POST /projects/{pk}/scenarios/{id}/run"] >= 2);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn errors_are_dss_errors() {
    let env = Env::new().await;
    let cases: Vec<(reqwest::Response, StatusCode, &str)> = vec![
        (
            env.get_as(KEY, &format!("{P}/NOPE/light")).await,
            StatusCode::NOT_FOUND,
            "Scenario P.NOPE does not exist",
        ),
        (
            env.post_as(KEY, &format!("{P}/NOPE/run"), "{}").await,
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            env.get_as(KEY, "/public/api/projects/NOPE/scenarios/").await,
            StatusCode::NOT_FOUND,
            "Project NOPE does not exist",
        ),
        (
            env.post_as("reader-key", &format!("{P}/OK/run"), "{}").await,
            StatusCode::FORBIDDEN,
            "lacks the RUN_SCENARIOS permission",
        ),
        (
            env.post_as("reader-key", &format!("{P}/OK/abort"), "").await,
            StatusCode::FORBIDDEN,
            "RUN_SCENARIOS",
        ),
        (
            env.get_as("bad-key", &format!("{P}/")).await,
            StatusCode::UNAUTHORIZED,
            "Invalid API key",
        ),
        (
            env.get_as(KEY, &format!("{P}/OK/2020-01-01-00-00-00-000/")).await,
            StatusCode::NOT_FOUND,
            "Scenario run 2020-01-01-00-00-00-000 does not exist",
        ),
        (
            env.get_as(
                KEY,
                &format!("{P}/OK/get-run-for-trigger?triggerId=manual&triggerRunId=x"),
            )
            .await,
            StatusCode::NOT_FOUND,
            "Trigger fire manual/x does not exist",
        ),
        (
            env.get_as(KEY, &format!("{P}/OK/get-run-for-trigger?triggerId=manual"))
                .await,
            StatusCode::BAD_REQUEST,
            "Missing parameter triggerRunId",
        ),
        (
            env.get_as(KEY, &format!("{P}/trigger/OK/manual")).await,
            StatusCode::BAD_REQUEST,
            "Missing parameter triggerRunId",
        ),
        (
            env.post_as(KEY, &format!("{P}/OK/run"), "[1]").await,
            StatusCode::BAD_REQUEST,
            "must be a JSON object",
        ),
        (
            env.post_as(KEY, &format!("{P}/OK/run"), "{").await,
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            env.get_as(KEY, &format!("{P}/OK/get-runs-by-date?fromDate=yesterday"))
                .await,
            StatusCode::BAD_REQUEST,
            "expected YYYY-MM-DD",
        ),
        (
            env.get_as(KEY, &format!("{P}/OK/get-last-runs?limit=-1")).await,
            StatusCode::BAD_REQUEST,
            "Invalid limit",
        ),
        (
            env.get_as(KEY, &format!("{P}/OK/get-last-runs?onlyFinishedRuns=maybe"))
                .await,
            StatusCode::BAD_REQUEST,
            "Invalid boolean",
        ),
    ];
    for (resp, status, text) in cases {
        let url = resp.url().to_string();
        assert_eq!(resp.status(), status, "{url}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["errorType"].is_string(), "{url}: {body}");
        assert!(
            body["detailedMessage"].as_str().unwrap().contains(text),
            "{url}: {body}"
        );
    }
    // The reader may read: list and status.
    assert_eq!(
        env.get_as("reader-key", &format!("{P}/OK/light")).await.status(),
        StatusCode::OK
    );
    // An empty body and `null` are no parameters.
    for body in ["", "null"] {
        let fire: Value = env
            .post_as(KEY, &format!("{P}/OK/run"), body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(fire["params"], json!({}));
    }
    env.handle.shutdown().await;
}

#[tokio::test]
async fn a_lost_run_response_still_fired_the_trigger_and_faults_apply_to_scenario_routes() {
    let env = Env::new().await;
    env.admin
        .set_faults(&Faults {
            drop_run_responses: 1,
            ..Faults::default()
        })
        .await
        .unwrap();
    let lost = env
        .http
        .post(env.url(&format!("{P}/OK/run")))
        .basic_auth(KEY, Some(""))
        .body(r#"{"requestId":"lost-1"}"#)
        .send()
        .await;
    assert!(lost.is_err(), "the connection is closed without an answer");
    // The fire happened: its run shows in the last runs, with the request's marker.
    let last_runs = format!("{P}/OK/get-last-runs?limit=5");
    let runs = env
        .until(
            "the lost run",
            || env.get(&last_runs),
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert_eq!(runs[0]["trigger"]["params"]["requestId"], "lost-1");
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.faults_injected.dropped_run_responses, 1);
    assert_eq!(stats.trigger_fires, 1);
    assert_eq!(env.admin.faults().await.unwrap().drop_run_responses, 0);

    env.admin
        .set_faults(&Faults {
            rate_limit_rate: 1.0,
            retry_after_seconds: Some(7),
            routes: vec!["GET /projects/{pk}/scenarios/{id}/light".into()],
            ..Faults::default()
        })
        .await
        .unwrap();
    let limited = env.get_as(KEY, &format!("{P}/OK/light/")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(env.get_as(KEY, &format!("{P}/")).await.status(), StatusCode::OK);
    env.admin
        .set_faults(&Faults {
            error_rate: 1.0,
            error_status: Some(503),
            routes: vec!["POST /projects/{pk}/scenarios/{id}/run".into()],
            ..Faults::default()
        })
        .await
        .unwrap();
    let unavailable = env.post_as(KEY, &format!("{P}/OK/run"), "{}").await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        env.admin.stats().await.unwrap().trigger_fires,
        1,
        "a 5xx before the handler fires nothing"
    );
    env.handle.shutdown().await;
}

#[tokio::test]
async fn reset_forgets_fires_and_runs() {
    let env = Env::new().await;
    env.run_to_end("OK", json!({})).await;
    assert_eq!(env.admin.scenarios().await.unwrap().len(), 1);
    env.admin.reset().await.unwrap();
    assert!(env.admin.scenarios().await.unwrap().is_empty());
    assert_eq!(env.get(&format!("{P}/OK/get-last-runs")).await, json!([]));
    env.handle.shutdown().await;
}
