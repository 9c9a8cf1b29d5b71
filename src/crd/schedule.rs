//! `DatasetBuildSchedule`: a `DatasetBuild` per cron slot, in a time zone, with catch-up.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::DatasetBuildSpec;

/// The label every build of a schedule carries: the schedule's name.
pub const SCHEDULE_LABEL: &str = "kube-dss.dev/schedule";
/// The label every build of a schedule carries: its slot, in Unix seconds.
pub const SLOT_LABEL: &str = "kube-dss.dev/slot";
/// The annotation with a build's slot as an RFC 3339 time in the schedule's time zone.
pub const SCHEDULED_TIME_ANNOTATION: &str = "kube-dss.dev/scheduled-time";
/// The annotation of a build created by `kube-dss schedules run` (value `manual`).
pub const INSTANTIATE_ANNOTATION: &str = "kube-dss.dev/instantiate";
/// The annotation that asks the operator for the build of the slot at its time (RFC 3339), once per
/// distinct value: what the Argo CD action `create-build` stamps.
pub const CREATE_BUILD_ANNOTATION: &str = "kube-dss.dev/create-build";
/// The finalizer that deletes a schedule's builds when the schedule is deleted.
pub const SCHEDULE_FINALIZER: &str = "kube-dss.dev/delete-builds";

/// The cron shape that admission checks: 5 fields, 6 (a leading seconds field), or a macro. The
/// operator parses the expression fully and reports what is wrong in the `Stalled` condition.
const SCHEDULE_RULE: &str = r"self.matches('^\\s*(@(?i:yearly|annually|monthly|weekly|daily|hourly)|[0-9A-Za-z*?,/#+-]+(\\s+[0-9A-Za-z*?,/#+-]+){4,5})\\s*$')";

/// A slot placeholder is `${slot:FORMAT}` or `${slot<+|-><N><h|d|w|M>:FORMAT}`; every `${` starts one.
/// Kept in step with `controller::schedule::template::parse`.
const PLACEHOLDERS: &str = r"^(?:[^$]|\\$+(?:[^{$]|$)|\\$*\\$\\{slot(?:[+-][0-9]{1,4}[hdwM])?:[^}]+\\})*$";

/// Builds Dataiku DSS datasets on a schedule: one `DatasetBuild` per cron slot, in a time zone, with
/// the slot's own partition (`${slot:FORMAT}` placeholders), and a catch-up of slots missed while the
/// operator was down or the schedule suspended.
// Several printer columns repeat `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-dss.dev",
    version = "v1alpha1",
    kind = "DatasetBuildSchedule",
    namespaced,
    status = "DatasetBuildScheduleStatus",
    shortname = "dsbs",
    category = "dss",
    doc = "DatasetBuildSchedule creates one DatasetBuild per cron slot (in a time zone), like a CronJob creates Jobs, with a catch-up of missed slots that builds each slot's own partition.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "TimeZone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.activeCount"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime"),
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message(
        "metadata.name must be at most 63 characters: it is the value of the kube-dss.dev/schedule label of every build of the schedule"
    ),
    validation = kube::core::Rule::new(
        "!has(self.spec.catchUp) || self.spec.catchUp != 'All' || !has(self.spec.concurrencyPolicy) || self.spec.concurrencyPolicy != 'Replace'"
    ).message("catchUp: All cannot be combined with concurrencyPolicy: Replace (each caught-up build would abort the one before it): use Forbid to run missed slots one at a time, or Allow to run them together"),
    validation = kube::core::Rule::new(
        "!has(self.spec.maxCatchUpRuns) || (has(self.spec.catchUp) && self.spec.catchUp == 'All')"
    ).message("spec.maxCatchUpRuns only applies to catchUp: All: set catchUp: All or remove maxCatchUpRuns")
)]
#[serde(rename_all = "camelCase")]
pub struct DatasetBuildScheduleSpec {
    /// When to build, as a cron expression: 5 fields (minute hour day-of-month month day-of-week), 6
    /// fields (a leading seconds field), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    /// Read in `timeZone`. A slot in a daylight-saving gap runs once, at the first valid instant after
    /// the gap; a fixed-time slot in a repeated (fall-back) hour runs once, at its first occurrence.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new(SCHEDULE_RULE).message(
        "spec.schedule must be a cron expression of 5 fields (minute hour day-of-month month day-of-week), 6 fields (a leading seconds field), or one of @hourly, @daily, @weekly, @monthly, @yearly"
    ))]
    pub schedule: String,

    /// The IANA time zone the schedule and the slot placeholders are read in, for example
    /// `Europe/Paris`. Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new(r"self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$')").message(
        "spec.timeZone must be an IANA time zone name such as Europe/Paris, America/New_York or UTC"
    ))]
    pub time_zone: Option<String>,

    /// What a slot does while a build of the schedule is still active: `Forbid` (default) waits
    /// for it to finish (within `startingDeadlineSeconds`), `Allow` runs both, `Replace` deletes the
    /// active build (its DSS job is aborted, per its `deletionPolicy`) and then starts the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,

    /// A slot that cannot start within this many seconds of its time is skipped (counted in
    /// `status.skippedSlots`, with a `SlotSkipped` event) and never started. Default: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub starting_deadline_seconds: Option<i64>,

    /// Which missed slots run after the operator was down or the schedule was suspended: `Latest`
    /// (default, as a CronJob) only the newest; `All` every one, oldest first, each with its own
    /// slot time in the placeholders (within `startingDeadlineSeconds` and `maxCatchUpRuns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,

    /// With `catchUp: All`, at most this many missed slots run (the newest ones); beyond it the
    /// older ones are counted as missed, with a `TooManyMissedSlots` warning. Default: 31.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_catch_up_runs: Option<i32>,

    /// When true, no build is created (active builds continue). On resume, missed slots are caught
    /// up per `catchUp`, within `startingDeadlineSeconds`. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Succeeded builds to keep; older ones are deleted by the operator. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_builds_history_limit: Option<i32>,

    /// Failed or aborted builds to keep; older ones are deleted by the operator. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_builds_history_limit: Option<i32>,

    /// The DatasetBuild to create for each slot. In `spec.outputs[].partition` and
    /// `spec.rerunToken`, `${slot:FORMAT}` is the slot's time in `timeZone` formatted with a
    /// strftime FORMAT (e.g. `${slot:%Y-%m-%d}`), and `${slot-1d:FORMAT}` offsets it by whole units:
    /// `h` (hours), `d` (days), `w` (weeks), `M` (months), with `-` or `+`.
    pub build_template: BuildTemplate,
}

/// What a slot does while a build of the schedule is still active.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Run the new build beside the active ones.
    Allow,
    /// Wait until the active build has finished (the slot is skipped if that takes longer than
    /// `startingDeadlineSeconds`).
    #[default]
    Forbid,
    /// Delete the active build (its DSS job is aborted per its deletionPolicy), then start the new one.
    Replace,
}

impl ConcurrencyPolicy {
    /// The policy name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Forbid => "Forbid",
            Self::Replace => "Replace",
        }
    }
}

/// Which missed slots run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum CatchUp {
    /// Only the newest missed slot (as a CronJob).
    #[default]
    Latest,
    /// Every missed slot, oldest first, up to `maxCatchUpRuns`.
    All,
}

impl CatchUp {
    /// The policy name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "Latest",
            Self::All => "All",
        }
    }
}

/// The DatasetBuild created for each slot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new(format!(
        "self.spec.outputs.all(o, !has(o.partition) || o.partition.matches('{PLACEHOLDERS}')) && (!has(self.spec.rerunToken) || self.spec.rerunToken.matches('{PLACEHOLDERS}'))"
    )).message(
        "buildTemplate: a slot placeholder must read ${slot:FORMAT} or ${slot-1d:FORMAT} (an offset of whole h, d, w or M units), e.g. ${slot:%Y-%m-%d}"
    ),
    validation = kube::core::Rule::new(
        "!has(self.spec.startDeadlineSeconds) || !has(self.spec.activeDeadlineSeconds) || self.spec.startDeadlineSeconds <= self.spec.activeDeadlineSeconds"
    ).message("buildTemplate.spec.startDeadlineSeconds must not be greater than buildTemplate.spec.activeDeadlineSeconds")
)]
pub struct BuildTemplate {
    /// Labels and annotations of each build (the operator adds `kube-dss.dev/schedule` and
    /// `kube-dss.dev/slot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The DatasetBuild spec, with slot placeholders in `outputs[].partition` and `rerunToken`.
    pub spec: DatasetBuildSpec,
}

/// Labels and annotations given to each build.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of each build.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of each build.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The observed state of a DatasetBuildSchedule. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetBuildScheduleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The slot of the newest build the schedule created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// When the newest succeeded build of the schedule finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,

    /// The next slot (absent while suspended or invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// The builds of the schedule that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ObjectReference>,

    /// How many builds are active (the ACTIVE column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_count: Option<i32>,

    /// Slots that came due while the operator was down or the schedule suspended, and that the
    /// catch-up policy did not run (`Latest`: all but the newest; `All`: beyond `maxCatchUpRuns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_slots: Option<i64>,

    /// Slots skipped because they could not start within `startingDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_slots: Option<i64>,

    /// The newest slot the operator has decided on (a build was created, or it was missed or
    /// skipped): slots after it are still to come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_slot_time: Option<Time>,

    /// The schedule and time zone `lastHandledSlotTime` refers to. When `spec.schedule` or
    /// `spec.timeZone` changes, the new schedule applies from its first slot after the change is seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_schedule: Option<String>,

    /// The last value of the `kube-dss.dev/create-build` annotation that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_create_build_annotation: Option<String>,

    /// A due slot waiting for an active build: to finish (`Forbid`) or to be gone (`Replace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_slot: Option<Time>,

    /// Standard conditions: `Ready` (valid and not suspended) and `Stalled` (invalid input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
