//! A small DSS-shaped HTTP server for the client and CLI tests, faithful to `dss-api.md`: both API
//! prefixes, Basic key auth, the official paths with their trailing slashes, the documented list-item
//! shape for `/jobs/` and the `jobId`/`projectKey` shape for the running lists, `baseStatus` status
//! documents, JSON error bodies, `text/plain; charset=utf-8` logs. Unknown jobs answer 500 "does not
//! exist", as real DSS is reported to do.
//!
//! Tests can queue faults (any status, headers, body, or a delay) that replace the next answers, and
//! read every request as it arrived (raw path, headers, body).

// Test code: a failed unwrap is a failed test, and each test crate uses only part of this module.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};

/// The key the server accepts unless a test changes it.
pub const KEY: &str = "test-key-Zq8vN3xK0pL5";

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// The raw (still percent-encoded) path.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// An answer that replaces the next one.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Sleep this long before answering (timeouts). With `status == 0` the normal answer follows.
    pub delay: Option<Duration>,
}

impl Fault {
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            ..Self::default()
        }
    }
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A job the server knows.
#[derive(Clone, Debug)]
pub struct Job {
    pub project: String,
    pub id: String,
    pub state: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub warnings: u64,
    pub def: Value,
    /// Status polls left before the job ends; `None`: it never ends by itself.
    pub polls_left: Option<u32>,
    pub final_state: String,
    pub log: String,
}

impl Job {
    fn stable(&self) -> bool {
        matches!(self.state.as_str(), "DONE" | "FAILED" | "ABORTED")
    }

    fn documented_item(&self) -> Value {
        json!({
            "def": self.def,
            "endTime": self.end_ms,
            "stableState": self.stable(),
            "startTime": self.start_ms,
            "state": self.state,
            "warningsCount": self.warnings,
        })
    }

    fn running_item(&self) -> Value {
        json!({
            "jobId": self.id,
            "projectKey": self.project,
            "endTime": self.end_ms,
            "stableState": self.stable(),
            "startTime": self.start_ms,
            "state": self.state,
            "warningsCount": self.warnings,
        })
    }
}

#[derive(Debug)]
pub struct Inner {
    pub key: String,
    pub projects: Vec<String>,
    pub jobs: Vec<Job>,
    pub requests: Vec<Recorded>,
    pub faults: VecDeque<Fault>,
    pub started: u32,
}

/// Size of the log of jobs whose id contains "biglog" (above the client's 16 MiB cap).
pub const BIG_LOG_BYTES: usize = 17 * 1024 * 1024;

/// A running test server.
#[derive(Clone)]
pub struct TestDss {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<Inner>>,
}

impl TestDss {
    /// `http://127.0.0.1:PORT` (no prefix).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&self.base_url()).unwrap()
    }

    pub fn push_fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    pub fn set_key(&self, key: &str) {
        self.state.lock().unwrap().key = key.to_owned();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    pub fn job(&self, id: &str) -> Option<Job> {
        self.state
            .lock()
            .unwrap()
            .jobs
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    pub fn add_job(&self, job: Job) {
        self.state.lock().unwrap().jobs.push(job);
    }
}

fn ms(date: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(date)
        .unwrap()
        .timestamp_millis()
}

/// A job as DSS lists it, in the documentation's shape.
pub fn seeded_job(
    project: &str,
    output: &str,
    state: &str,
    initiated: &str,
    started: i64,
    ended: i64,
) -> Job {
    let stamp = initiated.replace(':', "-").trim_end_matches('Z').to_owned();
    let id = format!("build_{output}_NP_{stamp}");
    Job {
        project: project.to_owned(),
        id: id.clone(),
        state: state.to_owned(),
        start_ms: started,
        end_ms: ended,
        warnings: 0,
        def: json!({
            "id": id,
            "initiationTimestamp": ms(initiated),
            "initiator": "API (aa)",
            "mailNotification": false,
            "name": format!("build_{output}_NP"),
            "outputs": [{"targetDataset": output, "targetDatasetProjectKey": project,
                         "targetPartition": "NP", "type": "DATASET"}],
            "projectKey": project,
            "refreshHiveMetastore": false,
            "refreshIntermediateMirrors": true,
            "refreshTargetMirrors": true,
            "triggeredFrom": "API",
            "type": "NON_RECURSIVE_FORCED_BUILD"
        }),
        polls_left: None,
        final_state: state.to_owned(),
        log: format!("[2015/09/28-09:17:37.455] [main] [INFO] [dku.job] - building {output}\n"),
    }
}

/// The jobs every server starts with, in project `TEST_PROJECT` (plus one in `IMPALA`).
pub fn seed_jobs() -> Vec<Job> {
    let t = ms("2015-09-28T09:17:37.455Z");
    vec![
        seeded_job(
            "IMPALA",
            "cat_train_hdfs",
            "ABORTED",
            "2015-09-28T09:17:37.455Z",
            0,
            0,
        ),
        seeded_job(
            "TEST_PROJECT",
            "old_failure",
            "FAILED",
            "2015-09-20T10:00:00.000Z",
            t,
            t + 1000,
        ),
        seeded_job(
            "TEST_PROJECT",
            "new_failure",
            "FAILED",
            "2015-09-25T10:00:00.000Z",
            t,
            t + 2000,
        ),
        seeded_job(
            "TEST_PROJECT",
            "good",
            "DONE",
            "2015-09-26T10:00:00.000Z",
            t,
            t + 3000,
        ),
        seeded_job(
            "TEST_PROJECT",
            "busy",
            "RUNNING",
            "2015-09-27T10:00:00.000Z",
            t,
            0,
        ),
        seeded_job(
            "TEST_PROJECT",
            "queued",
            "NOT_STARTED",
            "2015-09-27T11:00:00.000Z",
            0,
            0,
        ),
    ]
}

pub async fn spawn() -> TestDss {
    let state = Arc::new(Mutex::new(Inner {
        key: KEY.to_owned(),
        projects: vec!["TEST_PROJECT".into(), "IMPALA".into(), "OTHER".into()],
        jobs: seed_jobs(),
        requests: Vec::new(),
        faults: VecDeque::new(),
        started: 0,
    }));
    let app = Router::new().fallback(handle).with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TestDss { addr, state }
}

fn error(status: u16, error_type: &str, message: &str) -> Response {
    let body = json!({"errorType": error_type, "message": message, "detailedMessage": message});
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_ok(value: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

async fn handle(
    State(state): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method: method.clone(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers.clone(),
            body: body.to_vec(),
        });
        s.faults.pop_front()
    };
    if let Some(fault) = fault {
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        if fault.status != 0 {
            let mut response = (StatusCode::from_u16(fault.status).unwrap(), fault.body).into_response();
            for (name, value) in fault.headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            return response;
        }
    }

    // Authentication: Basic base64("<key>:").
    let expected_key = state.lock().unwrap().key.clone();
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .is_some_and(|creds| {
            creds
                .split_once(':')
                .is_some_and(|(user, _)| user == expected_key)
        });
    if !authorized {
        return error(
            401,
            "com.dataiku.dip.exceptions.UnauthorizedException",
            "Invalid API key",
        );
    }

    // Everything after the API prefix (which may follow a sub-path).
    let path = uri.path();
    let rest = ["/public/api/", "/dip/publicapi/"]
        .iter()
        .find_map(|prefix| path.find(prefix).map(|i| &path[i + prefix.len()..]));
    let Some(rest) = rest else {
        return error(404, "NotFound", "no such API path");
    };
    let segments: Vec<String> = rest.split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = uri.query().unwrap_or("");

    let mut s = state.lock().unwrap();
    let project_exists = |s: &Inner, pk: &str| s.projects.iter().any(|p| p == pk);
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["projects", ""]) => json_ok(Value::Array(
            s.projects
                .iter()
                .map(|p| json!({"projectKey": p, "name": p}))
                .collect(),
        )),
        (Method::GET, ["auth", "info"]) => {
            json_ok(json!({"authIdentifier": "test-key-id", "groups": ["data"]}))
        }
        (Method::GET, ["jobs", "running", ""]) => {
            let all_users = query.contains("allUsers=True");
            let items: Vec<Value> = s
                .jobs
                .iter()
                .filter(|j| !j.stable())
                .filter(|j| all_users || j.project != "IMPALA")
                .map(Job::running_item)
                .collect();
            json_ok(Value::Array(items))
        }
        (_, ["projects", pk, ..]) if !project_exists(&s, pk) => error(
            404,
            "com.dataiku.dip.exceptions.UnknownObjectException",
            &format!("Project {pk} does not exist"),
        ),
        (Method::GET, ["projects", pk, "jobs", ""]) => json_ok(Value::Array(
            s.jobs
                .iter()
                .filter(|j| j.project == *pk)
                .map(Job::documented_item)
                .collect(),
        )),
        (Method::GET, ["projects", pk, "jobs", "running", ""]) => json_ok(Value::Array(
            s.jobs
                .iter()
                .filter(|j| j.project == *pk && !j.stable())
                .map(Job::running_item)
                .collect(),
        )),
        (Method::POST, ["projects", pk, "jobs", ""]) => start_job(&mut s, pk, &body),
        (_, ["projects", pk, "jobs", id, tail @ ..]) => {
            let pk = pk.to_string();
            let Some(job) = s.jobs.iter_mut().find(|j| j.project == pk && j.id == *id) else {
                return error(
                    500,
                    "com.dataiku.dip.exceptions.UnknownObjectException",
                    &format!("Job {id} does not exist"),
                );
            };
            match (method, tail) {
                (Method::GET, [""]) => {
                    if let Some(left) = job.polls_left {
                        if left == 0 {
                            job.state = job.final_state.clone();
                            job.end_ms = job.start_ms + 5000;
                        } else {
                            job.polls_left = Some(left - 1);
                            job.state = "RUNNING".into();
                        }
                    }
                    let activity = format!("compute_{}_NP", job.id);
                    json_ok(json!({
                        "baseStatus": {
                            "def": job.def, "state": job.state, "stableState": job.stable(),
                            "startTime": job.start_ms, "endTime": job.end_ms, "warningsCount": job.warnings,
                            "activities": {activity: {"state": job.state}}
                        },
                        "globalState": {"done": u8::from(job.state == "DONE"), "failed": u8::from(job.state == "FAILED"),
                                        "running": u8::from(job.state == "RUNNING"), "total": 1}
                    }))
                }
                (Method::POST, ["abort"]) => {
                    if !job.stable() {
                        job.state = "ABORTED".into();
                        job.polls_left = None;
                    }
                    json_ok(json!({}))
                }
                (Method::GET, ["log"]) => {
                    let activity = query.strip_prefix("activity=").map(decode);
                    let text = match activity {
                        Some(a) => format!("activity {a} log of {}\n", job.id),
                        None if job.id.contains("biglog") => {
                            let mut log = "HEAD-MARKER\n".to_owned();
                            log.push_str(&"x".repeat(BIG_LOG_BYTES));
                            log.push_str("\nTAIL-MARKER é\n");
                            log
                        }
                        None => job.log.clone(),
                    };
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        text,
                    )
                        .into_response()
                }
                _ => error(404, "NotFound", "no such route"),
            }
        }
        _ => error(404, "NotFound", "no such route"),
    }
}

fn start_job(s: &mut Inner, pk: &str, body: &[u8]) -> Response {
    let Ok(def) = serde_json::from_slice::<Value>(body) else {
        return error(
            400,
            "com.dataiku.dip.exceptions.BadRequestException",
            "invalid JSON body",
        );
    };
    let outputs = def
        .get("outputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(first) = outputs.first() else {
        return error(
            400,
            "com.dataiku.dip.exceptions.BadRequestException",
            "The job has no outputs",
        );
    };
    let output = first
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let partition = first
        .get("partition")
        .and_then(Value::as_str)
        .unwrap_or("NP")
        .to_owned();
    s.started += 1;
    let id = format!("build_{output}_{partition}_2026-11-29T10-12-03.{:03}", s.started);
    let now = chrono::Utc::now().timestamp_millis();
    let stored = json!({
        "id": id,
        "name": format!("build_{output}_{partition}"),
        "projectKey": pk,
        "type": def.get("type").cloned().unwrap_or(Value::Null),
        "initiator": "API (test-key-id)",
        "initiationTimestamp": now,
        "triggeredFrom": "API",
        "outputs": outputs.iter().map(|o| json!({
            "type": o.get("type").and_then(Value::as_str).unwrap_or("DATASET"),
            "targetDataset": o.get("id"),
            "targetDatasetProjectKey": o.get("projectKey").and_then(Value::as_str).unwrap_or(pk),
            "targetPartition": o.get("partition").and_then(Value::as_str).unwrap_or("NP"),
        })).collect::<Vec<_>>(),
    });
    let (polls_left, final_state) = if output.contains("hang") {
        (Some(u32::MAX), "RUNNING")
    } else if output.contains("fail") {
        (Some(2), "FAILED")
    } else {
        (Some(2), "DONE")
    };
    s.jobs.push(Job {
        project: pk.to_owned(),
        id: id.clone(),
        state: "NOT_STARTED".into(),
        start_ms: now,
        end_ms: 0,
        warnings: 0,
        def: stored.clone(),
        polls_left,
        final_state: final_state.into(),
        log: format!("[2026/11/29-10:12:03.000] [job] [INFO] [dku.job] - building {output}\n"),
    });
    json_ok(stored)
}
