//! DSS wire types of the scenarios API: scenario list items and status, trigger fires, scenario runs
//! and their step runs (`docs/dss-scenarios-api.md`).
//!
//! Decoded leniently from a `serde_json::Value`, as the job types are (`model.rs`): what a caller
//! cannot work without is a decode error (a trigger fire without `trigger.id` or `runId`, a run
//! without `runId`, a status without `running`); anything else that is missing or malformed is
//! left unset. Nothing here panics, whatever the bytes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::model::{bool_field, kind, parse_json, str_field, time_field};

/// The outcome of a finished scenario run or step run. Unknown strings are kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScenarioOutcome {
    /// `SUCCESS`.
    Success,
    /// `WARNING`: finished, with warnings.
    Warning,
    /// `FAILED`.
    Failed,
    /// `ABORTED`.
    Aborted,
    /// Any other string DSS sent.
    Unknown(String),
}

impl ScenarioOutcome {
    /// The DSS spelling, e.g. `SUCCESS`.
    pub fn as_str(&self) -> &str {
        match self {
            ScenarioOutcome::Success => "SUCCESS",
            ScenarioOutcome::Warning => "WARNING",
            ScenarioOutcome::Failed => "FAILED",
            ScenarioOutcome::Aborted => "ABORTED",
            ScenarioOutcome::Unknown(other) => other,
        }
    }

    /// Parses a DSS outcome (exact spelling; anything else is `Unknown`).
    pub fn from_dss(value: &str) -> Self {
        match value {
            "SUCCESS" => ScenarioOutcome::Success,
            "WARNING" => ScenarioOutcome::Warning,
            "FAILED" => ScenarioOutcome::Failed,
            "ABORTED" => ScenarioOutcome::Aborted,
            other => ScenarioOutcome::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for ScenarioOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ScenarioOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An item of `GET /projects/{pk}/scenarios/`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioListItem {
    /// The scenario id.
    pub id: String,
    /// Its display name.
    pub name: Option<String>,
    /// Whether its automatic triggers are active.
    pub active: Option<bool>,
    /// Whether it is running.
    pub running: bool,
    /// When the current run started.
    pub start: Option<DateTime<Utc>>,
    /// Its tags.
    pub tags: Vec<String>,
    /// The item as DSS sent it.
    pub raw: Value,
}

/// `GET .../scenarios/{id}/light`: whether the scenario runs, and since when.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioStatus {
    /// Whether its automatic triggers are active.
    pub active: Option<bool>,
    /// Whether it is running.
    pub running: bool,
    /// When the current run started.
    pub start: Option<DateTime<Utc>>,
    /// When an active time-based trigger will run it next.
    pub next_run: Option<DateTime<Utc>>,
    /// The document as DSS sent it.
    pub raw: Value,
}

/// A trigger fire: what `run` answers, and `GET .../scenarios/trigger/{id}/{triggerId}`. Its
/// `trigger_run_id` identifies the fire, not a scenario run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerFire {
    /// `trigger.id`: the trigger that fired (`manual` for API runs on the emulator).
    pub trigger_id: String,
    /// `runId`: the id of this run of the trigger.
    pub trigger_run_id: String,
    /// Whether DSS dropped the fire (the scenario was already running, or another trigger fired):
    /// it will never have a run. Absent means not cancelled.
    pub cancelled: bool,
    /// The fire as DSS sent it.
    pub raw: Value,
}

/// A scenario run (`scenarioRun`, or an item of the run listings).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioRun {
    /// `runId`: the scenario run id.
    pub run_id: String,
    /// `scenario.projectKey`.
    pub project_key: Option<String>,
    /// `scenario.id`.
    pub scenario_id: Option<String>,
    /// `trigger.trigger.id`: the trigger that started it.
    pub trigger_id: Option<String>,
    /// `trigger.runId`: the trigger fire that started it.
    pub trigger_run_id: Option<String>,
    /// `trigger.params`: the parameters it was asked to run with.
    pub params: Map<String, Value>,
    /// When it started.
    pub start: Option<DateTime<Utc>>,
    /// When it ended (`None` while running).
    pub end: Option<DateTime<Utc>>,
    /// `result.outcome`, once finished (DSS sends no `result` while it runs).
    pub outcome: Option<ScenarioOutcome>,
    /// The run as DSS sent it.
    pub raw: Value,
}

impl ScenarioRun {
    /// Whether the run is still going: it has no outcome yet (as the Python client decides).
    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    /// A parameter it was asked to run with (`trigger.params[key]`).
    pub fn param(&self, key: &str) -> Option<&Value> {
        self.params.get(key)
    }

    /// Whether it was asked to run with `key` set to the string `value`: how a caller finds the
    /// run of a fire whose answer was lost, when it put a unique marker into the parameters.
    pub fn has_param(&self, key: &str, value: &str) -> bool {
        self.param(key).and_then(Value::as_str) == Some(value)
    }
}

/// The error a failed step reports (`result.thrown`, or a report item's `thrown`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrownError {
    /// The exception class.
    pub clazz: Option<String>,
    /// A short message.
    pub title: Option<String>,
    /// The message.
    pub message: Option<String>,
    /// A well-known DSS error code.
    pub code: Option<String>,
    /// What kind of action could fix it.
    pub fixability: Option<String>,
}

impl ThrownError {
    /// The message, else the title, else the class.
    pub fn text(&self) -> Option<&str> {
        self.message
            .as_deref()
            .or(self.title.as_deref())
            .or(self.clazz.as_deref())
    }
}

/// A step run of a scenario run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRun {
    /// `step.id`: the step's id in the scenario.
    pub step_id: Option<String>,
    /// `step.name`.
    pub name: Option<String>,
    /// `step.type`, e.g. `build_flowitem`.
    pub step_type: Option<String>,
    /// `result.outcome`, once the step finished.
    pub outcome: Option<ScenarioOutcome>,
    /// The DSS jobs it ran (`additionalReportItems` of type `JOB_EXECUTED`).
    pub job_ids: Vec<String>,
    /// Its error: `result.thrown` of a failed step, else the first failed report item's.
    pub thrown: Option<ThrownError>,
    /// When it started.
    pub start: Option<DateTime<Utc>>,
    /// When it ended.
    pub end: Option<DateTime<Utc>>,
    /// The step run as DSS sent it.
    pub raw: Value,
}

/// `GET .../scenarios/{id}/{runId}/`: a run and the step runs started so far.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioRunDetails {
    /// The run.
    pub run: ScenarioRun,
    /// Its started steps, in order.
    pub steps: Vec<StepRun>,
}

impl ScenarioRunDetails {
    /// The step that failed the run: the first step whose outcome is `FAILED`, else the first that
    /// reports an error (the Python client's `first_error_details` order).
    pub fn failing_step(&self) -> Option<&StepRun> {
        self.steps
            .iter()
            .find(|s| s.outcome == Some(ScenarioOutcome::Failed))
            .or_else(|| self.steps.iter().find(|s| s.thrown.is_some()))
    }

    /// The run's first error, as the Python client's `first_error_details` finds it.
    pub fn first_error(&self) -> Option<&ThrownError> {
        self.steps.iter().find_map(|s| s.thrown.as_ref())
    }
}

/// The last `max_lines` lines of a log, at most `max_bytes` bytes of them (cut at a character
/// boundary): the part of a failing step's log worth showing.
pub fn log_tail(log: &str, max_lines: usize, max_bytes: usize) -> &str {
    let trimmed = log.trim_end_matches(['\n', '\r']);
    let mut start = trimmed.len();
    for _ in 0..max_lines {
        match trimmed[..start].rfind('\n') {
            Some(i) => start = i,
            None => {
                start = 0;
                break;
            }
        }
    }
    let mut tail = trimmed[start..].trim_start_matches(['\n', '\r']);
    if tail.len() > max_bytes {
        let mut cut = tail.len() - max_bytes;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = &tail[cut..];
    }
    tail
}

// ---------------------------------------------------------------------------------------------------
// Decoders. Each takes the raw body and returns a detail message on failure (the client turns it into
// `Error::Decode`).

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what} is {}, not an object", kind(value)))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A boolean, also as the strings `true` / `false` (any case).
fn lenient_bool(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn outcome_of(result: Option<&Value>) -> Option<ScenarioOutcome> {
    result?.get("outcome")?.as_str().map(ScenarioOutcome::from_dss)
}

fn thrown_of(value: Option<&Value>) -> Option<ThrownError> {
    let obj = value?.as_object()?;
    let thrown = ThrownError {
        clazz: str_field(obj, "clazz"),
        title: str_field(obj, "title"),
        message: str_field(obj, "message"),
        code: str_field(obj, "code"),
        fixability: str_field(obj, "fixability"),
    };
    (thrown != ThrownError::default()).then_some(thrown)
}

fn list_item(value: &Value) -> Option<ScenarioListItem> {
    let obj = value.as_object()?;
    Some(ScenarioListItem {
        id: str_field(obj, "id")?,
        name: str_field(obj, "name"),
        active: bool_field(obj, "active"),
        running: lenient_bool(obj.get("running")).unwrap_or(false),
        start: time_field(obj, "start"),
        tags: strings(obj.get("tags")),
        raw: value.clone(),
    })
}

/// Decodes `GET /projects/{pk}/scenarios/`. Items that are not objects or have no id are skipped.
pub(crate) fn decode_scenario_list(body: &[u8]) -> Result<Vec<ScenarioListItem>, String> {
    let value = parse_json(body)?;
    let items = value
        .as_array()
        .ok_or_else(|| format!("expected a JSON array, got {}", kind(&value)))?;
    let list: Vec<ScenarioListItem> = items.iter().filter_map(list_item).collect();
    if list.len() < items.len() {
        tracing::warn!(
            skipped = items.len() - list.len(),
            "DSS scenario listing had items without an id"
        );
    }
    Ok(list)
}

/// Decodes `GET .../scenarios/{id}/light`: `running` is required.
pub(crate) fn decode_scenario_status(body: &[u8]) -> Result<ScenarioStatus, String> {
    let raw = parse_json(body)?;
    let obj = object(&raw, "the status")?;
    let running =
        lenient_bool(obj.get("running")).ok_or_else(|| "the status has no boolean `running`".to_owned())?;
    Ok(ScenarioStatus {
        active: bool_field(obj, "active"),
        running,
        start: time_field(obj, "start"),
        next_run: time_field(obj, "nextRun"),
        raw: raw.clone(),
    })
}

/// Decodes a trigger fire: `trigger.id` and `runId` are required, as the Python client reads them.
pub(crate) fn decode_trigger_fire(body: &[u8]) -> Result<TriggerFire, String> {
    let raw = parse_json(body)?;
    let obj = object(&raw, "the trigger fire")?;
    let trigger_id = obj
        .get("trigger")
        .and_then(Value::as_object)
        .and_then(|t| str_field(t, "id"))
        .ok_or_else(|| "the trigger fire has no trigger.id".to_owned())?;
    let trigger_run_id = str_field(obj, "runId").ok_or_else(|| "the trigger fire has no runId".to_owned())?;
    Ok(TriggerFire {
        trigger_id,
        trigger_run_id,
        cancelled: lenient_bool(obj.get("cancelled")).unwrap_or(false),
        raw: raw.clone(),
    })
}

fn run_of(value: &Value) -> Result<ScenarioRun, String> {
    let obj = object(value, "the scenario run")?;
    let run_id = str_field(obj, "runId").ok_or_else(|| "the scenario run has no runId".to_owned())?;
    let scenario = obj.get("scenario").and_then(Value::as_object);
    let trigger = obj.get("trigger").and_then(Value::as_object);
    Ok(ScenarioRun {
        run_id,
        project_key: scenario.and_then(|s| str_field(s, "projectKey")),
        scenario_id: scenario.and_then(|s| str_field(s, "id")),
        trigger_id: trigger
            .and_then(|t| t.get("trigger"))
            .and_then(Value::as_object)
            .and_then(|t| str_field(t, "id")),
        trigger_run_id: trigger.and_then(|t| str_field(t, "runId")),
        params: trigger
            .and_then(|t| t.get("params"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        start: time_field(obj, "start"),
        end: time_field(obj, "end"),
        outcome: outcome_of(obj.get("result")),
        raw: value.clone(),
    })
}

/// Decodes `get-last-runs` and `get-runs-by-date`: runs without a `runId` are skipped.
pub(crate) fn decode_scenario_runs(body: &[u8]) -> Result<Vec<ScenarioRun>, String> {
    let value = parse_json(body)?;
    let items = value
        .as_array()
        .ok_or_else(|| format!("expected a JSON array, got {}", kind(&value)))?;
    let runs: Vec<ScenarioRun> = items.iter().filter_map(|i| run_of(i).ok()).collect();
    if runs.len() < items.len() {
        tracing::warn!(
            skipped = items.len() - runs.len(),
            "DSS run listing had items that are not scenario runs"
        );
    }
    Ok(runs)
}

/// Decodes `get-run-for-trigger`: `None` while the fire has no run (no `scenarioRun`, or `null`).
pub(crate) fn decode_run_for_trigger(body: &[u8]) -> Result<Option<ScenarioRun>, String> {
    let raw = parse_json(body)?;
    let obj = object(&raw, "the answer")?;
    match obj.get("scenarioRun") {
        None | Some(Value::Null) => Ok(None),
        Some(run) => run_of(run).map(Some),
    }
}

fn step_run(value: &Value) -> Option<StepRun> {
    let obj = value.as_object()?;
    let step = obj.get("step").and_then(Value::as_object);
    let result = obj.get("result");
    let outcome = outcome_of(result);
    let items: Vec<&Map<String, Value>> = obj
        .get("additionalReportItems")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let job_ids = items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("JOB_EXECUTED"))
        .filter_map(|i| str_field(i, "jobId"))
        .collect();
    let own = (outcome == Some(ScenarioOutcome::Failed))
        .then(|| thrown_of(result.and_then(|r| r.get("thrown"))))
        .flatten();
    let thrown = own.or_else(|| {
        items
            .iter()
            .filter(|i| i.get("outcome").and_then(Value::as_str) == Some("FAILED"))
            .find_map(|i| thrown_of(i.get("thrown")))
    });
    Some(StepRun {
        step_id: step.and_then(|s| str_field(s, "id")),
        name: step.and_then(|s| str_field(s, "name")),
        step_type: step.and_then(|s| str_field(s, "type")),
        outcome,
        job_ids,
        thrown,
        start: time_field(obj, "start"),
        end: time_field(obj, "end"),
        raw: value.clone(),
    })
}

/// Decodes `GET .../scenarios/{id}/{runId}/`: `scenarioRun` is required; step runs that are not
/// objects are skipped.
pub(crate) fn decode_run_details(body: &[u8]) -> Result<ScenarioRunDetails, String> {
    let raw = parse_json(body)?;
    let obj = object(&raw, "the run details")?;
    let run = match obj.get("scenarioRun") {
        None | Some(Value::Null) => return Err("the run details have no scenarioRun".to_owned()),
        Some(run) => run_of(run)?,
    };
    let steps = obj
        .get("stepRuns")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(step_run).collect())
        .unwrap_or_default();
    Ok(ScenarioRunDetails { run, steps })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    /// A run as the emulator (and, as far as the client tells, DSS) sends it.
    fn run_json(outcome: Option<&str>) -> Value {
        let mut run = json!({
            "runId": "2024-05-01-10-00-00-123",
            "scenario": {"projectKey": "P", "id": "S", "name": "S", "type": "step_based"},
            "trigger": {"trigger": {"id": "manual", "type": "manual"}, "runId": "2024-05-01-09-59-59-000",
                        "params": {"kube-dss/request": "uid-1"}, "cancelled": false},
            "start": 1_714_557_600_123_i64,
            "end": 0,
        });
        if let Some(outcome) = outcome {
            run["result"] = json!({"outcome": outcome});
            run["end"] = json!(1_714_557_700_000_i64);
        }
        run
    }

    #[test]
    fn trigger_fires() {
        /// (trigger id, trigger run id, cancelled), or a part of the decode error.
        type Want = Result<(&'static str, &'static str, bool), &'static str>;
        let cases: [(&str, Value, Want); 6] = [
            (
                "the emulator's answer",
                json!({"trigger": {"id": "manual"}, "runId": "r1", "cancelled": false, "params": {}}),
                Ok(("manual", "r1", false)),
            ),
            (
                "cancelled",
                json!({"trigger": {"id": "t"}, "runId": "r2", "cancelled": true}),
                Ok(("t", "r2", true)),
            ),
            (
                "no cancelled flag: not cancelled",
                json!({"trigger": {"id": "t"}, "runId": "r3"}),
                Ok(("t", "r3", false)),
            ),
            (
                "a string flag",
                json!({"trigger": {"id": "t"}, "runId": "r", "cancelled": "TRUE"}),
                Ok(("t", "r", true)),
            ),
            (
                "no trigger id",
                json!({"trigger": {}, "runId": "r"}),
                Err("trigger.id"),
            ),
            (
                "no run id",
                json!({"trigger": {"id": "t"}, "runId": 7}),
                Err("runId"),
            ),
        ];
        for (name, doc, want) in cases {
            let got = decode_trigger_fire(&bytes(&doc));
            match (got, want) {
                (Ok(fire), Ok((id, run, cancelled))) => {
                    assert_eq!(
                        (
                            fire.trigger_id.as_str(),
                            fire.trigger_run_id.as_str(),
                            fire.cancelled
                        ),
                        (id, run, cancelled),
                        "{name}"
                    );
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn runs_and_their_markers() {
        let running = run_of(&run_json(None)).unwrap();
        assert!(running.is_running());
        assert_eq!(running.end, None, "end 0 is no end");
        assert_eq!(running.trigger_id.as_deref(), Some("manual"));
        assert_eq!(running.trigger_run_id.as_deref(), Some("2024-05-01-09-59-59-000"));
        assert_eq!(
            (running.project_key.as_deref(), running.scenario_id.as_deref()),
            (Some("P"), Some("S"))
        );
        assert!(running.has_param("kube-dss/request", "uid-1"));
        assert!(!running.has_param("kube-dss/request", "uid-2"));
        assert!(!running.has_param("other", "uid-1"));
        let done = run_of(&run_json(Some("WARNING"))).unwrap();
        assert_eq!(done.outcome, Some(ScenarioOutcome::Warning));
        assert!(!done.is_running());
        assert!(done.end.is_some());
        let odd = run_of(&run_json(Some("SKIPPED"))).unwrap();
        assert_eq!(odd.outcome, Some(ScenarioOutcome::Unknown("SKIPPED".into())));
        assert_eq!(odd.outcome.as_ref().map(ScenarioOutcome::as_str), Some("SKIPPED"));
        // Listings skip what is not a run; the run for a trigger may be absent.
        let list = json!([run_json(None), {"runId": 5}, "x", run_json(Some("SUCCESS"))]);
        assert_eq!(decode_scenario_runs(&bytes(&list)).unwrap().len(), 2);
        assert_eq!(decode_run_for_trigger(b"{}").unwrap(), None);
        assert_eq!(decode_run_for_trigger(br#"{"scenarioRun": null}"#).unwrap(), None);
        let found = decode_run_for_trigger(&bytes(&json!({"scenarioRun": run_json(None)}))).unwrap();
        assert_eq!(found.unwrap().run_id, "2024-05-01-10-00-00-123");
        assert!(decode_run_for_trigger(br#"{"scenarioRun": {"runId": ""}}"#).is_err());
        assert!(decode_run_for_trigger(b"[]").is_err());
    }

    #[test]
    fn step_runs_name_their_jobs_and_errors() {
        let details = json!({
            "scenarioRun": run_json(Some("FAILED")),
            "stepRuns": [
                {"step": {"id": "build", "name": "Build", "type": "build_flowitem"},
                 "result": {"outcome": "SUCCESS"},
                 "additionalReportItems": [{"type": "JOB_EXECUTED", "jobId": "j1"}, {"type": "OTHER", "jobId": "x"}]},
                {"step": {"id": "check", "type": "custom_python"},
                 "result": {"outcome": "FAILED", "thrown": {"clazz": "E", "message": "0 rows", "code": "ERR_X"}},
                 "additionalReportItems": []},
                {"step": {"id": "job-failed"},
                 "result": {"outcome": "FAILED"},
                 "additionalReportItems": [{"type": "JOB_EXECUTED", "jobId": "j2", "outcome": "FAILED",
                                            "thrown": {"message": "boom"}}]},
                {"step": {"id": "running"}},
                "not a step",
            ]
        });
        let d = decode_run_details(&bytes(&details)).unwrap();
        assert_eq!(d.steps.len(), 4);
        assert_eq!(d.steps[0].job_ids, ["j1"]);
        assert_eq!(d.steps[0].thrown, None);
        assert_eq!(
            d.steps[1].thrown.as_ref().and_then(|t| t.code.as_deref()),
            Some("ERR_X")
        );
        assert_eq!(d.steps[2].job_ids, ["j2"]);
        assert_eq!(
            d.steps[2].thrown.as_ref().and_then(ThrownError::text),
            Some("boom")
        );
        assert_eq!((d.steps[3].outcome.clone(), d.steps[3].job_ids.len()), (None, 0));
        assert_eq!(d.failing_step().and_then(|s| s.step_id.as_deref()), Some("check"));
        assert_eq!(d.first_error().and_then(|t| t.message.as_deref()), Some("0 rows"));
        assert!(decode_run_details(b"{}").is_err());
        assert!(
            decode_run_details(br#"{"scenarioRun": {"runId": "r"}, "stepRuns": 3}"#)
                .unwrap()
                .steps
                .is_empty()
        );
    }

    #[test]
    fn status_and_list() {
        let s = decode_scenario_status(
            br#"{"active": true, "running": true, "start": 1714557600123, "nextRun": 0}"#,
        )
        .unwrap();
        assert!(s.running);
        assert_eq!(s.active, Some(true));
        assert!(s.start.is_some());
        assert_eq!(s.next_run, None);
        assert!(decode_scenario_status(br#"{"active": true}"#).is_err());
        let list = decode_scenario_list(
            br#"[{"id": "A", "name": "a", "running": false, "tags": ["x", 1]}, {"name": "no id"}, 4]"#,
        )
        .unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].id.as_str(), list[0].tags.clone()),
            ("A", vec!["x".to_owned()])
        );
        assert!(decode_scenario_list(b"{}").is_err());
    }

    #[test]
    fn log_tails() {
        let cases = [
            ("a\nb\nc\n", 2, 100, "b\nc"),
            ("a\nb\nc", 5, 100, "a\nb\nc"),
            ("a\nb\nc\n\n", 1, 100, "c"),
            ("", 3, 100, ""),
            ("abcdef", 1, 3, "def"),
            ("x\n€uro", 1, 4, "uro"),
            ("a\nb", 0, 100, ""),
        ];
        for (log, lines, bytes, want) in cases {
            assert_eq!(log_tail(log, lines, bytes), want, "{log:?} {lines} {bytes}");
        }
    }

    fn decode_everything(bytes: &[u8]) {
        let _ = decode_scenario_list(bytes);
        let _ = decode_scenario_status(bytes);
        let _ = decode_trigger_fire(bytes);
        let _ = decode_scenario_runs(bytes);
        let _ = decode_run_for_trigger(bytes);
        let _ = decode_run_details(bytes);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-zA-Z0-9_-]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("SUCCESS"),
                Just("FAILED"),
                Just("JOB_EXECUTED"),
                Just("runId"),
                Just("manual")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("runId".to_owned()),
                        Just("trigger".to_owned()),
                        Just("id".to_owned()),
                        Just("scenarioRun".to_owned()),
                        Just("stepRuns".to_owned()),
                        Just("result".to_owned()),
                        Just("outcome".to_owned()),
                        Just("thrown".to_owned()),
                        Just("additionalReportItems".to_owned()),
                        Just("type".to_owned()),
                        Just("jobId".to_owned()),
                        Just("running".to_owned()),
                        Just("start".to_owned()),
                        Just("end".to_owned()),
                        Just("params".to_owned()),
                        Just("cancelled".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            decode_everything(&bytes);
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_json(value in arb_json()) {
            decode_everything(&bytes(&value));
            decode_everything(&bytes(&json!([value.clone()])));
            decode_everything(&bytes(&json!({"scenarioRun": value.clone(), "stepRuns": [value.clone()]})));
            decode_everything(&bytes(&json!({"trigger": value.clone(), "runId": "r"})));
        }

        #[test]
        fn decoders_never_panic_on_hostile_numbers(n in "-?[0-9]{1,400}(\\.[0-9]{0,20})?(e-?[0-9]{1,6})?") {
            let run = format!(r#"{{"runId":"r","start":{n},"end":{n},"result":{{"outcome":"SUCCESS"}}}}"#);
            decode_everything(format!(r#"{{"scenarioRun":{run},"stepRuns":[{{"start":{n},"end":{n}}}]}}"#).as_bytes());
            decode_everything(format!("[{run}]").as_bytes());
            decode_everything(format!(r#"{{"running":true,"start":{n},"nextRun":{n}}}"#).as_bytes());
        }

        #[test]
        fn log_tail_is_a_suffix_within_bounds(log in "[a-c\\n\\r€ ]{0,300}", lines in 0usize..8, max in 0usize..64) {
            let tail = log_tail(&log, lines, max);
            prop_assert!(tail.len() <= max);
            prop_assert!(log.contains(tail));
            prop_assert!(tail.matches('\n').count() < lines.max(1));
        }
    }

    #[test]
    fn deeply_nested_documents_fail_cleanly() {
        for depth in [200, 100_000] {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            decode_everything(doc.as_bytes());
            assert!(decode_run_details(doc.as_bytes()).is_err());
        }
    }
}
