//! How scenarios, trigger fires and runs look on the wire: the JSON documents of the scenarios API,
//! the run and step logs, and the admin API's records. Everything is derived from the simulation state on each request;
//! nothing here changes it.
//!
//! The shapes follow what `dataikuapi/dss/scenario.py` reads (see `docs/dss-scenarios-api.md`): a
//! run always has `start` and `end` (`0` while running, `get_duration` reads it unguarded) and has
//! `result` only once finished; a step run always has `additionalReportItems` (`job_ids` reads it
//! unguarded) and has `result` only once finished.

use serde_json::{Map, Value, json};

use super::{
    admin::{FireRecord, RunRecord, ScenarioRecord, StepRecord},
    catalog::{Scenario, Step, StepAction},
    clock::{Clock, log_line},
    scenarios::{Fire, FireState, MANUAL_TRIGGER_ID, Outcome, Run, ScenarioState, StepRun, Thrown},
    sim::Sim,
};

/// The manual trigger's definition, as runs report it in `trigger.trigger`.
fn manual_trigger() -> Value {
    json!({"id": MANUAL_TRIGGER_ID, "type": "manual", "name": "Manual trigger (API)", "active": true, "params": {}})
}

fn current_start_ms(state: Option<&ScenarioState>, clock: &Clock) -> i64 {
    state
        .and_then(ScenarioState::current)
        .map_or(0, |r| clock.epoch_ms(r.start_us))
}

/// An item of `GET /projects/{pk}/scenarios/`.
pub(crate) fn list_item(
    pk: &str,
    scenario: &Scenario,
    state: Option<&ScenarioState>,
    clock: &Clock,
) -> Value {
    json!({
        "projectKey": pk,
        "id": scenario.id,
        "name": scenario.name,
        "type": "step_based",
        "active": scenario.active,
        "running": state.and_then(ScenarioState::current).is_some(),
        "start": current_start_ms(state, clock),
        "nextRun": 0,
        "tags": scenario.tags,
        "shortDesc": "",
        "markedAsTest": false,
    })
}

/// `GET /projects/{pk}/scenarios/{id}/light`.
pub(crate) fn light(pk: &str, scenario: &Scenario, state: Option<&ScenarioState>, clock: &Clock) -> Value {
    let mut doc = list_item(pk, scenario, state, clock);
    if let (Some(last), Some(obj)) = (
        state.and_then(|s| s.runs.iter().rev().find(|r| !r.running())),
        doc.as_object_mut(),
    ) {
        obj.insert(
            "lastRun".into(),
            json!({
                "runId": last.id,
                "outcome": last.outcome.map(Outcome::as_str),
                "start": clock.epoch_ms(last.start_us),
                "end": clock.opt_ms(last.end_us),
            }),
        );
    }
    doc
}

/// A trigger fire: the answer of `run` and of `GET .../trigger/{id}/{triggerId}`.
pub(crate) fn fire(pk: &str, scenario: &str, fire: &Fire, clock: &Clock) -> Value {
    json!({
        "projectKey": pk,
        "scenarioId": scenario,
        "trigger": manual_trigger(),
        "runId": fire.trigger_run_id,
        "params": fire.params,
        "timestamp": clock.epoch_ms(fire.fired_us),
        "cancelled": fire.cancelled(),
    })
}

fn thrown(t: &Thrown) -> Value {
    let mut doc = json!({"clazz": t.clazz, "title": t.message, "message": t.message});
    if let (Some(code), Some(obj)) = (&t.code, doc.as_object_mut()) {
        obj.insert("code".into(), json!(code));
    }
    doc
}

/// A scenario run (`scenarioRun`, and each item of the run listings).
pub(crate) fn run(pk: &str, scenario: &Scenario, run: &Run, clock: &Clock) -> Value {
    let mut doc = json!({
        "runId": run.id,
        "scenario": {
            "projectKey": pk,
            "id": scenario.id,
            "name": scenario.name,
            "type": "step_based",
            "markedAsTest": false,
        },
        "trigger": {
            "projectKey": pk,
            "scenarioId": scenario.id,
            "trigger": manual_trigger(),
            "runId": run.trigger_run_id,
            "params": run.params,
            "timestamp": clock.epoch_ms(run.fired_us),
            "cancelled": false,
        },
        "runAsUser": {"login": run.key_id},
        "start": clock.epoch_ms(run.start_us),
        "end": clock.opt_ms(run.end_us),
    });
    if let (Some(outcome), Some(obj)) = (run.outcome, doc.as_object_mut()) {
        let mut result = json!({
            "outcome": outcome.as_str(),
            "type": "SCENARIO_DONE",
            "start": clock.epoch_ms(run.start_us),
            "end": clock.opt_ms(run.end_us),
        });
        if let (Some(t), Some(r)) = (run.thrown(), result.as_object_mut()) {
            r.insert("thrown".into(), thrown(t));
        }
        obj.insert("result".into(), result);
    }
    doc
}

fn step_params(step: &Step, jobs: &Sim) -> Value {
    match &step.action {
        StepAction::Build { build, targets } => {
            let builds: Vec<Value> = targets
                .iter()
                .filter_map(|t| {
                    let obj = jobs.catalog().projects.get(&t.project)?.objects.get(t.obj)?;
                    Some(json!({"type": obj.ty.wire(), "projectKey": t.project, "itemId": obj.name, "partitionsSpec": t.label}))
                })
                .collect();
            json!({"jobType": build.as_str(), "builds": builds})
        }
        StepAction::Wait { duration_ms } => json!({"waitMs": duration_ms}),
        StepAction::Warn { .. } | StepAction::Fail { .. } => json!({}),
    }
}

/// A step run of `GET .../{id}/{runId}/`.
fn step_run(pk: &str, scenario: &Scenario, run: &Run, step: &StepRun, jobs: &Sim) -> Value {
    let clock = &jobs.clock;
    let def = scenario.steps.get(step.index);
    let mut items = Vec::new();
    if let Some(job) = step.job.as_deref().and_then(|id| jobs.get(pk, id)) {
        let mut item = json!({
            "type": "JOB_EXECUTED",
            "jobId": job.id,
            "projectKey": pk,
            "start": clock.epoch_ms(step.start_us),
            "end": clock.opt_ms(job.end_us()),
            "warnings": {"totalCount": job.warnings()},
        });
        if let (Some(outcome), Some(obj)) = (step.outcome, item.as_object_mut()) {
            obj.insert("outcome".into(), json!(outcome.as_str()));
            if let Some(t) = &step.thrown {
                obj.insert("thrown".into(), thrown(t));
            }
        }
        items.push(item);
    }
    let mut doc = json!({
        "runId": format!("{}-{}", run.id, step.index + 1),
        "step": {
            "id": def.map(|d| d.id.as_str()),
            "name": def.map(|d| d.name.as_str()),
            "type": def.map(Step::dss_type),
            "params": def.map_or(Value::Object(Map::new()), |d| step_params(d, jobs)),
        },
        "start": clock.epoch_ms(step.start_us),
        "end": clock.opt_ms(step.end_us),
        "additionalReportItems": items,
    });
    if let (Some(outcome), Some(obj)) = (step.outcome, doc.as_object_mut()) {
        let mut result = json!({"outcome": outcome.as_str()});
        if let (Some(t), Some(r)) = (&step.thrown, result.as_object_mut()) {
            r.insert("thrown".into(), thrown(t));
        }
        obj.insert("result".into(), result);
    }
    doc
}

/// `GET .../{id}/{runId}/`: the run and its step runs (started steps only).
pub(crate) fn details(pk: &str, scenario: &Scenario, r: &Run, jobs: &Sim) -> Value {
    let steps: Vec<Value> = r
        .steps
        .iter()
        .map(|s| step_run(pk, scenario, r, s, jobs))
        .collect();
    json!({"scenarioRun": run(pk, scenario, r, &jobs.clock), "stepRuns": steps})
}

/// The log of a run, whole or for one step (`stepId`), as of `now`.
pub(crate) fn log(
    pk: &str,
    scenario: &Scenario,
    run: &Run,
    step_id: Option<&str>,
    jobs: &Sim,
    now: u64,
) -> String {
    let clock = &jobs.clock;
    let thread = format!("FT-ScenarioThread-{}-{}", scenario.id, run.id);
    let mut out = String::new();
    let line = |out: &mut String, t: u64, level: &str, logger: &str, msg: &str| {
        log_line(out, clock.epoch_ms(t), &thread, level, logger, msg);
    };
    let whole = step_id.is_none();
    if whole {
        let params = serde_json::to_string(&run.params).unwrap_or_default();
        line(
            &mut out,
            run.start_us,
            "INFO",
            "dku.scenario.run",
            &format!(
                "Scenario run {} of {pk}.{} started by trigger {MANUAL_TRIGGER_ID} (trigger run {}), run as {}, params {params}",
                run.id, scenario.id, run.trigger_run_id, run.key_id
            ),
        );
    }
    let total = scenario.steps.len();
    for step in &run.steps {
        let Some(def) = scenario.steps.get(step.index) else {
            continue;
        };
        if step_id.is_some_and(|id| id != def.id) {
            continue;
        }
        line(
            &mut out,
            step.start_us,
            "INFO",
            "dku.scenario.step",
            &format!(
                "Step {}/{total} {} ({}) started",
                step.index + 1,
                def.name,
                def.dss_type()
            ),
        );
        if let Some(job) = step.job.as_deref().and_then(|id| jobs.get(pk, id)) {
            line(
                &mut out,
                step.start_us,
                "INFO",
                "dku.scenario.step",
                &format!("Started job {}", job.id),
            );
            // The job's own lines, as far as they are written.
            out.push_str(&job.log(None, now, clock));
        }
        let Some(end) = step.end_us.filter(|&e| e <= now) else {
            continue;
        };
        match (&def.action, step.outcome) {
            (StepAction::Warn { message, .. }, Some(Outcome::Warning)) => {
                line(&mut out, end, "WARN", "dku.scenario.step", message);
            }
            (_, Some(Outcome::Failed)) => {
                let message = step.thrown.as_ref().map_or("failed", |t| t.message.as_str());
                line(&mut out, end, "ERROR", "dku.scenario.step", message);
            }
            _ => {}
        }
        let outcome = step.outcome.map_or("RUNNING", Outcome::as_str);
        let level = match step.outcome {
            Some(Outcome::Success) | None => "INFO",
            Some(Outcome::Warning | Outcome::Aborted) => "WARN",
            Some(Outcome::Failed) => "ERROR",
        };
        line(
            &mut out,
            end,
            level,
            "dku.scenario.step",
            &format!("Step {} finished: {outcome}", def.name),
        );
    }
    if whole && let (Some(end), Some(outcome)) = (run.end_us.filter(|&e| e <= now), run.outcome) {
        let msg = match run.thrown().filter(|_| outcome == Outcome::Failed) {
            Some(t) => format!("Scenario run {} finished: FAILED: {}", run.id, t.message),
            None => format!("Scenario run {} finished: {}", run.id, outcome.as_str()),
        };
        let level = if outcome == Outcome::Success {
            "INFO"
        } else {
            "WARN"
        };
        line(&mut out, end, level, "dku.scenario.run", &msg);
    }
    out
}

/// The admin API's record of a scenario's fires and runs (`GET /__emulator/scenarios`).
pub(crate) fn record(
    pk: &str,
    id: &str,
    scenario: Option<&Scenario>,
    state: &ScenarioState,
    clock: &Clock,
) -> ScenarioRecord {
    let fire = |f: &Fire| FireRecord {
        trigger_id: MANUAL_TRIGGER_ID.to_owned(),
        trigger_run_id: f.trigger_run_id.clone(),
        params: Value::Object(f.params.clone()),
        api_key_id: f.key_id.clone(),
        fired_at: clock.epoch_ms(f.fired_us),
        state: match f.state {
            FireState::Pending => "PENDING",
            FireState::Cancelled { .. } => "CANCELLED",
            FireState::Started { .. } => "STARTED",
        }
        .to_owned(),
        run_id: match &f.state {
            FireState::Started { run_id } => Some(run_id.clone()),
            _ => None,
        },
    };
    let step = |s: &StepRun| StepRecord {
        id: scenario
            .and_then(|sc| sc.steps.get(s.index))
            .map_or_else(String::new, |d| d.id.clone()),
        outcome: s.outcome.map(|o| o.as_str().to_owned()),
        job_id: s.job.clone(),
    };
    let run = |r: &Run| RunRecord {
        run_id: r.id.clone(),
        trigger_run_id: r.trigger_run_id.clone(),
        params: Value::Object(r.params.clone()),
        api_key_id: r.key_id.clone(),
        start: clock.epoch_ms(r.start_us),
        end: clock.opt_ms(r.end_us),
        outcome: r.outcome.map(|o| o.as_str().to_owned()),
        steps: r.steps.iter().map(step).collect(),
    };
    ScenarioRecord {
        project_key: pk.to_owned(),
        scenario_id: id.to_owned(),
        fires: state.fires.iter().map(fire).collect(),
        runs: state.runs.iter().map(run).collect(),
    }
}
