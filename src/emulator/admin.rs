//! The admin API's wire types and a small typed client for tests.
//!
//! The admin API is not part of DSS: it lives under `/__emulator/`, needs no key, and is never
//! subject to injected faults. Tests use it to see every job and every scenario fire and run,
//! finish jobs at once, change faults and keys at run time, and read request statistics.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_dss::emulator::admin::AdminError> {
//! use kube_dss::emulator::admin::{AdminClient, FinishState};
//! let admin = AdminClient::new("http://127.0.0.1:11200");
//! for job in admin.jobs().await? {
//!     admin.finish(&job.project_key, &job.id, FinishState::Done).await?;
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::{
    faults::{DropMode, FaultCounters, Faults, GatewayFault},
    stats::Stats,
};

/// A job as the admin API shows it (`GET /__emulator/jobs`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The job's project.
    pub project_key: String,
    /// The job id.
    pub id: String,
    /// `NOT_STARTED`, `RUNNING`, `DONE`, `FAILED` or `ABORTED`.
    pub state: String,
    /// The stored job definition, as `POST /projects/{pk}/jobs/` returned it.
    pub def: Value,
    /// `API (<key id>)`.
    pub initiator: String,
    /// The id of the API key that started it.
    pub api_key_id: String,
    /// Epoch milliseconds.
    pub initiation_timestamp: i64,
    /// Epoch milliseconds, 0 when not started.
    pub start_time: i64,
    /// Epoch milliseconds, 0 when not finished.
    pub end_time: i64,
    /// Epoch milliseconds of the first running-jobs listing that left the job out after it ended,
    /// 0 before.
    #[serde(default)]
    pub end_listed_time: i64,
    /// Epoch milliseconds of the first status call (`GET /projects/{pk}/jobs/{id}/`) that answered
    /// with the job ended, 0 before: when a client could first learn the outcome.
    #[serde(default)]
    pub end_read_time: i64,
    /// Warnings reported so far.
    pub warnings_count: u64,
    /// The activities in run order.
    pub activities: Vec<ActivityRecord>,
}

/// A scenario's trigger fires and runs as the admin API shows them (`GET /__emulator/scenarios`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioRecord {
    /// The scenario's project.
    pub project_key: String,
    /// The scenario id.
    pub scenario_id: String,
    /// Retained trigger fires, oldest first.
    pub fires: Vec<FireRecord>,
    /// Retained runs, oldest first.
    pub runs: Vec<RunRecord>,
}

/// A trigger fire of a [`ScenarioRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FireRecord {
    /// The trigger (`manual` for API runs).
    pub trigger_id: String,
    /// The trigger run id the `run` answer carried.
    pub trigger_run_id: String,
    /// The run parameters (the request's body).
    pub params: Value,
    /// The id of the API key that fired it.
    pub api_key_id: String,
    /// Epoch milliseconds.
    pub fired_at: i64,
    /// `PENDING`, `CANCELLED` or `STARTED`.
    pub state: String,
    /// The run it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// A run of a [`ScenarioRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The scenario run id.
    pub run_id: String,
    /// The fire that started it.
    pub trigger_run_id: String,
    /// Its parameters.
    pub params: Value,
    /// The id of the API key whose fire started it.
    pub api_key_id: String,
    /// Epoch milliseconds.
    pub start: i64,
    /// Epoch milliseconds, 0 while running.
    pub end: i64,
    /// `SUCCESS`, `WARNING`, `FAILED` or `ABORTED` once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The steps started so far.
    pub steps: Vec<StepRecord>,
}

/// A started step of a [`RunRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// The step id.
    pub id: String,
    /// Its outcome once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The job a build step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// An activity of a [`JobRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivityRecord {
    /// e.g. `compute_orders_clean_NP`.
    pub id: String,
    /// `NOT_STARTED`, `RUNNING`, `DONE`, `FAILED`, `ABORTED` or `SKIPPED`.
    pub state: String,
}

/// The terminal state a job is finished in through the admin API.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FinishState {
    /// Succeeded.
    Done,
    /// Failed (with the request's message).
    Failed,
    /// Aborted.
    Aborted,
}

/// Body of `POST /__emulator/jobs/{projectKey}/{jobId}/finish`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinishRequest {
    /// The state to finish in.
    pub state: FinishState,
    /// The failure message (for `FAILED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The job's warning count (for `DONE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<u32>,
}

/// Body of `PUT /__emulator/keys/{keyId}`: adds a key, or replaces the key with that id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    /// The secret.
    pub key: String,
    /// Project permissions by project key (`*` for all projects).
    #[serde(default)]
    pub projects: BTreeMap<String, Vec<String>>,
    /// Whether the key may do everything.
    #[serde(default)]
    pub admin: bool,
    /// Groups reported by `GET /auth/info`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An admin API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request could not be sent or its answer read.
    #[error("admin request {path} failed")]
    Transport {
        /// The admin path.
        path: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The emulator answered with an error status.
    #[error("admin request {path} was refused with {status}: {body}")]
    Rejected {
        /// The admin path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: String,
    },
}

/// A typed client of the admin API.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the emulator at `base_url` (e.g. [`super::Handle::base_url`]).
    pub fn new(base_url: impl Into<String>) -> AdminClient {
        AdminClient {
            base: base_url.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(dyn erased::Json + Sync)>,
    ) -> Result<T, AdminError> {
        let transport = |source| AdminError::Transport {
            path: path.to_owned(),
            source,
        };
        let mut req = self
            .http
            .request(method, format!("{}/__emulator{path}", self.base));
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_json());
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(AdminError::Rejected {
                path: path.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        resp.json::<T>().await.map_err(transport)
    }

    /// Every retained job, oldest first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, AdminError> {
        self.call(reqwest::Method::GET, "/jobs", None).await
    }

    /// The retained jobs of one project, oldest first.
    pub async fn project_jobs(&self, project_key: &str) -> Result<Vec<JobRecord>, AdminError> {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("projectKey", project_key)
            .finish();
        self.call(reqwest::Method::GET, &format!("/jobs?{q}"), None).await
    }

    /// Every scenario with retained fires or runs, by project and id.
    pub async fn scenarios(&self) -> Result<Vec<ScenarioRecord>, AdminError> {
        self.call(reqwest::Method::GET, "/scenarios", None).await
    }

    /// The fires and runs of one scenario (empty before its first fire).
    pub async fn scenario(&self, project_key: &str, scenario_id: &str) -> Result<ScenarioRecord, AdminError> {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("projectKey", project_key)
            .append_pair("scenarioId", scenario_id)
            .finish();
        let mut found: Vec<ScenarioRecord> = self
            .call(reqwest::Method::GET, &format!("/scenarios?{q}"), None)
            .await?;
        Ok(found.pop().unwrap_or_else(|| ScenarioRecord {
            project_key: project_key.to_owned(),
            scenario_id: scenario_id.to_owned(),
            fires: Vec::new(),
            runs: Vec::new(),
        }))
    }

    /// Finishes a job at once.
    pub async fn finish(
        &self,
        project_key: &str,
        job_id: &str,
        state: FinishState,
    ) -> Result<JobRecord, AdminError> {
        self.finish_with(
            project_key,
            job_id,
            &FinishRequest {
                state,
                message: None,
                warnings: None,
            },
        )
        .await
    }

    /// Finishes a job at once, with a message or a warning count.
    pub async fn finish_with(
        &self,
        project_key: &str,
        job_id: &str,
        request: &FinishRequest,
    ) -> Result<JobRecord, AdminError> {
        let path = format!("/jobs/{}/{}/finish", segment(project_key), segment(job_id));
        self.call(reqwest::Method::POST, &path, Some(request)).await
    }

    /// The current fault set (with the remaining dropped-start budget).
    pub async fn faults(&self) -> Result<Faults, AdminError> {
        self.call(reqwest::Method::GET, "/faults", None).await
    }

    /// Replaces the fault set.
    pub async fn set_faults(&self, faults: &Faults) -> Result<Faults, AdminError> {
        self.call(reqwest::Method::PUT, "/faults", Some(faults)).await
    }

    /// Removes every fault.
    pub async fn clear_faults(&self) -> Result<Faults, AdminError> {
        self.call(reqwest::Method::DELETE, "/faults", None).await
    }

    /// The request statistics.
    pub async fn stats(&self) -> Result<Stats, AdminError> {
        self.call(reqwest::Method::GET, "/stats", None).await
    }

    /// Forgets every job and clears the statistics (the config, keys and faults stay).
    pub async fn reset(&self) -> Result<Value, AdminError> {
        self.call(reqwest::Method::POST, "/reset", None).await
    }

    /// Adds an API key, or replaces the key with this id.
    pub async fn put_key(&self, key_id: &str, spec: &KeySpec) -> Result<Value, AdminError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/keys/{}", segment(key_id)),
            Some(spec),
        )
        .await
    }

    /// Revokes an API key.
    pub async fn delete_key(&self, key_id: &str) -> Result<Value, AdminError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/keys/{}", segment(key_id)),
            None,
        )
        .await
    }
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Lets `call` take any serialisable body without being generic over it.
mod erased {
    pub(super) trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            // These types serialise without failure (plain structs and maps with string keys).
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
