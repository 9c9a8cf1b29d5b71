//! DSS wire types: job list items, status documents, job definitions.
//!
//! Responses are decoded leniently from a `serde_json::Value` rather than with strict serde structs: DSS
//! versions differ (two list-item shapes, `null` where a field is unset, `0` for "no time"), and a
//! malformed field in one item must not make a whole listing unusable. Listings are split into their
//! items as they stream in (`listing.rs`); each item is decoded here. What the client cannot work
//! without (a status without `baseStatus.state`, a start response without `id`) is a decode error.
//! Nothing here panics, whatever the bytes.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The state of a DSS job (`dss-api.md` 6). Unknown strings are kept and treated as non-terminal, as the
/// Python client does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// `NOT_STARTED`: accepted, waiting to run.
    NotStarted,
    /// `RUNNING`.
    Running,
    /// `DONE`: finished successfully (terminal).
    Done,
    /// `FAILED` (terminal).
    Failed,
    /// `ABORTED` (terminal).
    Aborted,
    /// Any other string DSS sent (non-terminal). An absent state is `Unknown("")`.
    Unknown(String),
}

impl JobState {
    /// The DSS spelling, e.g. `NOT_STARTED`.
    pub fn as_str(&self) -> &str {
        match self {
            JobState::NotStarted => "NOT_STARTED",
            JobState::Running => "RUNNING",
            JobState::Done => "DONE",
            JobState::Failed => "FAILED",
            JobState::Aborted => "ABORTED",
            JobState::Unknown(other) => other,
        }
    }

    /// Whether the job will not change any more: only `DONE`, `FAILED` and `ABORTED`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Aborted)
    }

    /// Parses a DSS state string (exact spelling; anything else is `Unknown`).
    pub fn from_dss(value: &str) -> Self {
        match value {
            "NOT_STARTED" => JobState::NotStarted,
            "RUNNING" => JobState::Running,
            "DONE" => JobState::Done,
            "FAILED" => JobState::Failed,
            "ABORTED" => JobState::Aborted,
            other => JobState::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(JobState::from_dss(s))
    }
}

impl Serialize for JobState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(JobState::from_dss(&s))
    }
}

/// The `def` object of a job: what was built, by whom, when. `raw` keeps the whole object.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDefinitionSummary {
    /// `def.id`: the job id.
    pub id: Option<String>,
    /// `def.name`: the job id without its timestamp.
    pub name: Option<String>,
    /// `def.type`: the build type, as DSS spells it.
    pub job_type: Option<String>,
    /// `def.initiator`, e.g. `API (aa)`.
    pub initiator: Option<String>,
    /// `def.initiationTimestamp`: when the job was submitted.
    pub initiation_timestamp: Option<DateTime<Utc>>,
    /// `def.triggeredFrom`, e.g. `API`.
    pub triggered_from: Option<String>,
    /// `def.outputs`, as sent (shapes vary: `{type,targetDataset,...}` or `{type,id,...}`).
    pub outputs: Vec<Value>,
    /// The whole `def` object.
    pub raw: Value,
}

impl JobDefinitionSummary {
    fn from_value(def: &Value) -> Option<Self> {
        let obj = def.as_object()?;
        Some(Self {
            id: str_field(obj, "id"),
            name: str_field(obj, "name"),
            job_type: str_field(obj, "type"),
            initiator: str_field(obj, "initiator"),
            initiation_timestamp: time_field(obj, "initiationTimestamp"),
            triggered_from: str_field(obj, "triggeredFrom"),
            outputs: obj
                .get("outputs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            raw: def.clone(),
        })
    }
}

/// One job of a listing (`GET /projects/{pk}/jobs/`, `.../jobs/running/`, `/jobs/running/`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobListItem {
    /// The job id: top-level `jobId`, else `def.id`.
    pub job_id: String,
    /// The project: top-level `projectKey`, else `def.projectKey`, else the listed project.
    pub project_key: String,
    /// `state` (top level in list items).
    pub state: JobState,
    /// `stableState`: false while DSS is still processing the job. Absent means false when the state is
    /// not terminal.
    pub stable_state: bool,
    /// `startTime` (epoch ms; 0, negative or absent is `None`).
    pub start_time: Option<DateTime<Utc>>,
    /// `endTime` (epoch ms; 0, negative or absent is `None`).
    pub end_time: Option<DateTime<Utc>>,
    /// `warningsCount`.
    pub warnings_count: u64,
    /// `def`, when present.
    pub definition: Option<JobDefinitionSummary>,
}

impl JobListItem {
    /// Decodes one item; `None` when it names no job or no project (the caller cannot address it).
    pub(crate) fn from_value(item: &Value, default_project: Option<&str>) -> Option<Self> {
        let obj = item.as_object()?;
        let def = obj.get("def").and_then(Value::as_object);
        // Null-tolerant, unlike the Python client: a top-level `null` falls back to `def`.
        let job_id = str_field(obj, "jobId").or_else(|| def.and_then(|d| str_field(d, "id")))?;
        let project_key = str_field(obj, "projectKey")
            .or_else(|| def.and_then(|d| str_field(d, "projectKey")))
            .or_else(|| default_project.map(str::to_owned))?;
        let state = state_field(obj);
        let stable_state = bool_field(obj, "stableState").unwrap_or_else(|| state.is_terminal());
        Some(Self {
            job_id,
            project_key,
            state,
            stable_state,
            start_time: time_field(obj, "startTime"),
            end_time: time_field(obj, "endTime"),
            warnings_count: u64_field(obj, "warningsCount"),
            definition: obj.get("def").and_then(JobDefinitionSummary::from_value),
        })
    }
}

/// What [`DssClient::search_jobs`](super::DssClient::search_jobs) found in a project's listing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSearch {
    /// The accepted jobs, in DSS's order, at most the `max_matches` asked for.
    pub matches: Vec<JobListItem>,
    /// How many jobs were accepted, kept or not: more than `matches.len()` when the cap cut them.
    pub total_matches: usize,
    /// How many items the listing had.
    pub listed: usize,
}

/// The state of one activity of a job (an activity builds one output partition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActivityStatus {
    /// The activity id, e.g. `compute_cat_train_hdfs_NP`; usable as `get_log`'s `activity`.
    pub id: String,
    /// Its state.
    pub state: JobState,
}

/// `globalState`: activity counts of a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GlobalState {
    /// Activities done.
    pub done: u64,
    /// Activities failed.
    pub failed: u64,
    /// Activities running.
    pub running: u64,
    /// All activities. A `DONE` job with `total == 0` had nothing to build.
    pub total: u64,
    /// The whole object.
    pub raw: Value,
}

/// The status document of a job (`GET /projects/{pk}/jobs/{id}/`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// `baseStatus.state`.
    pub state: JobState,
    /// `baseStatus.stableState`.
    pub stable_state: Option<bool>,
    /// `baseStatus.startTime`.
    pub start_time: Option<DateTime<Utc>>,
    /// `baseStatus.endTime`.
    pub end_time: Option<DateTime<Utc>>,
    /// `baseStatus.warningsCount`.
    pub warnings_count: u64,
    /// `baseStatus.def`.
    pub definition: Option<JobDefinitionSummary>,
    /// Per-activity states, from an `activities` map (in `baseStatus` or at the top level) when DSS
    /// sends one; empty otherwise. Sorted by id.
    pub activities: Vec<ActivityStatus>,
    /// `globalState`, when present.
    pub global_state: Option<GlobalState>,
    /// The whole document.
    pub raw: Value,
}

impl JobStatus {
    /// The activities that ended `FAILED`: where to look for the failure's log.
    pub fn failed_activities(&self) -> impl Iterator<Item = &ActivityStatus> {
        self.activities.iter().filter(|a| a.state == JobState::Failed)
    }
}

/// `GET /auth/info`: who the key authenticates as.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthInfo {
    /// `authIdentifier`: the login of a user, or the id of an API key.
    pub auth_identifier: String,
    /// `groups`, when sent.
    pub groups: Vec<String>,
    /// The whole document.
    pub raw: Value,
}

/// The answer to a job start.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StartedJob {
    /// The id DSS gave the job.
    pub id: String,
    /// The whole answer (real DSS returns the stored job definition).
    pub raw: Value,
}

/// The build mode of a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildType {
    /// Build only the outputs ("build only this").
    #[default]
    NonRecursiveForcedBuild,
    /// Rebuild outdated upstream datasets too ("smart").
    RecursiveBuild,
    /// Rebuild everything upstream.
    RecursiveForcedBuild,
    /// Build only missing data (deprecated in DSS 12).
    RecursiveMissingOnlyBuild,
}

impl BuildType {
    /// Every build type.
    pub const ALL: [BuildType; 4] = [
        BuildType::NonRecursiveForcedBuild,
        BuildType::RecursiveBuild,
        BuildType::RecursiveForcedBuild,
        BuildType::RecursiveMissingOnlyBuild,
    ];

    /// The DSS spelling, e.g. `NON_RECURSIVE_FORCED_BUILD`.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildType::NonRecursiveForcedBuild => "NON_RECURSIVE_FORCED_BUILD",
            BuildType::RecursiveBuild => "RECURSIVE_BUILD",
            BuildType::RecursiveForcedBuild => "RECURSIVE_FORCED_BUILD",
            BuildType::RecursiveMissingOnlyBuild => "RECURSIVE_MISSING_ONLY_BUILD",
        }
    }
}

impl fmt::Display for BuildType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildType {
    type Err = String;
    /// Accepts the DSS spelling, case-insensitively, with `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        BuildType::ALL
            .into_iter()
            .find(|t| t.as_str() == norm)
            .ok_or_else(|| {
                let names: Vec<_> = BuildType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown build type {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// The type of a buildable object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ObjectType {
    /// `DATASET`
    #[default]
    Dataset,
    /// `MANAGED_FOLDER`
    ManagedFolder,
    /// `SAVED_MODEL`
    SavedModel,
    /// `STREAMING_ENDPOINT`
    StreamingEndpoint,
    /// `MODEL_EVALUATION_STORE`
    ModelEvaluationStore,
    /// `RETRIEVABLE_KNOWLEDGE` (a knowledge bank)
    RetrievableKnowledge,
}

impl ObjectType {
    /// Every object type.
    pub const ALL: [ObjectType; 6] = [
        ObjectType::Dataset,
        ObjectType::ManagedFolder,
        ObjectType::SavedModel,
        ObjectType::StreamingEndpoint,
        ObjectType::ModelEvaluationStore,
        ObjectType::RetrievableKnowledge,
    ];

    /// The DSS spelling, e.g. `MANAGED_FOLDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Dataset => "DATASET",
            ObjectType::ManagedFolder => "MANAGED_FOLDER",
            ObjectType::SavedModel => "SAVED_MODEL",
            ObjectType::StreamingEndpoint => "STREAMING_ENDPOINT",
            ObjectType::ModelEvaluationStore => "MODEL_EVALUATION_STORE",
            ObjectType::RetrievableKnowledge => "RETRIEVABLE_KNOWLEDGE",
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectType {
    type Err = String;
    /// Accepts the DSS spelling, case-insensitively, with `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        ObjectType::ALL
            .into_iter()
            .find(|t| t.as_str() == norm)
            .ok_or_else(|| {
                let names: Vec<_> = ObjectType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown object type {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// One output of a job definition. Serialized as dataikuapi does: `{type, id, projectKey, partition}`,
/// with `null` for unset fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOutput {
    /// `type`: `null` means a dataset.
    #[serde(rename = "type", default)]
    pub object_type: Option<ObjectType>,
    /// The dataset name, or the id of a folder, model, evaluation store or knowledge bank.
    pub id: String,
    /// The project owning the object; `null` means the job's project.
    #[serde(default)]
    pub project_key: Option<String>,
    /// A partition spec such as `2024-01-01|FR` or `NP`; `null` means not partitioned.
    #[serde(default)]
    pub partition: Option<String>,
}

/// A job definition, the body of `POST /projects/{pk}/jobs/`. Serializes to exactly the body dataikuapi's
/// `JobDefinitionBuilder` sends (`dss-api.md` 3.2); deserializes from that body or the shorter form of
/// the documentation (`{"type", "outputs"}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDefinition {
    /// `type`: the build mode.
    #[serde(rename = "type", default)]
    pub job_type: BuildType,
    /// `refreshHiveMetastore`.
    #[serde(default)]
    pub refresh_hive_metastore: bool,
    /// `outputs`: what to build; at least one.
    pub outputs: Vec<JobOutput>,
    /// `autoUpdateSchemaBeforeEachRecipeRun`.
    #[serde(default)]
    pub auto_update_schema_before_each_recipe_run: bool,
}

impl JobDefinition {
    /// Checks what DSS would refuse: no outputs, or an output with an empty id.
    pub fn validate(&self) -> Result<(), String> {
        if self.outputs.is_empty() {
            return Err("a job definition needs at least one output".to_owned());
        }
        if self.outputs.iter().any(|o| o.id.trim().is_empty()) {
            return Err("every output needs a non-empty id".to_owned());
        }
        Ok(())
    }
}

/// Builds a [`JobDefinition`] with the knobs of dataikuapi's `JobDefinitionBuilder`.
#[derive(Clone, Debug, Default)]
pub struct JobDefinitionBuilder {
    definition: JobDefinition,
}

impl JobDefinitionBuilder {
    /// A builder for a job of the given type, no outputs, both flags false.
    pub fn new(job_type: BuildType) -> Self {
        Self {
            definition: JobDefinition {
                job_type,
                ..JobDefinition::default()
            },
        }
    }

    /// Sets the build type.
    pub fn with_type(mut self, job_type: BuildType) -> Self {
        self.definition.job_type = job_type;
        self
    }

    /// Sets `refreshHiveMetastore`.
    pub fn with_refresh_metastore(mut self, refresh: bool) -> Self {
        self.definition.refresh_hive_metastore = refresh;
        self
    }

    /// Appends an output. `None` fields are sent as `null`, as dataikuapi does.
    pub fn with_output(
        mut self,
        id: impl Into<String>,
        object_type: Option<ObjectType>,
        project_key: Option<&str>,
        partition: Option<&str>,
    ) -> Self {
        self.definition.outputs.push(JobOutput {
            object_type,
            id: id.into(),
            project_key: project_key.map(str::to_owned),
            partition: partition.map(str::to_owned),
        });
        self
    }

    /// Appends a prepared output.
    pub fn with_job_output(mut self, output: JobOutput) -> Self {
        self.definition.outputs.push(output);
        self
    }

    /// Sets `autoUpdateSchemaBeforeEachRecipeRun`.
    pub fn with_auto_update_schema_before_each_recipe_run(mut self, auto_update: bool) -> Self {
        self.definition.auto_update_schema_before_each_recipe_run = auto_update;
        self
    }

    /// The definition.
    pub fn build(self) -> JobDefinition {
        self.definition
    }
}

// ---------------------------------------------------------------------------------------------------
// Decoders. Each takes the raw body and returns a detail message on failure (the client turns it into
// `Error::Decode`). serde_json limits nesting depth, so hostile documents fail cleanly.

pub(super) fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

/// Decodes a status document. `baseStatus` must be an object with a string `state`.
pub(crate) fn decode_status(body: &[u8]) -> Result<JobStatus, String> {
    let raw = parse_json(body)?;
    let doc = raw
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, got {}", kind(&raw)))?;
    let base = match doc.get("baseStatus") {
        Some(Value::Object(base)) => base,
        Some(Value::Null) | None => return Err("the status has no baseStatus".to_owned()),
        Some(other) => return Err(format!("baseStatus is {}, not an object", kind(other))),
    };
    let state = match base.get("state") {
        Some(Value::String(s)) => JobState::from_dss(s),
        _ => return Err("baseStatus has no state".to_owned()),
    };
    let mut activities = Vec::new();
    for source in [base.get("activities"), doc.get("activities")]
        .into_iter()
        .flatten()
    {
        collect_activities(source, &mut activities);
    }
    activities.sort_by(|a, b| a.id.cmp(&b.id));
    activities.dedup_by(|a, b| a.id == b.id);
    let global_state = doc
        .get("globalState")
        .and_then(Value::as_object)
        .map(|g| GlobalState {
            done: u64_field(g, "done"),
            failed: u64_field(g, "failed"),
            running: u64_field(g, "running"),
            total: u64_field(g, "total"),
            raw: Value::Object(g.clone()),
        });
    Ok(JobStatus {
        state,
        stable_state: bool_field(base, "stableState"),
        start_time: time_field(base, "startTime"),
        end_time: time_field(base, "endTime"),
        warnings_count: u64_field(base, "warningsCount"),
        definition: base.get("def").and_then(JobDefinitionSummary::from_value),
        activities,
        global_state,
        raw,
    })
}

/// Reads activities from a map `{id: {state}|"STATE"}` or a list `[{id|activityId, state}]`.
fn collect_activities(source: &Value, out: &mut Vec<ActivityStatus>) {
    let state_of = |v: &Value| match v {
        Value::String(s) => Some(JobState::from_dss(s)),
        Value::Object(o) => o.get("state").and_then(Value::as_str).map(JobState::from_dss),
        _ => None,
    };
    match source {
        Value::Object(map) => {
            for (id, v) in map {
                if let Some(state) = state_of(v) {
                    out.push(ActivityStatus {
                        id: id.clone(),
                        state,
                    });
                }
            }
        }
        Value::Array(list) => {
            for v in list {
                let Some(obj) = v.as_object() else { continue };
                let id = str_field(obj, "id").or_else(|| str_field(obj, "activityId"));
                if let (Some(id), Some(state)) = (id, state_of(v)) {
                    out.push(ActivityStatus { id, state });
                }
            }
        }
        _ => {}
    }
}

/// Decodes a job start answer: an object with a non-empty string `id`.
pub(crate) fn decode_started(body: &[u8]) -> Result<StartedJob, String> {
    let raw = parse_json(body)?;
    let id = raw
        .as_object()
        .and_then(|o| str_field(o, "id"))
        .ok_or_else(|| "the start answer has no job id".to_owned())?;
    Ok(StartedJob { id, raw })
}

/// Decodes `GET /auth/info`: `authIdentifier` is required.
pub(crate) fn decode_auth_info(body: &[u8]) -> Result<AuthInfo, String> {
    let raw = parse_json(body)?;
    let obj = raw
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, got {}", kind(&raw)))?;
    let auth_identifier =
        str_field(obj, "authIdentifier").ok_or_else(|| "the answer has no authIdentifier".to_owned())?;
    let groups = obj
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(AuthInfo {
        auth_identifier,
        groups,
        raw,
    })
}

pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub(super) fn bool_field(obj: &Map<String, Value>, key: &str) -> Option<bool> {
    obj.get(key).and_then(Value::as_bool)
}

fn state_field(obj: &Map<String, Value>) -> JobState {
    JobState::from_dss(obj.get("state").and_then(Value::as_str).unwrap_or(""))
}

/// A count: a non-negative integer (floats are truncated, strings of digits accepted); anything else 0.
fn u64_field(obj: &Map<String, Value>, key: &str) -> u64 {
    match obj.get(key) {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64().filter(|f| f.is_finite() && *f > 0.0).map(|f| f as u64) // `as` saturates
        }),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .unwrap_or(0)
}

/// A time: epoch milliseconds (integer, float or digit string) or an RFC 3339 string. Zero, negative,
/// absent or out-of-range values are `None`.
pub(super) fn time_field(obj: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    let millis = match obj.get(key)? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))?,
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => {
                return DateTime::parse_from_rfc3339(s.trim())
                    .ok()
                    .map(|d| d.with_timezone(&Utc));
            }
        },
        _ => return None,
    };
    if millis <= 0 {
        return None;
    }
    DateTime::from_timestamp_millis(millis)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::dss::listing::{decode_job_list, decode_project_keys};

    const DOC_ITEM: &str = r#"{
      "def": {
        "id": "build_cat_train_hdfs_NP_2015-09-28T09-17-37.455",
        "initiationTimestamp": 1443431857455,
        "initiator": "API (aa)",
        "mailNotification": false,
        "name": "build_cat_train_hdfs_NP",
        "outputs": [ { "targetDataset": "cat_train_hdfs", "targetDatasetProjectKey": "IMPALA",
                       "targetPartition": "NP", "type": "DATASET" } ],
        "projectKey": "IMPALA",
        "refreshHiveMetastore": false,
        "refreshIntermediateMirrors": true,
        "refreshTargetMirrors": true,
        "triggeredFrom": "API",
        "type": "NON_RECURSIVE_FORCED_BUILD"
      },
      "endTime": 0,
      "stableState": true,
      "startTime": 0,
      "state": "ABORTED",
      "warningsCount": 0
    }"#;

    #[test]
    fn documented_list_item_shape() {
        let body = format!("[{DOC_ITEM}]");
        let jobs = decode_job_list(body.as_bytes(), Some("OTHER")).unwrap();
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job.job_id, "build_cat_train_hdfs_NP_2015-09-28T09-17-37.455");
        assert_eq!(job.project_key, "IMPALA");
        assert_eq!(job.state, JobState::Aborted);
        assert!(job.stable_state);
        assert_eq!(job.start_time, None);
        assert_eq!(job.end_time, None);
        assert_eq!(job.warnings_count, 0);
        let def = job.definition.as_ref().unwrap();
        assert_eq!(def.initiator.as_deref(), Some("API (aa)"));
        assert_eq!(def.job_type.as_deref(), Some("NON_RECURSIVE_FORCED_BUILD"));
        assert_eq!(def.triggered_from.as_deref(), Some("API"));
        assert_eq!(
            def.initiation_timestamp.unwrap().timestamp_millis(),
            1443431857455
        );
        assert_eq!(def.outputs.len(), 1);
    }

    #[test]
    fn top_level_list_item_shape() {
        let body = r#"[{"jobId":"j1","projectKey":"P","state":"RUNNING","stableState":false,
                        "startTime":1700000000000,"endTime":-1,"warningsCount":3}]"#;
        let jobs = decode_job_list(body.as_bytes(), None).unwrap();
        assert_eq!(jobs[0].job_id, "j1");
        assert_eq!(jobs[0].project_key, "P");
        assert_eq!(jobs[0].state, JobState::Running);
        assert!(!jobs[0].stable_state);
        assert_eq!(jobs[0].start_time.unwrap().timestamp_millis(), 1_700_000_000_000);
        assert_eq!(jobs[0].end_time, None);
        assert_eq!(jobs[0].warnings_count, 3);
        assert!(jobs[0].definition.is_none());
    }

    #[test]
    fn nulls_fall_back_and_missing_fields_are_tolerated() {
        let body = r#"[
          {"jobId":null,"projectKey":null,"def":{"id":"j2","projectKey":"Q"},"state":null,
           "stableState":null,"startTime":null,"warningsCount":null},
          {"def":null,"jobId":"j3"},
          {"state":"DONE"},
          42, null, "x"
        ]"#;
        let jobs = decode_job_list(body.as_bytes(), Some("DEFAULT")).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0].job_id.as_str(), jobs[0].project_key.as_str()),
            ("j2", "Q")
        );
        assert_eq!(jobs[0].state, JobState::Unknown(String::new()));
        assert!(!jobs[0].stable_state);
        assert_eq!(
            (jobs[1].job_id.as_str(), jobs[1].project_key.as_str()),
            ("j3", "DEFAULT")
        );
        // Without a default project, an item without a project cannot be addressed.
        assert!(decode_job_list(br#"[{"jobId":"j"}]"#, None).unwrap().is_empty());
    }

    #[test]
    fn list_must_be_an_array() {
        assert!(decode_job_list(b"{}", None).is_err());
        assert!(decode_job_list(b"", None).is_err());
        assert!(decode_job_list(b"[]", None).unwrap().is_empty());
    }

    #[test]
    fn unknown_states_are_kept_and_not_terminal() {
        let state = JobState::from_dss("COMPUTING_DEPS");
        assert_eq!(state, JobState::Unknown("COMPUTING_DEPS".into()));
        assert!(!state.is_terminal());
        assert_eq!(state.as_str(), "COMPUTING_DEPS");
        assert!(!JobState::NotStarted.is_terminal());
        assert!(!JobState::Running.is_terminal());
        for s in [JobState::Done, JobState::Failed, JobState::Aborted] {
            assert!(s.is_terminal());
            assert_eq!(serde_json::to_value(&s).unwrap(), json!(s.as_str()));
            assert_eq!(serde_json::from_value::<JobState>(json!(s.as_str())).unwrap(), s);
        }
        assert_eq!(JobState::from_dss("done"), JobState::Unknown("done".into()));
    }

    #[test]
    fn status_document() {
        let body = json!({
            "baseStatus": {
                "state": "FAILED", "stableState": true, "startTime": 1700000000000_i64,
                "endTime": 1700000060000_i64, "warningsCount": 2,
                "def": {"id": "j", "projectKey": "P", "type": "RECURSIVE_BUILD"},
                "activities": {"compute_a_NP": {"state": "DONE"}, "compute_b_NP": {"state": "FAILED"}}
            },
            "globalState": {"done": 1, "failed": 1, "running": 0, "total": 2, "extra": 9}
        });
        let status = decode_status(body.to_string().as_bytes()).unwrap();
        assert_eq!(status.state, JobState::Failed);
        assert_eq!(status.stable_state, Some(true));
        assert_eq!(status.warnings_count, 2);
        assert_eq!(status.definition.as_ref().unwrap().id.as_deref(), Some("j"));
        assert_eq!(status.activities.len(), 2);
        assert_eq!(
            status
                .failed_activities()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>(),
            ["compute_b_NP"]
        );
        let global = status.global_state.unwrap();
        assert_eq!(
            (global.done, global.failed, global.running, global.total),
            (1, 1, 0, 2)
        );
    }

    #[test]
    fn status_activities_as_list_or_top_level_and_absent() {
        let body = br#"{"baseStatus":{"state":"RUNNING"},
                        "activities":[{"activityId":"a1","state":"RUNNING"},{"id":"a0","state":"DONE"},7]}"#;
        let status = decode_status(body).unwrap();
        assert_eq!(
            status
                .activities
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>(),
            ["a0", "a1"]
        );
        let status = decode_status(br#"{"baseStatus":{"state":"NOT_STARTED"}}"#).unwrap();
        assert!(status.activities.is_empty());
        assert!(status.global_state.is_none());
        assert_eq!(status.stable_state, None);
    }

    #[test]
    fn status_without_base_status_is_a_decode_error() {
        for body in [
            r#"{}"#,
            r#"{"baseStatus":null}"#,
            r#"{"baseStatus":"DONE"}"#,
            r#"{"baseStatus":{}}"#,
            r#"{"baseStatus":{"state":null}}"#,
            r#"{"baseStatus":{"state":3}}"#,
            r#"[]"#,
            r#""#,
            r#"null"#,
        ] {
            assert!(decode_status(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn times() {
        let obj = |v: Value| json!({ "t": v }).as_object().unwrap().clone();
        assert_eq!(time_field(&obj(json!(0)), "t"), None);
        assert_eq!(time_field(&obj(json!(-5)), "t"), None);
        assert_eq!(time_field(&obj(json!(null)), "t"), None);
        assert_eq!(time_field(&obj(json!("x")), "t"), None);
        assert_eq!(time_field(&obj(json!(1e300)), "t"), None);
        assert_eq!(time_field(&obj(json!(u64::MAX)), "t"), None);
        assert_eq!(time_field(&obj(json!(i64::MAX)), "t"), None);
        assert_eq!(
            time_field(&obj(json!(1000.7)), "t").unwrap().timestamp_millis(),
            1000
        );
        assert_eq!(
            time_field(&obj(json!("1000")), "t").unwrap().timestamp_millis(),
            1000
        );
        assert_eq!(
            time_field(&obj(json!("1970-01-01T00:00:01Z")), "t")
                .unwrap()
                .timestamp_millis(),
            1000
        );
        assert_eq!(u64_field(&obj(json!(-3)), "t"), 0);
        assert_eq!(u64_field(&obj(json!(1e300)), "t"), u64::MAX);
        assert_eq!(u64_field(&obj(json!("12")), "t"), 12);
        assert_eq!(u64_field(&obj(json!([1])), "t"), 0);
    }

    #[test]
    fn started_auth_and_projects() {
        let started = decode_started(br#"{"id":"build_x_NP_2024","projectKey":"P"}"#).unwrap();
        assert_eq!(started.id, "build_x_NP_2024");
        assert_eq!(started.raw["projectKey"], "P");
        for bad in [
            &b"{}"[..],
            b"{\"id\":null}",
            b"{\"id\":\"\"}",
            b"{\"id\":5}",
            b"[]",
            b"",
        ] {
            assert!(decode_started(bad).is_err());
        }
        let info = decode_auth_info(br#"{"authIdentifier":"key-1","groups":["a",1]}"#).unwrap();
        assert_eq!(info.auth_identifier, "key-1");
        assert_eq!(info.groups, ["a"]);
        assert!(decode_auth_info(b"{}").is_err());
        let keys = decode_project_keys(br#"[{"projectKey":"A"},{"name":"x"},{"projectKey":"B"},1]"#).unwrap();
        assert_eq!(keys, ["A", "B"]);
        assert!(decode_project_keys(b"{}").is_err());
    }

    fn body(definition: &JobDefinition) -> String {
        serde_json::to_string(definition).unwrap()
    }

    #[test]
    fn builder_body_matches_dataikuapi_exactly() {
        // p.new_job().with_output("ds_c")
        let def = JobDefinitionBuilder::new(BuildType::NonRecursiveForcedBuild)
            .with_output("ds_c", None, None, None)
            .build();
        assert_eq!(
            body(&def),
            r#"{"type":"NON_RECURSIVE_FORCED_BUILD","refreshHiveMetastore":false,"outputs":[{"type":null,"id":"ds_c","projectKey":null,"partition":null}],"autoUpdateSchemaBeforeEachRecipeRun":false}"#
        );

        // p.new_job("RECURSIVE_BUILD").with_type("RECURSIVE_FORCED_BUILD").with_refresh_metastore(True)...
        let def = JobDefinitionBuilder::new(BuildType::RecursiveBuild)
            .with_type(BuildType::RecursiveForcedBuild)
            .with_refresh_metastore(true)
            .with_output(
                "ds_b",
                Some(ObjectType::Dataset),
                Some("PROJ"),
                Some("2024-01-01|FR"),
            )
            .with_output("Fold3r1d", Some(ObjectType::ManagedFolder), None, None)
            .with_output("SmId1234", Some(ObjectType::SavedModel), Some("OTHER"), None)
            .with_auto_update_schema_before_each_recipe_run(true)
            .build();
        let expected = json!({"type": "RECURSIVE_FORCED_BUILD", "refreshHiveMetastore": true,
         "outputs": [{"type": "DATASET", "id": "ds_b", "projectKey": "PROJ", "partition": "2024-01-01|FR"},
                     {"type": "MANAGED_FOLDER", "id": "Fold3r1d", "projectKey": null, "partition": null},
                     {"type": "SAVED_MODEL", "id": "SmId1234", "projectKey": "OTHER", "partition": null}],
         "autoUpdateSchemaBeforeEachRecipeRun": true});
        assert_eq!(serde_json::to_value(&def).unwrap(), expected);
        // Same key order as the Python dict, byte for byte (modulo json.dumps's spaces).
        assert_eq!(
            body(&def),
            concat!(
                r#"{"type":"RECURSIVE_FORCED_BUILD","refreshHiveMetastore":true,"outputs":["#,
                r#"{"type":"DATASET","id":"ds_b","projectKey":"PROJ","partition":"2024-01-01|FR"},"#,
                r#"{"type":"MANAGED_FOLDER","id":"Fold3r1d","projectKey":null,"partition":null},"#,
                r#"{"type":"SAVED_MODEL","id":"SmId1234","projectKey":"OTHER","partition":null}],"#,
                r#""autoUpdateSchemaBeforeEachRecipeRun":true}"#
            )
        );
    }

    #[test]
    fn definition_from_the_documented_short_form() {
        let def: JobDefinition = serde_json::from_str(
            r#"{"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "dataset_to_build", "type": "DATASET", "partition": "NP"}]}"#,
        )
        .unwrap();
        assert_eq!(def.outputs[0].object_type, Some(ObjectType::Dataset));
        assert_eq!(def.outputs[0].partition.as_deref(), Some("NP"));
        assert!(!def.refresh_hive_metastore);
        assert!(def.validate().is_ok());
        assert!(JobDefinition::default().validate().is_err());
        let types: Vec<_> = ObjectType::ALL
            .iter()
            .map(|t| serde_json::to_value(t).unwrap())
            .collect();
        assert_eq!(
            types,
            [
                json!("DATASET"),
                json!("MANAGED_FOLDER"),
                json!("SAVED_MODEL"),
                json!("STREAMING_ENDPOINT"),
                json!("MODEL_EVALUATION_STORE"),
                json!("RETRIEVABLE_KNOWLEDGE")
            ]
        );
        assert_eq!(
            "recursive-build".parse::<BuildType>().unwrap(),
            BuildType::RecursiveBuild
        );
        assert_eq!(
            "managed_folder".parse::<ObjectType>().unwrap(),
            ObjectType::ManagedFolder
        );
        assert!("nope".parse::<BuildType>().is_err());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".*".prop_map(Value::String),
            prop_oneof![
                Just("DONE"),
                Just("FAILED"),
                Just("RUNNING"),
                Just("state"),
                Just("baseStatus"),
                Just("jobId"),
                Just("def"),
                Just("id"),
                Just("projectKey")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            let key = prop_oneof![
                Just("baseStatus".to_owned()),
                Just("state".to_owned()),
                Just("def".to_owned()),
                Just("id".to_owned()),
                Just("jobId".to_owned()),
                Just("projectKey".to_owned()),
                Just("startTime".to_owned()),
                Just("endTime".to_owned()),
                Just("warningsCount".to_owned()),
                Just("activities".to_owned()),
                Just("globalState".to_owned()),
                Just("stableState".to_owned()),
                Just("initiationTimestamp".to_owned()),
                Just("outputs".to_owned()),
                ".*".prop_map(|s| s),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn decode_everything(bytes: &[u8]) {
        let _ = decode_job_list(bytes, Some("P"));
        let _ = decode_job_list(bytes, None);
        let _ = decode_status(bytes);
        let _ = decode_started(bytes);
        let _ = decode_project_keys(bytes);
        let _ = decode_auth_info(bytes);
        let _ = crate::dss::error::ErrorBody::parse(bytes, "key");
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            decode_everything(&bytes);
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_json(value in arb_json()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            decode_everything(&bytes);
            let wrapped = serde_json::to_vec(&json!([value.clone()])).unwrap();
            decode_everything(&wrapped);
            let status = serde_json::to_vec(&json!({"baseStatus": value})).unwrap();
            decode_everything(&status);
        }

        #[test]
        fn decoders_never_panic_on_hostile_numbers(n in "-?[0-9]{1,400}(\\.[0-9]{0,20})?(e-?[0-9]{1,6})?") {
            let doc = format!(r#"[{{"jobId":"j","projectKey":"p","startTime":{n},"endTime":{n},"warningsCount":{n},"def":{{"initiationTimestamp":{n}}}}}]"#);
            decode_everything(doc.as_bytes());
            let status = format!(r#"{{"baseStatus":{{"state":"DONE","startTime":{n},"warningsCount":{n}}},"globalState":{{"done":{n}}}}}"#);
            decode_everything(status.as_bytes());
        }
    }

    #[test]
    fn deeply_nested_documents_fail_cleanly() {
        for depth in [200, 100_000] {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            decode_everything(doc.as_bytes());
            assert!(decode_job_list(doc.as_bytes(), None).is_err());
            let doc = format!(
                r#"{{"baseStatus":{}1{}}}"#,
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            );
            assert!(decode_status(doc.as_bytes()).is_err());
        }
    }
}
