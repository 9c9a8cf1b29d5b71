//! The DSS public API subset: projects, auth, instance info, jobs, datasets and the flow graph.
//! The same router is served under `/public/api` and `/dip/publicapi`.
//!
//! Permissions checked (see `docs/emulator.md`): `READ_CONF` for projects, datasets and the flow;
//! `READ_CONF` or `MONITOR_JOBS` for job lists; `MONITOR_JOBS` for a job's status and log;
//! `RUN_JOBS` to start and abort jobs.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State, rejection::BytesRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Map, Value, json};

use super::{
    auth::Caller,
    catalog::{ObjectType, Project, Target},
    config::BuildType,
    faults::Lost,
    sim::{JobError, NewJob, Origin, job_label, resolve_output},
    state::AppState,
    wire::{ApiError, P, Query, both, dropped, error_type, to_json},
};
use crate::sync::lock;

/// The canonical route templates (the forms the official client sends), used as stats keys.
pub(crate) const ROUTES: &[&str] = &[
    "/projects/",
    "/projects/{pk}",
    "/auth/info",
    "/instance-info",
    "/jobs/running/",
    "/projects/{pk}/jobs/",
    "/projects/{pk}/jobs/running/",
    "/projects/{pk}/jobs/{id}/",
    "/projects/{pk}/jobs/{id}/abort",
    "/projects/{pk}/jobs/{id}/log",
    "/projects/{pk}/datasets/",
    "/projects/{pk}/datasets/{name}",
    "/projects/{pk}/datasets/{name}/metadata",
    "/projects/{pk}/datasets/{name}/info",
    "/projects/{pk}/datasets/{name}/partitions",
    "/projects/{pk}/flow/graph/",
];

/// The DSS API router (without prefix, without layers).
pub(crate) fn router() -> Router<Arc<AppState>> {
    let r = Router::new();
    let r = both(r, "/projects/", get(list_projects));
    let r = both(r, "/projects/{pk}", get(project_summary));
    let r = both(r, "/auth/info", get(auth_info));
    let r = both(r, "/instance-info", get(instance_info));
    let r = both(r, "/jobs/running/", get(running_all));
    let r = both(r, "/projects/{pk}/jobs/", get(list_jobs).post(start_job));
    let r = both(r, "/projects/{pk}/jobs/running/", get(running_project));
    let r = both(r, "/projects/{pk}/jobs/{id}/", get(job_status));
    let r = both(r, "/projects/{pk}/jobs/{id}/abort", post(abort_job));
    let r = both(r, "/projects/{pk}/jobs/{id}/log", get(job_log));
    let r = both(r, "/projects/{pk}/datasets/", get(list_datasets));
    let r = both(r, "/projects/{pk}/datasets/{name}", get(dataset_settings));
    let r = both(
        r,
        "/projects/{pk}/datasets/{name}/metadata",
        get(dataset_metadata),
    );
    let r = both(r, "/projects/{pk}/datasets/{name}/info", get(dataset_info));
    let r = both(
        r,
        "/projects/{pk}/datasets/{name}/partitions",
        get(dataset_partitions),
    );
    both(r, "/projects/{pk}/flow/graph/", get(flow_graph))
}

fn project_summary_json(p: &Project) -> Value {
    json!({
        "projectKey": p.key,
        "name": p.config.name.clone().unwrap_or_else(|| p.key.clone()),
        "shortDesc": p.config.description.clone().unwrap_or_default(),
        "ownerLogin": p.config.owner.clone().unwrap_or_else(|| "admin".to_owned()),
        "tags": p.config.tags,
        "projectStatus": "",
    })
}

async fn list_projects(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::new(q);
    let with_location = query.bool("includeLocation")?.unwrap_or(false);
    let items: Vec<Value> = st
        .catalog
        .projects
        .values()
        .filter(|p| caller.key.can(&p.key, "READ_CONF"))
        .map(|p| {
            let mut v = project_summary_json(p);
            if with_location && let Some(o) = v.as_object_mut() {
                o.insert(
                    "projectLocation".into(),
                    json!({"projectKey": p.key, "folderId": "ROOT"}),
                );
            }
            v
        })
        .collect();
    to_json(&items)
}

async fn project_summary(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P(pk): P<String>,
) -> Result<Response, ApiError> {
    let p = st.project(&pk)?;
    caller.require(&pk, "READ_CONF")?;
    to_json(&project_summary_json(p))
}

async fn auth_info(
    State(_st): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let with_secrets = Query::new(q).bool("withSecrets")?.unwrap_or(false);
    let mut info = json!({
        "authIdentifier": caller.key.config.id,
        "authSource": caller.source,
        "groups": caller.key.config.groups,
        "userProfile": if caller.key.config.admin { "DESIGNER" } else { "READER" },
        "admin": caller.key.config.admin,
    });
    if with_secrets && let Some(o) = info.as_object_mut() {
        o.insert("secrets".into(), json!([]));
    }
    to_json(&info)
}

async fn instance_info(State(st): State<Arc<AppState>>, _caller: Caller) -> Result<Response, ApiError> {
    let i = &st.config.instance;
    to_json(&json!({
        "dssVersion": i.dss_version,
        "nodeId": i.node_name,
        "nodeName": i.node_name,
        "nodeType": "DESIGN",
        "emulated": true,
    }))
}

const LIST_PERMS: &[&str] = &["READ_CONF", "MONITOR_JOBS"];

async fn list_jobs(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P(pk): P<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    st.project(&pk)?;
    caller.require_any(&pk, LIST_PERMS)?;
    let limit = match Query::new(q).get("limit") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("Invalid limit: {v}")))?,
    };
    let (world, _) = st.world();
    let sim = &world.jobs;
    let take = if limit == 0 { usize::MAX } else { limit };
    let items: Vec<_> = sim
        .project_jobs(&pk)
        .take(take)
        .map(|j| j.list_item(&sim.clock))
        .collect();
    to_json(&items)
}

async fn running_project(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P(pk): P<String>,
) -> Result<Response, ApiError> {
    st.project(&pk)?;
    caller.require_any(&pk, LIST_PERMS)?;
    let (mut world, now) = st.world();
    world.jobs.note_running_listing(Some(&pk), now);
    let sim = &world.jobs;
    let items: Vec<_> = sim
        .active_jobs()
        .filter(|j| j.project == pk)
        .map(|j| j.list_item(&sim.clock))
        .collect();
    to_json(&items)
}

async fn running_all(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let all_users = Query::new(q).bool("allUsers")?.unwrap_or(true);
    let (mut world, now) = st.world();
    world.jobs.note_running_listing(None, now);
    let sim = &world.jobs;
    let items: Vec<_> = sim
        .active_jobs()
        .filter(|j| LIST_PERMS.iter().any(|p| caller.key.can(&j.project, p)))
        .filter(|j| all_users || j.key_id == caller.key.config.id)
        .map(|j| j.list_item(&sim.clock))
        .collect();
    to_json(&items)
}

/// Reads a nullable string field (`null` and absent are the same).
fn opt_str<'a>(item: &'a Map<String, Value>, keys: &[&str], what: &str) -> Result<Option<&'a str>, ApiError> {
    for k in keys {
        match item.get(*k) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => return Ok(Some(s)),
            Some(_) => return Err(ApiError::bad_request(format!("{what}: `{k}` must be a string"))),
        }
    }
    Ok(None)
}

async fn start_job(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P(pk): P<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    st.project(&pk)?;
    caller.require(&pk, "RUN_JOBS")?;
    let body = body.map_err(|e| ApiError::new(e.status(), error_type::BAD_REQUEST, e.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "A job definition is required in the request body",
        ));
    }
    let Value::Object(mut def) = serde_json::from_slice::<Value>(&body)
        .map_err(|e| ApiError::bad_request(format!("Malformed job definition (invalid JSON): {e}")))?
    else {
        return Err(ApiError::bad_request("The job definition must be a JSON object"));
    };
    let build_name = opt_str(&def, &["type"], "job definition")?
        .unwrap_or("NON_RECURSIVE_FORCED_BUILD")
        .to_owned();
    let build = BuildType::parse(&build_name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Unknown job type {build_name}: expected NON_RECURSIVE_FORCED_BUILD, RECURSIVE_BUILD, \
             RECURSIVE_FORCED_BUILD or RECURSIVE_MISSING_ONLY_BUILD"
        ))
    })?;
    def.insert("type".into(), json!(build_name));
    let outputs = match def.get("outputs") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "The job definition has no outputs: nothing to build",
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "The job definition's `outputs` must be an array",
            ));
        }
    };
    let mut targets = Vec::new();
    let mut normalized = Vec::new();
    let mut label = String::new();
    let mut first_output = String::new();
    let mut nothing = Vec::new();
    for (i, out) in outputs.into_iter().enumerate() {
        let what = format!("outputs[{i}]");
        let Value::Object(mut item) = out else {
            return Err(ApiError::bad_request(format!("{what} must be an object")));
        };
        let id = opt_str(&item, &["id", "targetDataset", "targetManagedFolder"], &what)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("{what} has no id")))?
            .to_owned();
        let ty = match opt_str(&item, &["type"], &what)? {
            None => None,
            Some(t) => Some(
                ObjectType::parse(t)
                    .ok_or_else(|| ApiError::bad_request(format!("{what}: unknown object type {t}")))?,
            ),
        };
        let okey = opt_str(&item, &["projectKey", "targetDatasetProjectKey"], &what)?
            .unwrap_or(&pk)
            .to_owned();
        let oproject = st.project(&okey)?;
        if okey != pk {
            caller.require(&okey, "READ_CONF")?;
        }
        let obj_idx = oproject.find(&id, ty).ok_or_else(|| {
            ApiError::not_found(format!(
                "{} {okey}.{id} does not exist",
                match ty {
                    Some(t) => t.wire(),
                    None => "Object",
                }
            ))
        })?;
        let obj = &oproject.objects[obj_idx];
        let spec: Option<String> = match item.get("partition").or_else(|| item.get("targetPartition")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // `dataset.build(partitions=[...])` sends the list as is.
            Some(Value::Array(parts)) => Some(
                parts
                    .iter()
                    .map(|p| p.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| ApiError::bad_request(format!("{what}: partitions must be strings")))?
                    .join(","),
            ),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{what}: partition must be a string or a list"
                )));
            }
        };
        let (spec_label, partitions) = obj.partitions_for(spec.as_deref());
        if i == 0 {
            label = job_label(&id, &spec_label);
            first_output = id.clone();
        }
        if !obj.computable {
            nothing.push(format!(
                "{} {okey}.{id} is a flow source (no recipe builds it)",
                obj.ty.wire()
            ));
        }
        resolve_output(&mut item, obj.ty, &id, &okey, &spec_label);
        normalized.push(Value::Object(item));
        targets.push(Target {
            project: okey,
            obj: obj_idx,
            partitions,
            label: spec_label,
        });
    }
    def.insert("outputs".into(), Value::Array(normalized));
    let stored = {
        let (mut world, now) = st.world();
        let sim = &mut world.jobs;
        let activities = sim.plan(build, &targets);
        let note = if nothing.is_empty() {
            None
        } else {
            Some(nothing.join("; "))
        };
        let job = sim
            .create(
                NewJob {
                    project: &pk,
                    def,
                    key_id: &caller.key.config.id,
                    origin: Origin::Api,
                    label: &label,
                    first_output: &first_output,
                    activities,
                    note,
                },
                now,
            )
            .ok_or_else(|| ApiError::internal("the job was not retained"))?;
        tracing::debug!(project = %pk, job = %job.id, "job started");
        job.def.clone()
    };
    st.wake.notify_one();
    if let Some(mode) = lock(&st.faults).drop_response(Lost::JobStart) {
        tracing::info!(project = %pk, job = ?stored.get("id"), "dropping the start response (fault)");
        return Ok(dropped(mode));
    }
    to_json(&stored)
}

fn job_error(pk: &str, id: &str, e: JobError) -> ApiError {
    match e {
        JobError::NotFound => ApiError::not_found(format!("Job {id} does not exist in project {pk}")),
        JobError::AlreadyFinished(s) => ApiError::new(
            StatusCode::CONFLICT,
            error_type::CONFLICT,
            format!("Job {id} in project {pk} is already finished ({})", s.as_str()),
        ),
    }
}

async fn job_status(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    st.project(&pk)?;
    caller.require(&pk, "MONITOR_JOBS")?;
    let (mut world, now) = st.world();
    world.jobs.note_status_read(&pk, &id, now);
    let sim = &world.jobs;
    let job = sim
        .get(&pk, &id)
        .ok_or_else(|| job_error(&pk, &id, JobError::NotFound))?;
    to_json(&job.status(&sim.clock))
}

async fn abort_job(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    st.project(&pk)?;
    caller.require(&pk, "RUN_JOBS")?;
    let aborted = {
        let (mut world, now) = st.world();
        world
            .abort_job(&pk, &id, now)
            .map_err(|e| job_error(&pk, &id, e))?
    };
    st.wake.notify_one();
    // Always a JSON body: the client parses it, and an empty answer or a 204 crashes it.
    to_json(&json!({"projectKey": pk, "jobId": id, "aborted": aborted}))
}

async fn job_log(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, id)): P<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    st.project(&pk)?;
    caller.require(&pk, "MONITOR_JOBS")?;
    let query = Query::new(q);
    let activity = query.get("activity").filter(|a| !a.is_empty());
    let text = {
        let (mut world, now) = st.world();
        let sim = &mut world.jobs;
        let job = sim
            .get(&pk, &id)
            .ok_or_else(|| job_error(&pk, &id, JobError::NotFound))?;
        if let Some(a) = activity
            && !job.has_activity(a)
        {
            return Err(ApiError::not_found(format!(
                "Activity {a} does not exist in job {id}"
            )));
        }
        job.log(activity, now, &sim.clock)
    };
    // An explicit charset: without one the client decodes text/plain as ISO-8859-1.
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

fn dataset<'a>(
    st: &'a AppState,
    caller: &Caller,
    pk: &str,
    name: &str,
) -> Result<(&'a Project, usize), ApiError> {
    let p = st.project(pk)?;
    caller.require(pk, "READ_CONF")?;
    let idx = p
        .find(name, Some(ObjectType::Dataset))
        .ok_or_else(|| ApiError::not_found(format!("Dataset {pk}.{name} does not exist")))?;
    Ok((p, idx))
}

fn partitioning_json(p: &Project, idx: usize) -> Value {
    let dims: Vec<Value> = p.objects[idx]
        .config
        .partitioning
        .iter()
        .map(|d| {
            let kind = d.kind.clone().unwrap_or_else(|| "time".to_owned());
            let params = if kind == "time" {
                json!({"period": d.period.clone().unwrap_or_else(|| "DAY".to_owned())})
            } else {
                json!({})
            };
            json!({"name": d.name, "type": kind, "params": params})
        })
        .collect();
    json!({"ignoreNonMatchingFile": false, "considerMissingRequestedPartitionsAsEmpty": false, "dimensions": dims})
}

fn dataset_json(p: &Project, idx: usize) -> Value {
    let o = &p.objects[idx];
    json!({
        "projectKey": p.key,
        "name": o.name,
        "type": o.config.kind.clone().unwrap_or_else(|| "Filesystem".to_owned()),
        "managed": true,
        "params": {"connection": "filesystem_managed", "path": format!("{}/{}", p.key, o.name)},
        "formatType": "csv",
        "formatParams": {"style": "unix", "separator": ",", "charset": "utf8"},
        "schema": {"columns": [], "userModified": false},
        "partitioning": partitioning_json(p, idx),
        "tags": o.config.tags,
        "flowOptions": {"virtualizable": false, "rebuildBehavior": "NORMAL"},
        "readWriteOptions": {"preserveOrder": false, "writeBuckets": 1, "forceSingleOutputFile": false},
    })
}

async fn list_datasets(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P(pk): P<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = st.project(&pk)?;
    caller.require(&pk, "READ_CONF")?;
    let query = Query::new(q);
    // No dataset is shared between projects here, so `foreign` changes nothing once it parses.
    query.bool("foreign")?;
    let tags = query.all("tags");
    let items: Vec<Value> = p
        .objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.ty == ObjectType::Dataset)
        .filter(|(_, o)| tags.is_empty() || o.config.tags.iter().any(|t| tags.contains(&t.as_str())))
        .map(|(i, _)| dataset_json(p, i))
        .collect();
    to_json(&items)
}

async fn dataset_settings(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, name)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let (p, idx) = dataset(&st, &caller, &pk, &name)?;
    to_json(&dataset_json(p, idx))
}

async fn dataset_metadata(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, name)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let (p, idx) = dataset(&st, &caller, &pk, &name)?;
    let o = &p.objects[idx];
    to_json(&json!({
        "label": o.name,
        "description": "",
        "shortDesc": "",
        "tags": o.config.tags,
        "custom": {"kv": {}},
        "checklists": {"checklists": []},
    }))
}

async fn dataset_info(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, name)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let (p, idx) = dataset(&st, &caller, &pk, &name)?;
    let mut info = json!({
        "dataset": dataset_json(p, idx),
        "partitioned": p.objects[idx].partitioned(),
        "computable": p.objects[idx].computable,
    });
    let last = {
        let (world, _) = st.world();
        let sim = &world.jobs;
        sim.last_build(&pk, idx)
    };
    if let (Some((start, end, ok)), Some(o)) = (last, info.as_object_mut()) {
        o.insert(
            "lastBuild".into(),
            json!({"buildStartTime": start, "buildEndTime": end, "buildSuccess": ok}),
        );
    }
    to_json(&info)
}

async fn dataset_partitions(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P((pk, name)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let (p, idx) = dataset(&st, &caller, &pk, &name)?;
    let parts = if p.objects[idx].partitioned() {
        st.world().0.jobs.existing_partitions(&pk, idx)
    } else {
        vec!["NP".to_owned()]
    };
    to_json(&parts)
}

async fn flow_graph(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    P(pk): P<String>,
) -> Result<Response, ApiError> {
    let p = st.project(&pk)?;
    caller.require(&pk, "READ_CONF")?;
    let mut nodes = Map::new();
    for o in &p.objects {
        let predecessors: Vec<&str> = o
            .producer
            .map(|r| p.recipes[r].name.as_str())
            .into_iter()
            .collect();
        let successors: Vec<&str> = p
            .recipes
            .iter()
            .filter(|r| r.inputs.iter().any(|&i| p.objects[i].name == o.name))
            .map(|r| r.name.as_str())
            .collect();
        nodes.insert(
            o.name.clone(),
            json!({
                "ref": o.name,
                "type": o.ty.graph_node(),
                "projectKey": p.key,
                "predecessors": predecessors,
                "successors": successors,
            }),
        );
    }
    for r in &p.recipes {
        let names = |idx: &[usize]| idx.iter().map(|&i| p.objects[i].name.clone()).collect::<Vec<_>>();
        nodes.insert(
            r.name.clone(),
            json!({
                "ref": r.name,
                "type": "RUNNABLE_RECIPE",
                "subType": r.kind,
                "projectKey": p.key,
                "predecessors": names(&r.inputs),
                "successors": names(&r.outputs),
            }),
        );
    }
    to_json(&json!({"nodes": nodes}))
}
