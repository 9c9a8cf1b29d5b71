//! The emulator's configuration file: the instance, its projects and flows, the API keys, how each
//! object builds, and the faults to inject. Everything has a default, so a minimal file only names a
//! project, its datasets and a key. `docs/emulator.md` documents the format with examples.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use super::{error::Error, faults::Faults};

/// The whole emulator configuration (YAML or JSON, camelCase keys).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Instance-wide settings: version, concurrency limit, time scale, retention.
    #[serde(default)]
    pub instance: InstanceConfig,
    /// How an object builds when neither it nor its partition says otherwise.
    #[serde(default)]
    pub defaults: BuildSpec,
    /// The projects, with their objects and flows.
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// The API keys the emulator accepts.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Faults injected into DSS API calls from the start (the admin API can change them later).
    #[serde(default)]
    pub faults: Faults,
    /// A file holding one more API key, accepted with every permission (id `sandbox`). This is how the
    /// Helm chart's emulator sandbox shares a generated key with the operator through a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<std::path::PathBuf>,
}

impl Config {
    /// Parses a configuration from YAML (JSON is YAML too) and reads its `apiKeyFile`. Its
    /// consistency (flow, keys, rates) is checked when the emulator is started with it.
    pub fn from_yaml(text: &str) -> Result<Config, Error> {
        let mut config: Config = serde_yaml::from_str(text).map_err(Error::ParseConfig)?;
        if let Some(path) = &config.api_key_file {
            let key = std::fs::read_to_string(path)
                .map_err(|source| Error::ReadConfig {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string();
            config.api_keys.push(ApiKeyConfig {
                key,
                id: "sandbox".to_string(),
                admin: true,
                ..ApiKeyConfig::default()
            });
        }
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text)
    }
}

/// Instance-wide settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceConfig {
    /// The DSS version reported by `GET /instance-info` and the `DSS-Version` header.
    #[serde(default = "default_dss_version")]
    pub dss_version: String,
    /// The node name reported by `GET /instance-info`.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// How many activities may run at once on the whole instance; further jobs wait in
    /// `NOT_STARTED`. `0` means no limit.
    #[serde(default = "default_max_running_activities")]
    pub max_running_activities: u32,
    /// Speeds up (or slows down) every build duration: a `durationMs` of 5000 with `timeScale: 10`
    /// takes 500 ms of wall-clock time. Must be positive.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// How many jobs are kept per project; the oldest finished jobs are forgotten beyond it.
    #[serde(default = "default_max_jobs_retained")]
    pub max_jobs_retained: usize,
    /// How long a trigger fire waits before its scenario run starts, in milliseconds (before
    /// `timeScale`): DSS starts a requested run "after a few seconds".
    #[serde(default = "default_scenario_start_delay_ms")]
    pub scenario_start_delay_ms: u64,
    /// How many runs, and how many trigger fires, are kept per scenario; the oldest finished ones
    /// are forgotten beyond it.
    #[serde(default = "default_max_scenario_runs_retained")]
    pub max_scenario_runs_retained: usize,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            dss_version: default_dss_version(),
            node_name: default_node_name(),
            max_running_activities: default_max_running_activities(),
            time_scale: default_time_scale(),
            max_jobs_retained: default_max_jobs_retained(),
            scenario_start_delay_ms: default_scenario_start_delay_ms(),
            max_scenario_runs_retained: default_max_scenario_runs_retained(),
        }
    }
}

fn default_dss_version() -> String {
    "14.2.0".to_owned()
}
fn default_node_name() -> String {
    "kube-dss-emulator".to_owned()
}
fn default_max_running_activities() -> u32 {
    5
}
fn default_time_scale() -> f64 {
    1.0
}
fn default_max_jobs_retained() -> usize {
    20_000
}
fn default_scenario_start_delay_ms() -> u64 {
    1000
}
fn default_max_scenario_runs_retained() -> usize {
    1000
}

/// How an object (or one of its partitions) builds. Every field is optional: unset fields come
/// from the partition's object, then from the top-level `defaults`, then from built-in defaults
/// (1000 ms, `DONE`, no warnings, no extra log lines).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildSpec {
    /// How long the activity runs, in milliseconds (before `timeScale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// `DONE` or `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The error message of a failing build: the last line of its log and the activity's
    /// `errorMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many warnings the activity reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<u32>,
    /// Extra log lines, spread evenly over the activity's duration. A line starting with `WARN:`
    /// or `ERROR:` is logged at that level, others at `INFO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<String>>,
    /// Overrides for single partitions, keyed by partition identifier (e.g. `2024-01-02`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_partition: BTreeMap<String, BuildSpec>,
}

/// The outcome of a simulated build.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// The build succeeds.
    Done,
    /// The build fails with the configured message.
    Failed,
}

/// One DSS project.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project key, e.g. `ANALYTICS`.
    #[serde(alias = "key")]
    pub project_key: String,
    /// The display name (defaults to the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A short description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The owner's login (default `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Project tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Datasets (object type `DATASET`).
    #[serde(default)]
    pub datasets: Vec<ObjectConfig>,
    /// Managed folders (`MANAGED_FOLDER`), named by their id.
    #[serde(default)]
    pub managed_folders: Vec<ObjectConfig>,
    /// Saved models (`SAVED_MODEL`), named by their id.
    #[serde(default)]
    pub saved_models: Vec<ObjectConfig>,
    /// Streaming endpoints (`STREAMING_ENDPOINT`).
    #[serde(default)]
    pub streaming_endpoints: Vec<ObjectConfig>,
    /// Model evaluation stores (`MODEL_EVALUATION_STORE`), named by their id.
    #[serde(default)]
    pub model_evaluation_stores: Vec<ObjectConfig>,
    /// Knowledge banks (`RETRIEVABLE_KNOWLEDGE`), named by their id.
    #[serde(default)]
    pub knowledge_banks: Vec<ObjectConfig>,
    /// The flow: which recipe builds which outputs from which inputs.
    #[serde(default)]
    pub recipes: Vec<RecipeConfig>,
    /// Scenarios: steps that build objects, wait, warn or fail, run through the scenarios API.
    #[serde(default)]
    pub scenarios: Vec<ScenarioConfig>,
}

/// A buildable object: a dataset, folder, model, ...
///
/// An object that some recipe reads but no recipe writes is a flow source: it exists but cannot
/// be built. An object that no recipe mentions builds on its own (an implicit recipe
/// `compute_<name>`), so a minimal config needs no flow.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectConfig {
    /// The dataset name, or the id of a folder, model, ...
    #[serde(alias = "id")]
    pub name: String,
    /// A display name, for non-dataset objects (defaults to `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The dataset connector type reported in its settings (default `Filesystem`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Tags, used by `GET /projects/{pk}/datasets/?tags=`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Partitioning dimensions; empty means not partitioned.
    #[serde(default)]
    pub partitioning: Vec<DimensionConfig>,
    /// Partitions that already exist (they count as built).
    #[serde(default)]
    pub partitions: Vec<String>,
    /// Whether the (non-partitioned) object counts as already built, for `RECURSIVE_BUILD`.
    #[serde(default)]
    pub built: bool,
    /// How it builds.
    #[serde(default)]
    pub build: BuildSpec,
}

/// A partitioning dimension.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DimensionConfig {
    /// The dimension name, e.g. `day`.
    pub name: String,
    /// `time` or `value` (default `time`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For time dimensions: `YEAR`, `MONTH`, `DAY` or `HOUR` (default `DAY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// A recipe of the flow.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecipeConfig {
    /// The recipe name, e.g. `compute_orders_clean`.
    pub name: String,
    /// The recipe type shown in logs and the flow graph (default `python`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Names of the objects it reads (in the same project).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Names of the objects it writes (in the same project).
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// An API key and what it may do.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The secret the client sends.
    pub key: String,
    /// The key's id, reported as `authIdentifier` and in job initiators (`API (<id>)`).
    pub id: String,
    /// An admin key may do everything on every project.
    #[serde(default)]
    pub admin: bool,
    /// Groups reported by `GET /auth/info`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Project permissions by project key (`*` means every project): `READ_CONF`, `RUN_JOBS`,
    /// `MONITOR_JOBS`, ... `ADMIN` grants all of them.
    #[serde(default)]
    pub projects: BTreeMap<String, Vec<String>>,
}

/// A scenario: steps run one after the other when a trigger fires (the API's `run`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioConfig {
    /// The scenario id, e.g. `BUILD_DAILY` (unique in its project).
    pub id: String,
    /// The display name (defaults to the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether its automatic triggers are active, as the list and `light` report it. Runs asked
    /// for through the API start either way, as in DSS.
    #[serde(default = "default_active")]
    pub active: bool,
    /// Scenario tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The steps, in run order. A step that fails (or is aborted) ends the run; later steps do not
    /// run.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
}

fn default_active() -> bool {
    true
}

/// One step of a scenario, by `type`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum StepConfig {
    /// Builds objects with one real emulator job (it shows in the jobs API). The step's outcome is
    /// the job's: `DONE` is `SUCCESS` (`WARNING` when it reported warnings), `FAILED` is `FAILED`,
    /// `ABORTED` is `ABORTED`. DSS calls this step type `build_flowitem`.
    #[serde(rename_all = "camelCase")]
    Build {
        /// The step id (default `step_<n>`, 1-based), unique in the scenario.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The step name (default: the id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// What to build, as in a job definition: at least one computable object.
        outputs: Vec<StepOutput>,
        /// The build mode of the job (default `NON_RECURSIVE_FORCED_BUILD`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_type: Option<BuildType>,
    },
    /// Waits, then succeeds.
    #[serde(rename_all = "camelCase")]
    Wait {
        /// The step id (default `step_<n>`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The step name (default: the id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// How long, in milliseconds (before `timeScale`).
        duration_ms: u64,
    },
    /// Ends with outcome `WARNING` and logs its message.
    #[serde(rename_all = "camelCase")]
    Warn {
        /// The step id (default `step_<n>`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The step name (default: the id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The warning, logged at `WARN`.
        message: String,
        /// How long the step runs first, in milliseconds (before `timeScale`; default 0).
        #[serde(default)]
        duration_ms: u64,
    },
    /// Ends with outcome `FAILED`, with its message as the step's error (`result.thrown`).
    #[serde(rename_all = "camelCase")]
    Fail {
        /// The step id (default `step_<n>`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The step name (default: the id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The error message.
        message: String,
        /// The error code reported in `result.thrown.code`, e.g. `ERR_CUSTOM_CHECK`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// How long the step runs first, in milliseconds (before `timeScale`; default 0).
        #[serde(default)]
        duration_ms: u64,
    },
}

impl StepConfig {
    /// The configured id and name.
    pub(crate) fn labels(&self) -> (Option<&str>, Option<&str>) {
        match self {
            StepConfig::Build { id, name, .. }
            | StepConfig::Wait { id, name, .. }
            | StepConfig::Warn { id, name, .. }
            | StepConfig::Fail { id, name, .. } => (id.as_deref(), name.as_deref()),
        }
    }
}

/// An output of a build step.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepOutput {
    /// The object's name or id, in the scenario's project.
    pub id: String,
    /// Its type (`DATASET`, `MANAGED_FOLDER`, ...); any type when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    /// A partition spec, as in a job definition (comma-separated; default `NP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

/// The four build modes of a job. The emulator keeps its own wire types (this one and `ObjectType`)
/// rather than the client's in `crate::dss`: it models DSS independently of the client it is tested
/// against, so a mistake in the client's types cannot hide in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildType {
    /// `NON_RECURSIVE_FORCED_BUILD`: the outputs only.
    #[serde(rename = "NON_RECURSIVE_FORCED_BUILD")]
    NonRecursiveForced,
    /// `RECURSIVE_BUILD`: what is out of date upstream too.
    #[serde(rename = "RECURSIVE_BUILD")]
    Recursive,
    /// `RECURSIVE_FORCED_BUILD`: everything upstream too.
    #[serde(rename = "RECURSIVE_FORCED_BUILD")]
    RecursiveForced,
    /// `RECURSIVE_MISSING_ONLY_BUILD`: what was never built.
    #[serde(rename = "RECURSIVE_MISSING_ONLY_BUILD")]
    RecursiveMissingOnly,
}

impl BuildType {
    /// Parses the wire name.
    pub(crate) fn parse(s: &str) -> Option<BuildType> {
        Some(match s {
            "NON_RECURSIVE_FORCED_BUILD" => BuildType::NonRecursiveForced,
            "RECURSIVE_BUILD" => BuildType::Recursive,
            "RECURSIVE_FORCED_BUILD" => BuildType::RecursiveForced,
            "RECURSIVE_MISSING_ONLY_BUILD" => BuildType::RecursiveMissingOnly,
            _ => return None,
        })
    }

    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BuildType::NonRecursiveForced => "NON_RECURSIVE_FORCED_BUILD",
            BuildType::Recursive => "RECURSIVE_BUILD",
            BuildType::RecursiveForced => "RECURSIVE_FORCED_BUILD",
            BuildType::RecursiveMissingOnly => "RECURSIVE_MISSING_ONLY_BUILD",
        }
    }
}
