//! The admin API routes under `/__emulator/` (no key, no faults). Wire types are in
//! [`super::admin`].

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State, rejection::BytesRejection},
    http::StatusCode,
    response::Response,
    routing::{get, post, put},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{
    admin::{FinishRequest, FinishState, KeySpec, ScenarioRecord},
    catalog::{ApiKey, check_key},
    config::ApiKeyConfig,
    faults::Faults,
    scenario_view,
    sim::{Finish, JobError, JobState},
    state::AppState,
    stats::Started,
    wire::{ApiError, P, error_type},
};
use crate::sync::lock;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({"ok": true})) }))
        .route("/jobs", get(jobs))
        .route("/jobs/{pk}/{id}/finish", post(finish))
        .route("/scenarios", get(scenarios))
        .route("/faults", get(get_faults).put(put_faults).delete(clear_faults))
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .route("/keys", get(list_keys))
        .route("/keys/{id}", put(put_key).delete(delete_key))
        .route("/config", get(config))
}

fn json<T: serde::Serialize>(value: &T) -> Result<Response, ApiError> {
    serde_json::to_vec(value)
        .map(|b| {
            axum::response::IntoResponse::into_response((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                b,
            ))
        })
        .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), error_type::BAD_REQUEST, e.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

async fn jobs(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let project: Option<String> = q.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "projectKey")
            .map(|(_, v)| v.into_owned())
    });
    let (world, _) = st.world();
    let sim = &world.jobs;
    let records: Vec<_> = sim
        .all_jobs()
        .into_iter()
        .filter(|j| project.as_ref().is_none_or(|p| *p == j.project))
        .map(|j| j.record(&sim.clock))
        .collect();
    json(&records)
}

/// The value of a query parameter.
fn param(q: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(q?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn scenarios(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let project = param(q.as_deref(), "projectKey");
    let scenario = param(q.as_deref(), "scenarioId");
    let (world, _) = st.world();
    let clock = world.clock();
    let mut records: Vec<ScenarioRecord> = world
        .scenarios
        .all()
        .filter(|((p, s), _)| {
            project.as_ref().is_none_or(|x| x == p) && scenario.as_ref().is_none_or(|x| x == s)
        })
        .map(|((p, s), state)| {
            let def = st.catalog.projects.get(p).and_then(|pr| pr.scenario(s));
            scenario_view::record(p, s, def, state, clock)
        })
        .collect();
    records.sort_by(|a, b| (&a.project_key, &a.scenario_id).cmp(&(&b.project_key, &b.scenario_id)));
    json(&records)
}

async fn finish(
    State(st): State<Arc<AppState>>,
    P((pk, id)): P<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: FinishRequest = parse(body)?;
    let finish = Finish {
        state: match req.state {
            FinishState::Done => JobState::Done,
            FinishState::Failed => JobState::Failed,
            FinishState::Aborted => JobState::Aborted,
        },
        message: req.message,
        warnings: req.warnings,
    };
    let answer = {
        let (mut world, now) = st.world();
        world.finish_job(&pk, &id, &finish, now).map_err(|e| match e {
            JobError::NotFound => ApiError::not_found(format!("Job {id} does not exist in project {pk}")),
            JobError::AlreadyFinished(s) => ApiError::new(
                StatusCode::CONFLICT,
                error_type::CONFLICT,
                format!("Job {id} is already finished ({})", s.as_str()),
            ),
        })?;
        let job = world
            .jobs
            .get(&pk, &id)
            .ok_or_else(|| ApiError::not_found(format!("Job {id} is gone")))?;
        json(&job.record(world.clock()))
    };
    st.wake.notify_one();
    answer
}

async fn get_faults(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    json(&lock(&st.faults).current())
}

async fn put_faults(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let faults: Faults = parse(body)?;
    faults.validate().map_err(ApiError::bad_request)?;
    let current = st.set_faults(faults);
    tracing::info!(faults = ?current, "faults changed");
    json(&current)
}

async fn clear_faults(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    json(&st.set_faults(Faults::default()))
}

async fn stats(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let counters = lock(&st.faults).counters.clone();
    let started = {
        let (world, _) = st.world();
        Started {
            jobs: world.jobs.jobs_started,
            trigger_fires: world.scenarios.fires_total,
            scenario_runs: world.scenarios.runs_started,
        }
    };
    let snapshot = lock(&st.stats).snapshot(counters, started, chrono::Utc::now().timestamp());
    json(&snapshot)
}

async fn reset(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    lock(&st.world).reset();
    *lock(&st.stats) = Default::default();
    lock(&st.faults).counters = Default::default();
    st.wake.notify_one();
    json(&json!({"reset": true}))
}

async fn list_keys(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    // Secrets are not listed: the list is for checking permissions.
    let keys: Vec<_> = st
        .key_list()
        .into_iter()
        .map(|k| json!({"id": k.config.id, "admin": k.config.admin, "groups": k.config.groups, "projects": k.config.projects}))
        .collect();
    json(&keys)
}

async fn put_key(
    State(st): State<Arc<AppState>>,
    P(id): P<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec: KeySpec = parse(body)?;
    let config = ApiKeyConfig {
        key: spec.key,
        id: id.clone(),
        admin: spec.admin,
        groups: spec.groups,
        projects: spec.projects,
    };
    check_key(&config).map_err(ApiError::bad_request)?;
    if st.key(&config.key).is_some_and(|k| k.config.id != id) {
        return Err(ApiError::bad_request(
            "this secret already belongs to another key id",
        ));
    }
    st.put_key(ApiKey { config });
    json(&json!({"id": id}))
}

async fn delete_key(State(st): State<Arc<AppState>>, P(id): P<String>) -> Result<Response, ApiError> {
    if st.delete_key(&id) {
        json(&json!({"id": id, "deleted": true}))
    } else {
        Err(ApiError::not_found(format!("API key {id} does not exist")))
    }
}

async fn config(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut config = st.config.clone();
    for k in &mut config.api_keys {
        k.key = "<redacted>".to_owned();
    }
    json(&config)
}
