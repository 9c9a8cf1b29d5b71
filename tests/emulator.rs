//! The emulator served in-process and driven over HTTP with reqwest: authentication, prefixes,
//! job lifecycle, queueing, recursive builds, faults, statistics and the admin API. Time-dependent
//! tests use a large `timeScale` or the admin API's finish, and poll on the wall clock.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kube_dss::emulator::{
    Config, Faults, Handle, Listen,
    admin::{AdminClient, DropMode, FinishRequest, FinishState, GatewayFault, KeySpec},
    spawn, spawn_with,
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "test-key";

/// A project with a flow `raw -> clean -> scored` (scored fails), a slow dataset, a partitioned
/// one, a standalone folder, and three keys.
fn config(extra_instance: &str) -> Config {
    let yaml = format!(
        r#"
instance: {{timeScale: 1.0{extra_instance}}}
defaults: {{durationMs: 100}}
projects:
  - projectKey: P
    datasets:
      - {{name: raw}}
      - {{name: clean, build: {{durationMs: 100, warnings: 1, log: ["cleaning"]}}}}
      - {{name: scored, build: {{durationMs: 100, outcome: FAILED, message: "Job failed: KeyError 'segment'"}}}}
      - {{name: slow, build: {{durationMs: 3600000}}}}
      - name: daily
        partitioning: [{{name: day}}]
    managedFolders: [{{id: folder1}}]
    recipes:
      - {{name: compute_clean, inputs: [raw], outputs: [clean]}}
      - {{name: compute_scored, inputs: [clean], outputs: [scored]}}
      - {{name: compute_daily, inputs: [clean], outputs: [daily]}}
  - projectKey: Q
    datasets: [{{name: q1}}]
apiKeys:
  - {{key: {KEY}, id: tester, projects: {{P: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}}}
  - {{key: other-key, id: other, projects: {{P: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}}}
  - {{key: reader-key, id: reader, projects: {{P: [READ_CONF]}}}}
"#
    );
    Config::from_yaml(&yaml).expect("test config")
}

struct Env {
    handle: Handle,
    http: Client,
    admin: AdminClient,
}

impl Env {
    async fn new(config: Config) -> Env {
        let handle = spawn(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("emulator starts");
        let admin = AdminClient::new(handle.base_url());
        Env {
            handle,
            http: Client::new(),
            admin,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/public/api{path}", self.handle.base_url())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .basic_auth(KEY, Some(""))
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.json().await.unwrap()
    }

    async fn start(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/projects/P/jobs/"))
            .basic_auth(KEY, Some(""))
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn start_ok(&self, build: &str, output: &str) -> String {
        let resp = self
            .start(json!({"type": build, "outputs": [{"id": output}]}))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let def: Value = resp.json().await.unwrap();
        def["id"].as_str().unwrap().to_owned()
    }

    async fn status(&self, id: &str) -> Value {
        self.get_json(&format!("/projects/P/jobs/{id}/")).await
    }

    async fn state(&self, id: &str) -> String {
        self.status(id).await["baseStatus"]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Polls until the job reaches one of `states` (wall clock, 10 s at most).
    async fn wait_for(&self, id: &str, states: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = self.state(id).await;
            if states.contains(&state.as_str()) {
                return state;
            }
            assert!(Instant::now() < deadline, "job {id} stuck in {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn all_three_credential_forms_are_accepted_and_others_refused() {
    let env = Env::new(config("")).await;
    let url = env.url("/auth/info");
    let basic = env
        .http
        .get(&url)
        .basic_auth(KEY, Some("ignored"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.json::<Value>().await.unwrap()["authIdentifier"], "tester");
    let bearer = env.http.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(bearer.json::<Value>().await.unwrap()["authIdentifier"], "tester");
    let ticket = env
        .http
        .get(&url)
        .header("X-DKU-APITicket", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ticket.json::<Value>().await.unwrap()["authSource"], "TICKET");
    for req in [
        env.http.get(&url),
        env.http.get(&url).basic_auth("wrong", Some("")),
        env.http.get(&url).header("Authorization", "Basic %%%"),
        env.http.get(&url).header("Authorization", "Digest abc"),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["errorType"],
            "com.dataiku.dip.exceptions.UnauthorizedException"
        );
        assert!(body["detailedMessage"].is_string());
    }
    env.handle.shutdown().await;
}

#[tokio::test]
async fn both_prefixes_and_a_doubled_leading_slash_reach_the_api() {
    let env = Env::new(config("")).await;
    let base = env.handle.base_url();
    for path in [
        "/public/api/projects/",
        "/dip/publicapi/projects/",
        "//dip/publicapi/projects/",
        "/public/api/projects",
    ] {
        let resp = env
            .http
            .get(format!("{base}{path}"))
            .basic_auth(KEY, Some(""))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["DSS-Version"], "14.2.0");
        let projects: Value = resp.json().await.unwrap();
        // Only projects the key may READ_CONF.
        assert_eq!(
            projects,
            json!([{"projectKey": "P", "name": "P", "ownerLogin": "admin", "projectStatus": "", "shortDesc": "", "tags": []}])
        );
    }
    let no_prefix = env
        .http
        .get(format!("{base}/projects/"))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(no_prefix.status(), StatusCode::NOT_FOUND);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn a_job_goes_from_running_to_done_with_real_times() {
    let env = Env::new(config("")).await;
    let id = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "clean").await;
    assert!(id.starts_with("build_clean_NP_"), "{id}");
    let status = env.status(&id).await;
    let base = &status["baseStatus"];
    assert_eq!(base["state"], "RUNNING");
    assert_eq!(base["stableState"], false);
    assert_eq!(base["endTime"], 0);
    assert_eq!(base["def"]["initiator"], "API (tester)");
    assert_eq!(status["globalState"]["running"], 1);
    assert_eq!(env.wait_for(&id, &["DONE", "FAILED", "ABORTED"]).await, "DONE");
    let base = env.status(&id).await["baseStatus"].clone();
    let (start, end) = (
        base["startTime"].as_i64().unwrap(),
        base["endTime"].as_i64().unwrap(),
    );
    assert!(end - start >= 100, "{start} {end}");
    assert_eq!(base["warningsCount"], 1);
    assert_eq!(base["stableState"], true);
    // Abort of a finished job: 200, JSON, nothing changes.
    let abort = env
        .http
        .post(env.url(&format!("/projects/P/jobs/{id}/abort")))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(abort.status(), StatusCode::OK);
    assert_eq!(abort.json::<Value>().await.unwrap()["aborted"], false);
    assert_eq!(env.state(&id).await, "DONE");
    let log = env.get(&format!("/projects/P/jobs/{id}/log")).await;
    assert_eq!(log.headers()["content-type"], "text/plain; charset=utf-8");
    let text = log.text().await.unwrap();
    assert!(text.contains("cleaning") && text.contains("DONE"), "{text}");
    env.handle.shutdown().await;
}

#[tokio::test]
async fn jobs_queue_in_not_started_until_an_activity_slot_frees_up() {
    let env = Env::new(config(", maxRunningActivities: 1")).await;
    let a = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await;
    let b = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await;
    let c = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "clean").await;
    assert_eq!(env.state(&a).await, "RUNNING");
    assert_eq!(env.state(&b).await, "NOT_STARTED");
    assert_eq!(env.state(&c).await, "NOT_STARTED");
    assert_eq!(env.status(&b).await["baseStatus"]["startTime"], 0);
    let running: Vec<Value> = env
        .get_json("/projects/P/jobs/running/")
        .await
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(running.len(), 3);
    // Aborting a queued job leaves it ABORTED without ever starting.
    env.http
        .post(env.url(&format!("/projects/P/jobs/{b}/abort/")))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(env.state(&b).await, "ABORTED");
    // Freeing the slot starts the next queued job at once.
    env.admin.finish("P", &a, FinishState::Done).await.unwrap();
    assert_eq!(env.wait_for(&c, &["DONE"]).await, "DONE");
    assert!(
        env.get_json("/projects/P/jobs/running/")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    env.handle.shutdown().await;
}

#[tokio::test]
async fn recursive_builds_add_upstream_activities_in_flow_order() {
    let env = Env::new(config("")).await;
    let id = env.start_ok("RECURSIVE_FORCED_BUILD", "scored").await;
    let status = env.status(&id).await;
    let mut acts: Vec<(String, String)> = status["activities"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["state"].as_str().unwrap().to_owned()))
        .collect();
    acts.sort();
    assert_eq!(
        acts,
        [
            ("compute_clean_NP".to_owned(), "RUNNING".to_owned()),
            ("compute_scored_NP".to_owned(), "NOT_STARTED".to_owned())
        ]
    );
    assert_eq!(env.wait_for(&id, &["DONE", "FAILED"]).await, "FAILED");
    let status = env.status(&id).await;
    assert_eq!(status["globalState"]["done"], 1);
    assert_eq!(status["globalState"]["failed"], 1);
    assert_eq!(
        status["activities"]["compute_scored_NP"]["errorMessage"],
        "Job failed: KeyError 'segment'"
    );
    let log = env
        .get(&format!("/projects/P/jobs/{id}/log?activity=compute_scored_NP"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        log.trim_end().ends_with("Job failed: KeyError 'segment'"),
        "{log}"
    );
    // clean is built now, so a smart build of daily only builds daily.
    let smart = env.start_ok("RECURSIVE_BUILD", "daily").await;
    let acts = env.status(&smart).await["activities"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(acts, ["compute_daily_NP"]);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn start_requests_are_validated() {
    let env = Env::new(config("")).await;
    let cases = [
        (
            json!({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": []}),
            400,
            "BadRequestException",
        ),
        (
            json!({"type": "SOMETIMES_BUILD", "outputs": [{"id": "clean"}]}),
            400,
            "BadRequestException",
        ),
        (
            json!({"outputs": [{"id": "nope", "type": "DATASET"}]}),
            404,
            "NotFoundException",
        ),
        (
            json!({"outputs": [{"id": "clean", "projectKey": "NOPE"}]}),
            404,
            "NotFoundException",
        ),
        (
            json!({"outputs": [{"id": "folder1", "type": "DATASET"}]}),
            404,
            "NotFoundException",
        ),
        (json!({"outputs": [{"id": 3}]}), 400, "BadRequestException"),
        (json!("just a string"), 400, "BadRequestException"),
    ];
    for (body, status, error) in cases {
        let resp = env.start(body.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["errorType"].as_str().unwrap().ends_with(error),
            "{body} {err}"
        );
    }
    // Nulls, arrays of partitions and every object type are accepted.
    let ok = env
        .start(
            json!({"type": "NON_RECURSIVE_FORCED_BUILD", "refreshHiveMetastore": null, "outputs": [
                {"id": "daily", "type": null, "projectKey": null, "partition": ["2024-01-01", "2024-01-02"]},
                {"id": "folder1", "type": "MANAGED_FOLDER", "partition": null},
            ]}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let def: Value = ok.json().await.unwrap();
    assert_eq!(def["outputs"][0]["targetPartition"], "2024-01-01,2024-01-02");
    assert_eq!(def["outputs"][1]["type"], "MANAGED_FOLDER");
    let status = env.status(def["id"].as_str().unwrap()).await;
    assert_eq!(status["globalState"]["total"], 3);
    // Missing permission names it.
    let resp = env
        .http
        .post(env.url("/projects/P/jobs/"))
        .basic_auth("reader-key", Some(""))
        .body(r#"{"outputs":[{"id":"clean"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await.unwrap().contains("RUN_JOBS"));
    env.handle.shutdown().await;
}

#[tokio::test]
async fn ids_stay_unique_when_many_jobs_start_in_the_same_millisecond() {
    let env = Env::new(config("")).await;
    let starts = (0..50).map(|_| env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow"));
    let ids: std::collections::HashSet<String> =
        futures::future::join_all(starts).await.into_iter().collect();
    assert_eq!(ids.len(), 50);
    let listed = env.get_json("/projects/P/jobs/?limit=10").await;
    assert_eq!(listed.as_array().unwrap().len(), 10);
    let all = env.get_json("/projects/P/jobs/?limit=0").await;
    assert_eq!(all.as_array().unwrap().len(), 50);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn running_jobs_of_all_users_or_only_mine() {
    let env = Env::new(config("")).await;
    let mine = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await;
    let theirs: Value = env
        .http
        .post(env.url("/projects/P/jobs/"))
        .basic_auth("other-key", Some(""))
        .body(r#"{"outputs":[{"id":"slow"}]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["jobId"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let all = ids(env.get_json("/jobs/running/?allUsers=True").await);
    assert_eq!(all.len(), 2);
    assert_eq!(
        ids(env.get_json("/jobs/running/?allUsers=false").await),
        std::slice::from_ref(&mine)
    );
    assert!(all.contains(&theirs["id"].as_str().unwrap().to_owned()));
    env.handle.shutdown().await;
}

#[tokio::test]
async fn injected_5xx_follow_the_configured_share() {
    let env = Env::new(config("")).await;
    env.admin
        .set_faults(&Faults {
            seed: 42,
            error_rate: 0.3,
            error_status: Some(503),
            ..Faults::default()
        })
        .await
        .unwrap();
    let mut errors = 0;
    for _ in 0..200 {
        let resp = env.get("/projects/").await;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                errors += 1;
                assert!(resp.text().await.unwrap().contains("<html>"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!((35..=85).contains(&errors), "{errors} errors out of 200");
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.faults_injected.error5xx, errors);
    assert_eq!(stats.responses_by_status["503"], errors);
    // The admin API is never faulted.
    env.admin
        .set_faults(&Faults {
            outage: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    assert!(env.admin.jobs().await.is_ok());
    assert_eq!(
        env.get("/projects/").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    env.admin.clear_faults().await.unwrap();
    assert_eq!(env.get("/projects/").await.status(), StatusCode::OK);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn rate_limits_carry_retry_after() {
    let env = Env::new(config("")).await;
    let faults = Faults {
        rate_limit_rate: 1.0,
        retry_after_seconds: Some(7),
        routes: vec!["GET /projects/{pk}/jobs/".to_owned()],
        ..Faults::default()
    };
    env.admin.set_faults(&faults).await.unwrap();
    let resp = env.get("/projects/P/jobs").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    // Other routes are not affected by a route-limited fault.
    assert_eq!(env.get("/projects/").await.status(), StatusCode::OK);
    assert_eq!(env.admin.stats().await.unwrap().faults_injected.rate_limited, 1);
    env.handle.shutdown().await;
}

/// Sends one raw HTTP/1.1 request and returns everything the server wrote before closing.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("server closes");
    out
}

#[tokio::test]
async fn connection_resets_close_without_any_response() {
    let env = Env::new(config("")).await;
    env.admin
        .set_faults(&Faults {
            reset_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let err = env
        .http
        .get(env.url("/projects/"))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err:?}");
    let bytes = raw_exchange(
        env.handle.local_addr(),
        "GET /public/api/projects/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n\r\n",
    )
    .await;
    assert!(bytes.is_empty(), "got {:?}", String::from_utf8_lossy(&bytes));
    assert!(env.admin.stats().await.unwrap().faults_injected.reset >= 2);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn a_dropped_start_response_still_creates_the_job() {
    let env = Env::new(config("")).await;
    env.admin
        .set_faults(&Faults {
            drop_start_responses: 1,
            ..Faults::default()
        })
        .await
        .unwrap();
    // The default mode closes the connection: the caller gets no status and no job id.
    let lost = env
        .http
        .post(env.url("/projects/P/jobs/"))
        .basic_auth(KEY, Some(""))
        .body(r#"{"outputs":[{"id":"slow"}]}"#)
        .send()
        .await;
    assert!(lost.is_err());
    let jobs = env.admin.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "the job exists although its response was lost");
    assert_eq!(jobs[0].api_key_id, "tester");
    assert_eq!(env.admin.faults().await.unwrap().drop_start_responses, 0);
    // The next start is answered normally.
    assert_eq!(
        env.start(json!({"outputs": [{"id": "slow"}]})).await.status(),
        StatusCode::OK
    );
    env.admin
        .set_faults(&Faults {
            drop_start_responses: 1,
            drop_start_response_mode: Some(DropMode::GatewayTimeout),
            ..Faults::default()
        })
        .await
        .unwrap();
    assert_eq!(
        env.start(json!({"outputs": [{"id": "slow"}]})).await.status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.jobs_started, 3);
    assert_eq!(stats.faults_injected.dropped_start_responses, 2);
    assert_eq!(env.admin.jobs().await.unwrap().len(), 3);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn the_default_dropped_start_is_a_reset_seen_by_the_client() {
    let env = Env::new(config("")).await;
    env.admin
        .set_faults(&Faults {
            drop_start_responses: 1,
            ..Faults::default()
        })
        .await
        .unwrap();
    let result = env
        .http
        .post(env.url("/projects/P/jobs/"))
        .basic_auth(KEY, Some(""))
        .body(r#"{"outputs":[{"id":"slow"}]}"#)
        .send()
        .await;
    assert!(result.is_err(), "expected a transport error, got {result:?}");
    assert_eq!(env.admin.jobs().await.unwrap().len(), 1);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn latency_is_added_to_dss_calls_only() {
    let env = Env::new(config("")).await;
    env.admin
        .set_faults(&Faults {
            latency_ms: 150,
            ..Faults::default()
        })
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(env.get("/projects/").await.status(), StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let t = Instant::now();
    env.admin.stats().await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(150));
    env.handle.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_by_route_template_and_status() {
    let env = Env::new(config("")).await;
    let id = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await;
    env.status(&id).await;
    env.get_json(&format!("/projects/P/jobs/{id}")).await;
    env.get("/projects/NOPE/jobs/").await;
    env.get("/nothing/here").await;
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.requests_total, 5);
    assert_eq!(stats.requests_by_route["POST /projects/{pk}/jobs/"], 1);
    assert_eq!(stats.requests_by_route["GET /projects/{pk}/jobs/{id}/"], 2);
    assert_eq!(stats.requests_by_route["GET /projects/{pk}/jobs/"], 1);
    assert_eq!(stats.requests_by_route["GET unmatched"], 1);
    assert_eq!(stats.responses_by_status["200"], 3);
    assert_eq!(stats.responses_by_status["404"], 2);
    assert_eq!(stats.jobs_started, 1);
    assert!(stats.peak_requests_per_second >= 1);
    assert_eq!(stats.requests_per_second.iter().map(|(_, n)| n).sum::<u64>(), 5);
    env.admin.reset().await.unwrap();
    let stats = env.admin.stats().await.unwrap();
    assert_eq!((stats.requests_total, stats.jobs_started), (0, 0));
    assert!(env.admin.jobs().await.unwrap().is_empty());
    env.handle.shutdown().await;
}

#[tokio::test]
async fn admin_finish_ends_jobs_at_once() {
    let env = Env::new(config(", maxRunningActivities: 1")).await;
    let running = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await;
    let queued = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await;
    // A status call on a running job is not the moment its end was learned.
    assert_eq!(env.status(&running).await["baseStatus"]["state"], "RUNNING");
    let rec = env
        .admin
        .finish_with(
            "P",
            &queued,
            &FinishRequest {
                state: FinishState::Failed,
                message: Some("disk full".into()),
                warnings: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rec.state, "FAILED");
    assert_eq!(rec.activities[0].state, "FAILED");
    let log = env
        .get(&format!("/projects/P/jobs/{queued}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert!(log.trim_end().ends_with("disk full"), "{log}");
    let rec = env
        .admin
        .finish_with(
            "P",
            &running,
            &FinishRequest {
                state: FinishState::Done,
                message: None,
                warnings: Some(4),
            },
        )
        .await
        .unwrap();
    assert_eq!((rec.state.as_str(), rec.warnings_count), ("DONE", 4));
    assert_eq!(rec.end_read_time, 0, "nobody has read the end yet");
    assert_eq!(env.status(&running).await["baseStatus"]["warningsCount"], 4);
    // Finishing a finished job is a conflict; an unknown job is not found.
    let again = env
        .admin
        .finish("P", &running, FinishState::Aborted)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("409"), "{again}");
    assert!(
        env.admin
            .finish("P", "nope", FinishState::Done)
            .await
            .unwrap_err()
            .to_string()
            .contains("404")
    );
    assert_eq!(env.get("/jobs/running/").await.status(), StatusCode::OK);
    let records = env.admin.project_jobs("P").await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].initiator, "API (tester)");
    // That listing was the first to leave both ended jobs out.
    for r in &records {
        assert!(r.end_listed_time >= r.end_time && r.end_time > 0, "{r:?}");
    }
    // The first status call that found the job ended is when a client could learn it; reading the
    // log of the other job is not such a call.
    let read = |id: &str| records.iter().find(|r| r.id == id).unwrap().clone();
    let (done, failed) = (read(&running), read(&queued));
    assert!(
        done.end_read_time >= done.end_time && done.end_time > 0,
        "{done:?}"
    );
    assert_eq!(failed.end_read_time, 0, "{failed:?}");
    env.status(&running).await;
    let again = env.admin.project_jobs("P").await.unwrap();
    let first = again.iter().find(|r| r.id == running).unwrap();
    assert_eq!(
        first.end_read_time, done.end_read_time,
        "only the first read counts"
    );
    env.get("/jobs/running/").await;
    let listed = env.admin.project_jobs("P").await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.end_listed_time).collect::<Vec<_>>(),
        records.iter().map(|r| r.end_listed_time).collect::<Vec<_>>(),
        "only the first listing counts"
    );
    env.handle.shutdown().await;
}

#[tokio::test]
async fn keys_can_be_added_and_revoked_at_run_time() {
    let env = Env::new(config("")).await;
    let probe = |key: &'static str| {
        let req = env.http.get(env.url("/projects/")).basic_auth(key, Some(""));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(probe("rotated-key").await, StatusCode::UNAUTHORIZED);
    let spec = KeySpec {
        key: "rotated-key".into(),
        projects: [("P".to_owned(), vec!["READ_CONF".to_owned()])].into(),
        ..KeySpec::default()
    };
    env.admin.put_key("rotated", &spec).await.unwrap();
    assert_eq!(probe("rotated-key").await, StatusCode::OK);
    // Replacing a key by id retires its old secret.
    env.admin
        .put_key(
            "rotated",
            &KeySpec {
                key: "rotated-key-2".into(),
                ..spec.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(probe("rotated-key").await, StatusCode::UNAUTHORIZED);
    assert_eq!(probe("rotated-key-2").await, StatusCode::OK);
    env.admin.delete_key("rotated").await.unwrap();
    assert_eq!(probe("rotated-key-2").await, StatusCode::UNAUTHORIZED);
    assert!(env.admin.delete_key("rotated").await.is_err());
    env.handle.shutdown().await;
}

#[tokio::test]
async fn time_scale_speeds_builds_up() {
    let mut cfg = config("");
    cfg.instance.time_scale = 1000.0;
    let env = Env::new(cfg).await;
    let t = Instant::now();
    let id = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await; // one hour, scaled to 3.6 s
    env.admin.finish("P", &id, FinishState::Aborted).await.unwrap();
    let quick = env.start_ok("RECURSIVE_FORCED_BUILD", "scored").await;
    assert_eq!(env.wait_for(&quick, &["DONE", "FAILED"]).await, "FAILED");
    assert!(t.elapsed() < Duration::from_secs(2));
    env.handle.shutdown().await;
}

#[tokio::test]
async fn malformed_input_never_breaks_the_server() {
    let env = Env::new(config("")).await;
    let huge = "x".repeat(3 * 1024 * 1024);
    let resp = env
        .http
        .post(env.url("/projects/P/jobs/"))
        .basic_auth(KEY, Some(""))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.json::<Value>().await.unwrap()["errorType"].is_string());
    let garbage = raw_exchange(env.handle.local_addr(), "NOT HTTP AT ALL\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&garbage).starts_with("HTTP/1.1 400") || garbage.is_empty());
    let resp = env
        .http
        .get(env.url("/projects/P/jobs/%FF%FE/"))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    assert!(resp.json::<Value>().await.unwrap()["errorType"].is_string());
    assert_eq!(env.get("/projects/").await.status(), StatusCode::OK);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let env = Env::new(config("")).await;
    let addr = env.handle.local_addr();
    assert_eq!(env.get("/projects/").await.status(), StatusCode::OK);
    env.handle.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn the_shipped_example_config_is_valid() {
    let cfg = Config::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/emulator.yaml"
    )))
    .unwrap();
    assert!(
        cfg.api_keys
            .iter()
            .any(|k| k.key == "demo-operator-key" && k.id == "kube-dss-operator")
    );
    let env = Env::new(cfg).await;
    let resp = env
        .http
        .post(format!("{}/dip/publicapi/projects/ANALYTICS/jobs/", env.handle.base_url()))
        .basic_auth("demo-operator-key", Some(""))
        .body(r#"{"type":"NON_RECURSIVE_FORCED_BUILD","outputs":[{"id":"orders_clean","type":"DATASET","partition":"NP"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    env.handle.shutdown().await;
}

#[tokio::test]
async fn a_separate_admin_listener_keeps_the_admin_api_away_from_dss_callers() {
    let handle = spawn_with(
        config(""),
        Listen {
            dss: "127.0.0.1:0".parse().unwrap(),
            admin: Some("127.0.0.1:0".parse().unwrap()),
        },
    )
    .await
    .unwrap();
    assert_ne!(handle.admin_url(), handle.base_url());
    let http = Client::new();
    // Not on the DSS listener, with or without a key.
    for path in ["/__emulator/healthz", "/__emulator/jobs", "/__emulator/stats"] {
        let resp = http
            .get(format!("{}{path}", handle.base_url()))
            .basic_auth(KEY, Some(""))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // On its own listener, which serves nothing else.
    let admin = AdminClient::new(handle.admin_url());
    assert!(admin.jobs().await.unwrap().is_empty());
    let dss_on_admin = http
        .get(format!("{}/public/api/projects/", handle.admin_url()))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(dss_on_admin.status(), StatusCode::NOT_FOUND);
    let projects = http
        .get(format!("{}/public/api/projects/", handle.base_url()))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(projects.status(), StatusCode::OK);
    handle.shutdown().await;
}

#[tokio::test]
async fn an_inconsistent_config_parses_but_does_not_start() {
    let cycle = Config::from_yaml(
        "projects:\n- projectKey: P\n  datasets: [{name: a}, {name: b}]\n  recipes:\n  - {name: r1, inputs: [a], outputs: [b]}\n  - {name: r2, inputs: [b], outputs: [a]}\n",
    )
    .unwrap();
    let err = spawn(cycle, "127.0.0.1:0".parse().unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
}

#[tokio::test]
async fn a_gateway_answers_chosen_routes_with_a_bare_html_404_for_its_window() {
    let env = Env::new(config("")).await;
    let id = env.start_ok("NON_RECURSIVE_FORCED_BUILD", "slow").await;
    let routes = [
        "GET /projects/{pk}/jobs/{id}/",
        "GET /projects/{pk}/jobs/running/",
        "POST /projects/{pk}/jobs/{id}/abort",
    ];
    let set = env
        .admin
        .set_faults(&Faults {
            gateway: Some(GatewayFault {
                window_ms: 1500,
                routes: routes.iter().map(|r| r.to_string()).collect(),
                ..GatewayFault::default()
            }),
            ..Faults::default()
        })
        .await
        .unwrap();
    let left = set.gateway.unwrap().window_ms;
    assert!(left > 0 && left <= 1500, "{left} ms left");
    let abort = || {
        env.http
            .post(env.url(&format!("/projects/P/jobs/{id}/abort")))
            .basic_auth(KEY, Some(""))
            .send()
    };
    let answers = [
        env.get(&format!("/projects/P/jobs/{id}/")).await,
        env.get("/projects/P/jobs/running/").await,
        abort().await.unwrap(),
    ];
    for resp in answers {
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["content-type"], "text/html");
        let body = resp.text().await.unwrap();
        assert!(body.contains("<h1>404 Not Found</h1>"), "{body}");
        assert!(
            serde_json::from_str::<Value>(&body).is_err(),
            "no DSS JSON error: {body}"
        );
    }
    // Other routes reach DSS, and the job was neither found missing nor aborted by the gateway.
    assert_eq!(env.get("/projects/").await.status(), StatusCode::OK);
    assert_eq!(env.admin.jobs().await.unwrap()[0].state, "RUNNING");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(env.state(&id).await, "RUNNING", "the window closed");
    assert_eq!(env.admin.faults().await.unwrap().gateway.unwrap().window_ms, 0);
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.faults_injected.gateway, 3);
    assert_eq!(stats.responses_by_status["404"], 3);

    // A 502 page at a rate instead of a window.
    env.admin
        .set_faults(&Faults {
            gateway: Some(GatewayFault {
                status: Some(502),
                rate: 1.0,
                routes: vec![routes[0].to_string()],
                ..GatewayFault::default()
            }),
            ..Faults::default()
        })
        .await
        .unwrap();
    let resp = env.get(&format!("/projects/P/jobs/{id}/")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.text().await.unwrap().contains("502 Bad Gateway"));
    assert_eq!(
        env.get("/projects/P/jobs/running/").await.status(),
        StatusCode::OK
    );
    // A gateway answers 404 or 5xx only, and a bare errorStatus stays 5xx.
    for bad in [
        json!({"gateway": {"status": 200}}),
        json!({"gateway": {"rate": 2.0}}),
        json!({"errorStatus": 404, "errorRate": 1.0}),
    ] {
        let resp = env
            .http
            .put(format!("{}/__emulator/faults", env.handle.base_url()))
            .body(bad.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    env.handle.shutdown().await;
}

#[tokio::test]
async fn a_hung_emulator_accepts_calls_and_answers_none_until_the_hang_is_lifted() {
    let env = Env::new(config("")).await;
    env.admin
        .set_faults(&Faults {
            hang: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    // Every route hangs: the call is accepted and not a byte comes back.
    for path in ["/projects/", "/projects/P/jobs/"] {
        let err = env
            .http
            .get(env.url(path))
            .basic_auth(KEY, Some(""))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{path}: {err:?}");
    }
    let mut stream = tokio::net::TcpStream::connect(env.handle.local_addr())
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /public/api/instance-info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    assert!(read.is_err(), "no answer while hung, got {read:?}");
    // The admin API still answers, and counts the held calls.
    assert_eq!(env.admin.stats().await.unwrap().faults_injected.hung, 3);
    // A held call is served once the hang is lifted.
    let held = tokio::spawn({
        let (http, url) = (env.http.clone(), env.url("/projects/"));
        async move { http.get(url).basic_auth(KEY, Some("")).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished());
    env.admin.clear_faults().await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held call is answered once the hang is lifted")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A call held when the emulator stops ends without an answer, and does not delay the stop.
    env.admin
        .set_faults(&Faults {
            hang: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    let held = tokio::spawn({
        let (http, url) = (env.http.clone(), env.url("/projects/"));
        async move { http.get(url).basic_auth(KEY, Some("")).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    env.handle.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(held.await.unwrap().is_err());
}
