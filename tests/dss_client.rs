//! `DssClient` against a DSS-shaped HTTP server on loopback (`tests/support`).

// Test code: a failed unwrap is a failed test (helpers included).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use kube_dss::dss::{
    ApiKey, ApiPrefix, BuildType, Category, ClientConfig, DssClient, Error, JobDefinitionBuilder, JobState,
    JobWaiter, Limits, LogTailLimits, ObjectType, Operation, Outcome, RequestObserver,
};
use support::{Fault, KEY, TestDss};

fn config(server: &TestDss) -> ClientConfig {
    let mut config = ClientConfig::new(server.url(), ApiKey::from(KEY));
    config.request_timeout = Duration::from_secs(5);
    config.limits = Limits::new(1000.0, 16);
    config
}

async fn client() -> (TestDss, DssClient) {
    let server = support::spawn().await;
    let client = DssClient::new(config(&server)).unwrap();
    (server, client)
}

/// Asserts that nothing derived from the key shows in `text`.
fn assert_no_key(text: &str) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    assert!(!text.contains(KEY), "the key leaked: {text}");
    assert!(!text.contains(&basic), "the Basic credentials leaked: {text}");
}

#[derive(Default)]
struct Recorder {
    observed: Mutex<Vec<(Operation, Outcome)>>,
    throttled: Mutex<Vec<(Operation, Duration)>>,
}

impl RequestObserver for Recorder {
    fn observe(&self, operation: Operation, outcome: Outcome, _elapsed: Duration) {
        self.observed.lock().unwrap().push((operation, outcome));
    }
    fn throttled(&self, operation: Operation, wait: Duration) {
        self.throttled.lock().unwrap().push((operation, wait));
    }
}

#[tokio::test]
async fn list_project_keys_sends_basic_key_auth_and_json_accept_on_the_official_path() {
    let (server, client) = client().await;
    let keys = client.list_project_keys().await.unwrap();
    assert_eq!(keys, ["TEST_PROJECT", "IMPALA", "OTHER"]);
    let request = &server.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/public/api/projects/");
    let auth = request.headers["authorization"].to_str().unwrap();
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    assert_eq!(auth, format!("Basic {expected}"));
    assert_eq!(request.headers["accept"], "application/json");
    assert!(
        request.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("kube-dss/")
    );
}

#[tokio::test]
async fn every_path_matches_the_python_client_with_either_prefix() {
    let server = support::spawn().await;
    let mut cfg = config(&server);
    cfg.prefix = ApiPrefix::DipPublicApi;
    let client = DssClient::new(cfg).unwrap();
    let job = "build_good_NP_2015-09-26T10-00-00.000";
    client.list_project_keys().await.unwrap();
    client.auth_info().await.unwrap();
    client.list_jobs("TEST_PROJECT").await.unwrap();
    client.list_running_jobs("TEST_PROJECT").await.unwrap();
    client.list_all_running_jobs(true).await.unwrap();
    client.list_all_running_jobs(false).await.unwrap();
    client.get_status("TEST_PROJECT", job).await.unwrap();
    client.get_log("TEST_PROJECT", job, None).await.unwrap();
    client
        .get_log("TEST_PROJECT", job, Some("compute_good_NP"))
        .await
        .unwrap();
    client.abort("TEST_PROJECT", job).await.unwrap();
    let definition =
        JobDefinitionBuilder::new(BuildType::NonRecursiveForcedBuild).with_output("ds", None, None, None);
    client
        .start_job("TEST_PROJECT", &definition.build())
        .await
        .unwrap();
    let seen: Vec<String> = server
        .requests()
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
    let p = "/dip/publicapi";
    assert_eq!(
        seen,
        [
            format!("GET {p}/projects/"),
            format!("GET {p}/auth/info"),
            format!("GET {p}/projects/TEST_PROJECT/jobs/"),
            format!("GET {p}/projects/TEST_PROJECT/jobs/running/"),
            format!("GET {p}/jobs/running/?allUsers=True"),
            format!("GET {p}/jobs/running/?allUsers=False"),
            format!("GET {p}/projects/TEST_PROJECT/jobs/{job}/"),
            format!("GET {p}/projects/TEST_PROJECT/jobs/{job}/log"),
            format!("GET {p}/projects/TEST_PROJECT/jobs/{job}/log?activity=compute_good_NP"),
            format!("POST {p}/projects/TEST_PROJECT/jobs/{job}/abort"),
            format!("POST {p}/projects/TEST_PROJECT/jobs/"),
        ]
    );
}

#[tokio::test]
async fn a_base_url_with_a_sub_path_keeps_it() {
    let server = support::spawn().await;
    let mut cfg = config(&server);
    cfg.base_url = url::Url::parse(&format!("{}/dss/", server.base_url())).unwrap();
    let client = DssClient::new(cfg).unwrap();
    client.list_project_keys().await.unwrap();
    assert_eq!(server.requests()[0].path, "/dss/public/api/projects/");
}

#[tokio::test]
async fn job_ids_and_project_keys_are_percent_encoded_path_segments() {
    let (server, client) = client().await;
    let err = client
        .get_status("TEST_PROJECT", "id with space/and%sign?#x")
        .await
        .unwrap_err();
    assert_eq!(
        server.requests()[0].path,
        "/public/api/projects/TEST_PROJECT/jobs/id%20with%20space%2Fand%25sign%3F%23x/"
    );
    // The server decoded the id as one segment and says it does not exist, with a 500 like real DSS.
    assert_eq!(err.status(), Some(500));
    assert!(err.is_not_found());
    assert!(!err.is_retryable());
    assert_eq!(err.category(), "DssNotFound");
    assert!(
        err.to_string()
            .contains("Job id with space/and%sign?#x does not exist"),
        "{err}"
    );

    server.clear_requests();
    let err = client.list_jobs("ÉTÉ/..").await.unwrap_err();
    assert_eq!(
        server.requests()[0].path,
        "/public/api/projects/%C3%89T%C3%89%2F../jobs/"
    );
    assert_eq!(err.status(), Some(404));
    assert!(err.is_not_found());

    for bad in ["", ".", ".."] {
        let err = client.get_status("TEST_PROJECT", bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    operation: Operation::GetStatus,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn listings_decode_both_item_shapes() {
    let (_server, client) = client().await;
    let jobs = client.list_jobs("TEST_PROJECT").await.unwrap();
    assert_eq!(jobs.len(), 5);
    let failed: Vec<_> = jobs
        .iter()
        .filter(|j| j.state == JobState::Failed)
        .map(|j| j.job_id.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "build_old_failure_NP_2015-09-20T10-00-00.000",
            "build_new_failure_NP_2015-09-25T10-00-00.000"
        ]
    );
    assert!(jobs.iter().all(|j| j.project_key == "TEST_PROJECT"));
    let queued = jobs.iter().find(|j| j.state == JobState::NotStarted).unwrap();
    assert!(!queued.stable_state);
    assert_eq!(queued.start_time, None);
    assert_eq!(
        queued.definition.as_ref().unwrap().initiator.as_deref(),
        Some("API (aa)")
    );

    let running = client.list_running_jobs("TEST_PROJECT").await.unwrap();
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|j| j.definition.is_none() && !j.stable_state));
    let everywhere = client.list_all_running_jobs(true).await.unwrap();
    assert_eq!(everywhere.len(), 2);
}

#[tokio::test]
async fn start_sends_the_exact_dataikuapi_body_and_waits_until_done() {
    let (server, client) = client().await;
    let definition = JobDefinitionBuilder::new(BuildType::RecursiveBuild)
        .with_output("dataset_to_build", Some(ObjectType::Dataset), None, Some("NP"))
        .build();
    let started = client.start_job("TEST_PROJECT", &definition).await.unwrap();
    assert!(
        started.id.starts_with("build_dataset_to_build_NP_"),
        "{}",
        started.id
    );
    assert_eq!(started.raw["projectKey"], "TEST_PROJECT");
    let post = &server.requests()[0];
    assert_eq!(post.headers["content-type"], "application/json");
    assert_eq!(
        String::from_utf8(post.body.clone()).unwrap(),
        r#"{"type":"RECURSIVE_BUILD","refreshHiveMetastore":false,"outputs":[{"type":"DATASET","id":"dataset_to_build","projectKey":null,"partition":"NP"}],"autoUpdateSchemaBeforeEachRecipeRun":false}"#
    );

    let waiter = JobWaiter::new()
        .with_initial_delay(Duration::from_millis(5))
        .with_timeout(Some(Duration::from_secs(10)));
    let status = waiter.wait(&client, "TEST_PROJECT", &started.id).await.unwrap();
    assert_eq!(status.state, JobState::Done);
    assert_eq!(status.stable_state, Some(true));
    assert_eq!(status.activities.len(), 1);
    assert_eq!(status.global_state.as_ref().unwrap().done, 1);
    assert!(status.end_time.is_some());
}

#[tokio::test]
async fn a_failing_job_is_returned_not_raised_and_its_activity_log_read() {
    let (_server, client) = client().await;
    let definition = JobDefinitionBuilder::new(BuildType::NonRecursiveForcedBuild).with_output(
        "will_fail",
        None,
        None,
        None,
    );
    let started = client
        .start_job("TEST_PROJECT", &definition.build())
        .await
        .unwrap();
    let waiter = JobWaiter::new().with_initial_delay(Duration::from_millis(5));
    let status = waiter.wait(&client, "TEST_PROJECT", &started.id).await.unwrap();
    assert_eq!(status.state, JobState::Failed);
    let activity = status.failed_activities().next().unwrap();
    let log = client
        .get_log("TEST_PROJECT", &started.id, Some(&activity.id))
        .await
        .unwrap();
    assert_eq!(log, format!("activity {} log of {}\n", activity.id, started.id));
}

#[tokio::test]
async fn start_is_never_retried_on_any_error() {
    let (server, client) = client().await;
    let definition = JobDefinitionBuilder::new(BuildType::NonRecursiveForcedBuild)
        .with_output("ds", None, None, None)
        .build();
    for fault in [
        Fault::status(503, "<html>Service Unavailable</html>"),
        Fault::status(500, r#"{"message":"boom"}"#),
        Fault::status(429, "").header("retry-after", "0"),
        Fault::status(200, "not json"),
    ] {
        server.clear_requests();
        server.push_fault(fault);
        let err = client.start_job("TEST_PROJECT", &definition).await.unwrap_err();
        let posts = server.requests().iter().filter(|r| r.method == "POST").count();
        assert_eq!(posts, 1, "start was retried after {err}");
    }

    // A timeout: the job may exist, the client must not try again.
    let mut cfg = config(&server);
    cfg.request_timeout = Duration::from_millis(300);
    let short = DssClient::new(cfg).unwrap();
    server.clear_requests();
    server.push_fault(Fault::delay(Duration::from_secs(2)));
    let err = short.start_job("TEST_PROJECT", &definition).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: Operation::StartJob
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.category(), "DssTimeout");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn start_without_outputs_is_refused_before_sending() {
    let (server, client) = client().await;
    let err = client
        .start_job("TEST_PROJECT", &JobDefinitionBuilder::default().build())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn http_errors_keep_status_error_type_and_message() {
    let (server, client) = client().await;

    server.push_fault(Fault::status(
        403,
        r#"{"errorType":"com.dataiku.dip.exceptions.ForbiddenException","message":"Invalid API key"}"#,
    ));
    let err = client.list_jobs("TEST_PROJECT").await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(err.category(), "DssUnauthorized");
    assert_eq!(
        err.to_string(),
        "DSS list_jobs: HTTP 403: com.dataiku.dip.exceptions.ForbiddenException: Invalid API key"
    );

    let err = client.list_jobs("NOPE").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(matches!(&err, Error::Api { error_type: Some(t), .. } if t.ends_with("UnknownObjectException")));
    assert_eq!(err.category(), "DssNotFound");

    server.push_fault(
        Fault::status(502, "<html><body><h1>502 Bad Gateway</h1></body></html>")
            .header("content-type", "text/html"),
    );
    let err = client.list_jobs("TEST_PROJECT").await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.category(), "DssGatewayError");
    assert!(
        matches!(&err, Error::Api { body_excerpt, message: None, .. } if body_excerpt.contains("502 Bad Gateway"))
    );

    // A gateway's 404 (bare, or its HTML page while it reloads) never says that the job is gone.
    let job = "build_busy_NP_2015-09-27T10-00-00.000";
    for body in [
        "",
        "<html><head><title>404 Not Found</title></head><body>nginx</body></html>",
    ] {
        server.push_fault(Fault::status(404, body).header("content-type", "text/html"));
        let err = client.get_status("TEST_PROJECT", job).await.unwrap_err();
        assert_eq!(err.status(), Some(404));
        assert!(!err.is_not_found(), "{err}");
        assert!(err.is_retryable());
        assert_eq!(err.class(), Category::GatewayError);
    }
    // DSS's own answer about the same job, once it is really unknown, does.
    let err = client.get_status("TEST_PROJECT", "purged").await.unwrap_err();
    assert!(err.is_not_found() && !err.is_retryable(), "{err}");
    // A 403 page from something in front of DSS is not DSS refusing the key.
    server.push_fault(Fault::status(403, "<html><h1>403 Forbidden</h1></html>"));
    let err = client.get_status("TEST_PROJECT", job).await.unwrap_err();
    assert!(!err.is_unauthorized());
    assert_eq!(err.category(), "DssGatewayError");

    server.push_fault(Fault::status(500, ""));
    let err = client.get_status("TEST_PROJECT", "x").await.unwrap_err();
    assert_eq!(err.to_string(), "DSS get_status: HTTP 500");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_never_shown() {
    let server = support::spawn().await;
    server.set_key("another-key");
    let client = DssClient::new(config(&server)).unwrap();
    let err = client.list_project_keys().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.is_unauthorized());
    assert_no_key(&err.to_string());
    assert_no_key(&format!("{err:?}"));
    assert_no_key(&format!("{client:?}"));
    assert_no_key(&format!("{:?}", config(&server)));

    // A server (or proxy) echoing the credentials back: redacted.
    server.set_key(KEY);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    server.push_fault(Fault::status(
        400,
        &format!(r#"{{"errorType":"Bad","message":"key {KEY} rejected"}}"#),
    ));
    let err = client.list_project_keys().await.unwrap_err();
    assert_no_key(&err.to_string());
    assert_no_key(&format!("{err:?}"));
    server.push_fault(Fault::status(400, &format!("echo {KEY} / Basic {basic}")));
    let err = client.list_project_keys().await.unwrap_err();
    assert_no_key(&format!("{err:?}"));
}

#[tokio::test]
async fn key_rotation_applies_to_later_calls_and_clones() {
    let (server, client) = client().await;
    let clone = client.clone();
    server.set_key("rotated-key");
    assert!(clone.list_project_keys().await.unwrap_err().is_unauthorized());
    client.set_api_key(ApiKey::from("rotated-key"));
    assert_eq!(clone.list_project_keys().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_429_pauses_every_call_of_the_client_and_reports_the_wait() {
    let (server, client) = client().await;
    let recorder = Arc::new(Recorder::default());
    let observed = client.clone().with_observer(recorder.clone());
    server.push_fault(
        Fault::status(429, r#"{"errorType":"TooManyRequests","message":"slow down"}"#)
            .header("retry-after", "1"),
    );
    let err = observed.list_jobs("TEST_PROJECT").await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(err.category(), "DssRateLimited");
    assert!(err.is_retryable());

    // Another clone shares the budget and so the pause.
    let started = Instant::now();
    observed.list_project_keys().await.unwrap();
    client.list_project_keys().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let throttled = recorder.throttled.lock().unwrap().clone();
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0].0, Operation::ListProjects);
    assert!(throttled[0].1 >= Duration::from_millis(900));
    let observed_outcomes = recorder.observed.lock().unwrap().clone();
    assert_eq!(
        observed_outcomes,
        [
            (Operation::ListJobs, Outcome::RateLimited),
            (Operation::ListProjects, Outcome::Success)
        ]
    );
}

#[tokio::test]
async fn a_429_with_an_http_date_is_understood() {
    let (server, client) = client().await;
    let date = (chrono::Utc::now() + chrono::Duration::seconds(30))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    server.push_fault(Fault::status(429, "").header("retry-after", &date));
    let err = client.list_jobs("TEST_PROJECT").await.unwrap_err();
    let wait = err.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

#[tokio::test]
async fn the_observer_sees_one_outcome_per_call() {
    let (server, client) = client().await;
    let recorder = Arc::new(Recorder::default());
    let client = client.with_observer(recorder.clone());
    client.list_project_keys().await.unwrap();
    client.list_jobs("NOPE").await.unwrap_err();
    server.push_fault(Fault::status(503, ""));
    client.list_jobs("TEST_PROJECT").await.unwrap_err();
    server.push_fault(Fault::status(200, "<html>"));
    client.get_status("TEST_PROJECT", "x").await.unwrap_err();
    let outcomes: Vec<_> = recorder
        .observed
        .lock()
        .unwrap()
        .iter()
        .map(|(op, o)| (op.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("list_projects", "2xx"),
            ("list_jobs", "4xx"),
            ("list_jobs", "5xx"),
            ("get_status", "decode")
        ]
    );
}

#[tokio::test]
async fn unusable_success_answers_are_decode_errors() {
    let (server, client) = client().await;
    for body in [
        "<html>oops</html>",
        "",
        r#"{"baseStatus":null}"#,
        r#"{"globalState":{}}"#,
        "[]",
    ] {
        server.push_fault(Fault::status(200, body));
        let err = client.get_status("TEST_PROJECT", "j").await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Decode {
                    operation: Operation::GetStatus,
                    ..
                }
            ),
            "{body}: {err:?}"
        );
        assert_eq!(err.category(), "DssBadResponse");
        assert!(!err.is_retryable());
    }
    server.push_fault(Fault::status(200, r#"{"noId":true}"#));
    let def = JobDefinitionBuilder::default()
        .with_output("ds", None, None, None)
        .build();
    assert!(matches!(
        client.start_job("TEST_PROJECT", &def).await,
        Err(Error::Decode { .. })
    ));
    // Abort accepts any 2xx answer, even an empty one.
    server.push_fault(Fault::status(204, ""));
    client.abort("TEST_PROJECT", "j").await.unwrap();
}

#[tokio::test]
async fn an_unreachable_dss_is_a_transport_error_without_the_key() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = DssClient::new(ClientConfig::new(
        url::Url::parse(&url).unwrap(),
        ApiKey::from(KEY),
    ))
    .unwrap();
    let err = client.list_project_keys().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.category(), "DssUnreachable");
    let chain = format!("{err} {:?} {}", err, std::error::Error::source(&err).unwrap());
    assert_no_key(&chain);
}

#[tokio::test]
async fn a_tls_failure_is_its_own_category() {
    // HTTPS to a server that speaks plain HTTP: the handshake fails inside rustls.
    let server = support::spawn().await;
    let url = url::Url::parse(&format!("https://{}", server.addr)).unwrap();
    let client = DssClient::new(ClientConfig::new(url, ApiKey::from(KEY))).unwrap();
    let err = client.list_project_keys().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(err.class(), Category::Tls);
    assert_eq!(err.category(), "DssTlsError");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_invalid_ca_bundle_is_a_config_error() {
    let server = support::spawn().await;
    let mut cfg = config(&server);
    cfg.ca_pem = Some(b"not a certificate".to_vec());
    assert!(matches!(DssClient::new(cfg), Err(Error::InvalidConfig(_))));
}

#[tokio::test]
async fn abort_then_status_shows_aborted() {
    let (_server, client) = client().await;
    let job = "build_busy_NP_2015-09-27T10-00-00.000";
    client.abort("TEST_PROJECT", job).await.unwrap();
    assert_eq!(
        client.get_status("TEST_PROJECT", job).await.unwrap().state,
        JobState::Aborted
    );
}

#[tokio::test]
async fn a_huge_log_keeps_its_tail() {
    let (server, client) = client().await;
    let mut job = support::seeded_job("TEST_PROJECT", "biglog", "DONE", "2015-09-26T10:00:00.000Z", 1, 2);
    job.id = "biglog".into();
    server.add_job(job);
    let log = client.get_log("TEST_PROJECT", "biglog", None).await.unwrap();
    assert!(log.starts_with("[kube-dss: log truncated"));
    assert!(log.ends_with("TAIL-MARKER é\n"));
    assert!(!log.contains("HEAD-MARKER"));
    assert!(log.len() <= 16 * 1024 * 1024 + 100);
}

#[tokio::test]
async fn the_log_tail_keeps_the_final_error_and_never_the_key() {
    let (server, client) = client().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    let mut job = support::seeded_job(
        "TEST_PROJECT",
        "tailed",
        "FAILED",
        "2015-09-26T10:00:00.000Z",
        1,
        2,
    );
    job.id = "tailed".into();
    let long_line = "L".repeat(8000);
    job.log = format!(
        "[t] [main] [INFO] [dku.jobs] - Job tailed initiated with key {KEY}\n\
         [t] [act-1] [INFO] [dku.flow.recipe] - {long_line} echoed Basic {basic} and {KEY}\n\
         [t] [act-1] [ERROR] [dku.flow.activity] - Activity compute_tailed_NP FAILED\n\
         [t] [act-1] [ERROR] [dku.flow.activity] - Job failed: table cat_train is missing\n\
         [t] [main] [INFO] [dku.flow.jobrunner] - Job tailed finished\n"
    );
    server.add_job(job);
    let tail = client
        .get_log_tail("TEST_PROJECT", "tailed", None, LogTailLimits::new(4, 600))
        .await
        .unwrap();
    assert_no_key(&tail.text);
    assert!(tail.text.len() <= 600, "{} bytes", tail.text.len());
    assert!(tail.truncated);
    assert!(tail.text.starts_with('…'), "cut from the front: {}", tail.text);
    assert!(
        tail.text.contains("L echoed Basic *** and ***\n"),
        "{}",
        tail.text
    );
    assert!(
        tail.text
            .ends_with("[INFO] [dku.flow.jobrunner] - Job tailed finished"),
        "{}",
        tail.text
    );
    assert_eq!(
        tail.failure_message().as_deref(),
        Some("Job failed: table cat_train is missing")
    );
    assert_eq!(
        server.requests().last().unwrap().path,
        "/public/api/projects/TEST_PROJECT/jobs/tailed/log"
    );

    // A 17 MiB log: only its end is kept.
    let mut big = support::seeded_job("TEST_PROJECT", "biglog", "DONE", "2015-09-26T10:00:00.000Z", 1, 2);
    big.id = "biglog".into();
    server.add_job(big);
    let tail = client
        .get_log_tail("TEST_PROJECT", "biglog", None, LogTailLimits::default())
        .await
        .unwrap();
    assert!(
        tail.text.ends_with("TAIL-MARKER é"),
        "{}",
        &tail.text[tail.text.len() - 20..]
    );
    assert!(tail.text.len() <= 4096);
    assert!(tail.bytes_read > support::BIG_LOG_BYTES as u64);
}

#[tokio::test]
async fn a_search_keeps_only_the_jobs_it_accepts() {
    let (_server, client) = client().await;
    let search = client
        .search_jobs("TEST_PROJECT", 1, |job| job.state == JobState::Failed)
        .await
        .unwrap();
    assert_eq!(search.listed, 5);
    assert_eq!(search.total_matches, 2);
    assert_eq!(search.matches.len(), 1);
    assert_eq!(
        search.matches[0].job_id,
        "build_old_failure_NP_2015-09-20T10-00-00.000"
    );
    let err = client.search_jobs("NOPE", 5, |_| true).await.unwrap_err();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn answers_over_a_cap_are_clear_errors_naming_the_cap() {
    let (server, client) = client().await;
    let cases = [
        (
            "a listed item over 1 MiB",
            format!(
                r#"[{{"jobId":"j","projectKey":"P","pad":"{}"}}]"#,
                "x".repeat(1024 * 1024)
            ),
            "listed item 0 is larger than 1048576 bytes",
        ),
        (
            "more jobs than a whole listing may hold",
            format!(
                "[{}]",
                vec![r#"{"jobId":"j","projectKey":"P","state":"DONE"}"#; 10_001].join(",")
            ),
            "more than 10000 listed jobs",
        ),
    ];
    for (case, body, cap) in cases {
        server.push_fault(Fault::status(200, &body));
        let err = client.list_jobs("TEST_PROJECT").await.unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { limit, .. } if limit == cap),
            "{case}: {err:?}"
        );
        assert_eq!(err.category(), "DssBadResponse", "{case}");
        assert!(!err.is_retryable(), "{case}");
    }
    server.push_fault(Fault::status(200, &" ".repeat(16 * 1024 * 1024 + 1)));
    let err = client.get_status("TEST_PROJECT", "j").await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("the answer exceeds the client's cap: a body over 16777216 bytes"),
        "{err}"
    );
    // The same listing under the cap is fine.
    server.push_fault(Fault::status(
        200,
        r#"[{"jobId":"j","projectKey":"P","state":"DONE"}]"#,
    ));
    assert_eq!(client.list_jobs("TEST_PROJECT").await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_waiter_tolerates_a_few_transient_errors_and_gives_up_after_more() {
    let (server, client) = client().await;
    let def = JobDefinitionBuilder::default()
        .with_output("ds", None, None, None)
        .build();
    let started = client.start_job("TEST_PROJECT", &def).await.unwrap();
    server.push_fault(Fault::status(503, ""));
    server.push_fault(Fault::status(502, "<html>bad gateway</html>"));
    let waiter = JobWaiter::new()
        .with_initial_delay(Duration::from_millis(5))
        .with_max_transient_errors(2);
    assert_eq!(
        waiter
            .wait(&client, "TEST_PROJECT", &started.id)
            .await
            .unwrap()
            .state,
        JobState::Done
    );

    for _ in 0..3 {
        server.push_fault(Fault::status(503, ""));
    }
    let err = waiter
        .wait(&client, "TEST_PROJECT", &started.id)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));

    // A non-retryable error ends the wait at once.
    let err = waiter.wait(&client, "TEST_PROJECT", "missing").await.unwrap_err();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn the_waiter_times_out_with_the_last_state() {
    let (_server, client) = client().await;
    let def = JobDefinitionBuilder::default()
        .with_output("will_hang", None, None, None)
        .build();
    let started = client.start_job("TEST_PROJECT", &def).await.unwrap();
    let waiter = JobWaiter::new()
        .with_initial_delay(Duration::from_millis(20))
        .with_timeout(Some(Duration::from_millis(300)));
    let began = Instant::now();
    let err = waiter
        .wait(&client, "TEST_PROJECT", &started.id)
        .await
        .unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(2));
    match err {
        Error::WaitTimeout { job_id, last_state } => {
            assert_eq!(job_id, started.id);
            assert_eq!(last_state, Some(JobState::Running));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_budget_limits_real_requests() {
    let server = support::spawn().await;
    let mut cfg = config(&server);
    cfg.limits = Limits {
        requests_per_second: 20.0,
        burst: 1,
        max_in_flight: 2,
    };
    let client = DssClient::new(cfg).unwrap();
    let began = Instant::now();
    let calls = (0..6).map(|_| client.list_project_keys());
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    // One at once, then one every 50 ms.
    assert!(
        began.elapsed() >= Duration::from_millis(240),
        "{:?}",
        began.elapsed()
    );
    client.set_limits(Limits::new(1000.0, 8));
}
