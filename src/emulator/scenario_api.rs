//! The DSS scenarios API, as `dataikuapi/dss/scenario.py` (dataiku-api-client 15.2.0) speaks it:
//! list, run (a trigger fire), the fire and the run it started, the last runs and the runs by date,
//! one run with its step runs, the light status, abort, and the run and step logs. Served with the
//! other DSS routes under both API prefixes. `docs/dss-scenarios-api.md` is the protocol.
//!
//! Permissions (see `docs/emulator.md`): `READ_CONF` to read, `RUN_SCENARIOS` to run and abort.
//! Checks run in the order of the jobs API: credentials, project, permission, scenario.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State, rejection::BytesRejection},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, NaiveDate};
use serde_json::{Map, Value, json};

use super::{
    auth::Caller,
    catalog::Scenario,
    clock::Clock,
    faults::Lost,
    scenario_view as view,
    scenarios::{Fire, FireState, MANUAL_TRIGGER_ID, Run},
    state::AppState,
    wire::{ApiError, P, Query, both, dropped, error_type, to_json},
    world::World,
};
use crate::sync::lock;

const READ: &str = "READ_CONF";
const RUN: &str = "RUN_SCENARIOS";

/// The canonical route templates (the forms the official client sends), used as stats keys.
pub(crate) const ROUTES: &[&str] = &[
    "/projects/{pk}/scenarios/",
    "/projects/{pk}/scenarios/{id}/run",
    "/projects/{pk}/scenarios/{id}/get-run-for-trigger",
    "/projects/{pk}/scenarios/trigger/{id}/{trigger}",
    "/projects/{pk}/scenarios/{id}/get-last-runs",
    "/projects/{pk}/scenarios/{id}/get-runs-by-date",
    "/projects/{pk}/scenarios/{id}/light",
    "/projects/{pk}/scenarios/{id}/abort",
    "/projects/{pk}/scenarios/{id}/{run}/",
    "/projects/{pk}/scenarios/{id}/{run}/log",
];

/// The scenarios router (without prefix, without layers).
pub(crate) fn router() -> Router<Arc<AppState>> {
    let r = Router::new();
    let r = both(r, "/projects/{pk}/scenarios/", get(list));
    let r = both(r, "/projects/{pk}/scenarios/{id}/run", post(run));
    let r = both(
        r,
        "/projects/{pk}/scenarios/{id}/get-run-for-trigger",
        get(run_for_trigger),
    );
    let r = both(
        r,
        "/projects/{pk}/scenarios/trigger/{id}/{trigger}",
        get(trigger_fire),
    );
    let r = both(r, "/projects/{pk}/scenarios/{id}/get-last-runs", get(last_runs));
    let r = both(
        r,
        "/projects/{pk}/scenarios/{id}/get-runs-by-date",
        get(runs_by_date),
    );
    let r = both(r, "/projects/{pk}/scenarios/{id}/light", get(light));
    let r = both(r, "/projects/{pk}/scenarios/{id}/abort", post(abort));
    let r = both(r, "/projects/{pk}/scenarios/{id}/{run}/", get(run_details));
    both(r, "/projects/{pk}/scenarios/{id}/{run}/log", get(run_log))
}

/// The project must exist, the caller must hold `perm` on it, and the scenario must exist.
fn scenario<'a>(
    st: &'a AppState,
    caller: &Caller,
    pk: &str,
    id: &str,
    perm: &str,
) -> Result<&'a Scenario, ApiError> {
    let project = st.project(pk)?;
    caller.require(pk, perm)?;
    project
        .scenario(id)
        .ok_or_else(|| ApiError::not_found(format!("Scenario {pk}.{id} does not exist")))
}

/// A run of the scenario, or DSS's 404.
fn find_run<'a>(world: &'a World, pk: &str, id: &str, run: &str) -> Result<&'a Run, ApiError> {
    world
        .scenarios
        .state(pk, id)
        .and_then(|s| s.run(run))
        .ok_or_else(|| {
            ApiError::not_found(format!("Scenario run {run} does not exist in scenario {pk}.{id}"))
        })
}

/// A trigger fire of the scenario (API runs fire the manual trigger only), or DSS's 404.
fn find_fire<'a>(
    world: &'a World,
    pk: &str,
    id: &str,
    trigger: &str,
    trigger_run: &str,
) -> Result<&'a Fire, ApiError> {
    world
        .scenarios
        .state(pk, id)
        .and_then(|s| s.fire(trigger_run))
        .filter(|_| trigger == MANUAL_TRIGGER_ID)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Trigger fire {trigger}/{trigger_run} does not exist in scenario {pk}.{id}"
            ))
        })
}

async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P(pk): P<String>,
) -> Result<Response, ApiError> {
    let project = st.project(&pk)?;
    caller.require(&pk, READ)?;
    let (world, _) = st.world();
    let items: Vec<Value> = project
        .scenarios
        .iter()
        .map(|s| view::list_item(&pk, s, world.scenarios.state(&pk, &s.id), world.clock()))
        .collect();
    to_json(&items)
}

/// The run parameters: a JSON object; an empty body or `null` is `{}`.
fn params(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), error_type::BAD_REQUEST, e.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::bad_request("The run parameters must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "Malformed run parameters (invalid JSON): {e}"
        ))),
    }
}

async fn run(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    scenario(&st, &caller, &pk, &id, RUN)?;
    let params = params(body)?;
    let answer = {
        let (mut world, now) = st.world();
        let clock = *world.clock();
        let fire = world.scenarios.fire(&pk, &id, params, &caller.key.config.id, now);
        tracing::debug!(project = %pk, scenario = %id, fire = %fire.trigger_run_id, "trigger fired");
        view::fire(&pk, &id, fire, &clock)
    };
    st.wake.notify_one();
    if let Some(mode) = lock(&st.faults).drop_response(Lost::ScenarioRun) {
        tracing::info!(project = %pk, scenario = %id, "dropping the run response (fault)");
        return Ok(dropped(mode));
    }
    to_json(&answer)
}

/// A required query parameter.
fn required<'q>(query: &'q Query, name: &str) -> Result<&'q str, ApiError> {
    query
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("Missing parameter {name}")))
}

async fn run_for_trigger(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let sc = scenario(&st, &caller, &pk, &id, READ)?;
    let query = Query::new(q);
    let trigger = required(&query, "triggerId")?;
    let trigger_run = required(&query, "triggerRunId")?;
    let (world, _) = st.world();
    let fire = find_fire(&world, &pk, &id, trigger, trigger_run)?;
    // No `scenarioRun` while the fire waits, and never for a cancelled fire.
    let run = match &fire.state {
        FireState::Started { run_id } => find_run(&world, &pk, &id, run_id).ok(),
        FireState::Pending | FireState::Cancelled { .. } => None,
    };
    match run {
        Some(run) => to_json(&json!({"scenarioRun": view::run(&pk, sc, run, world.clock())})),
        None => to_json(&json!({})),
    }
}

async fn trigger_fire(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id, trigger)): P<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    scenario(&st, &caller, &pk, &id, READ)?;
    let query = Query::new(q);
    let trigger_run = required(&query, "triggerRunId")?;
    let (world, _) = st.world();
    let fire = find_fire(&world, &pk, &id, &trigger, trigger_run)?;
    to_json(&view::fire(&pk, &id, fire, world.clock()))
}

/// Runs newest first, `filter`ed, at most `limit` (0: all).
fn runs_json(
    st: &AppState,
    pk: &str,
    sc: &Scenario,
    limit: usize,
    filter: impl Fn(&Run, &Clock) -> bool,
) -> Result<Response, ApiError> {
    let (world, _) = st.world();
    let clock = world.clock();
    let take = if limit == 0 { usize::MAX } else { limit };
    let items: Vec<Value> = world
        .scenarios
        .state(pk, &sc.id)
        .into_iter()
        .flat_map(|s| s.runs.iter().rev())
        .filter(|r| filter(r, clock))
        .take(take)
        .map(|r| view::run(pk, sc, r, clock))
        .collect();
    to_json(&items)
}

async fn last_runs(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let sc = scenario(&st, &caller, &pk, &id, READ)?;
    let query = Query::new(q);
    let limit = match query.get("limit") {
        // The client's default.
        None | Some("") => 10,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("Invalid limit: {v}")))?,
    };
    let only_finished = query.bool("onlyFinishedRuns")?.unwrap_or(false);
    runs_json(&st, &pk, sc, limit, |r, _| !(only_finished && r.running()))
}

/// A date bound in epoch ms: `YYYY-MM-DD` (midnight UTC, as the client formats dates) or RFC 3339.
fn date_ms(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| ApiError::bad_request(format!("Invalid {name} {value:?}: expected YYYY-MM-DD")))
}

async fn runs_by_date(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let sc = scenario(&st, &caller, &pk, &id, READ)?;
    let query = Query::new(q);
    let from = date_ms("fromDate", required(&query, "fromDate")?)?;
    let to = match query.get("toDate").filter(|v| !v.is_empty()) {
        Some(v) => date_ms("toDate", v)?,
        None => i64::MAX,
    };
    // From inclusive, to exclusive, by the run's start (the client's docstring).
    runs_json(&st, &pk, sc, 0, |r, clock: &Clock| {
        let start = clock.epoch_ms(r.start_us);
        from <= start && start < to
    })
}

async fn light(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let sc = scenario(&st, &caller, &pk, &id, READ)?;
    let (world, _) = st.world();
    to_json(&view::light(
        &pk,
        sc,
        world.scenarios.state(&pk, &id),
        world.clock(),
    ))
}

async fn abort(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    scenario(&st, &caller, &pk, &id, RUN)?;
    let aborted = {
        let (mut world, now) = st.world();
        world.abort_scenario(&pk, &id, now)
    };
    st.wake.notify_one();
    // Always a JSON body: the client parses it. Not running is not an error ("does nothing").
    let mut answer = json!({"projectKey": pk, "scenarioId": id, "aborted": aborted.is_some()});
    if let (Some(run), Some(obj)) = (aborted, answer.as_object_mut()) {
        obj.insert("runId".into(), json!(run));
    }
    to_json(&answer)
}

async fn run_details(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id, run)): P<(String, String, String)>,
) -> Result<Response, ApiError> {
    let sc = scenario(&st, &caller, &pk, &id, READ)?;
    let (world, _) = st.world();
    let r = find_run(&world, &pk, &id, &run)?;
    to_json(&view::details(&pk, sc, r, &world.jobs))
}

async fn run_log(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id, run)): P<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let sc = scenario(&st, &caller, &pk, &id, READ)?;
    let query = Query::new(q);
    let step = query.get("stepId").filter(|s| !s.is_empty());
    if let Some(step) = step
        && !sc.steps.iter().any(|s| s.id == step)
    {
        return Err(ApiError::not_found(format!(
            "Step {step} does not exist in scenario {pk}.{id}"
        )));
    }
    let text = {
        let (world, now) = st.world();
        let r = find_run(&world, &pk, &id, &run)?;
        view::log(&pk, sc, r, step, &world.jobs, now)
    };
    // An explicit charset: without one the client decodes text/plain as ISO-8859-1.
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
