//! The DSS scenarios calls of [`DssClient`]: the Rust twin of `dataikuapi`'s `DSSScenario`,
//! `DSSTriggerFire` and `DSSScenarioRun`, with the protocol of `docs/dss-scenarios-api.md`.
//!
//! Like the job calls, each goes through the client's budget with a timeout and a bounded body read,
//! keeps the HTTP status and `errorType` of an error ([`Error::Api`]), and reports to the observer under
//! its own [`Operation`]. Two things differ from jobs and shape what a caller must do:
//!
//! - [`DssClient::run_scenario`] answers a *trigger fire*, not a run: the run appears later (find it
//!   with [`DssClient::get_run_for_trigger`]), or never when DSS cancels the fire. It is sent at most
//!   once per call. When its answer is lost, the fire may have happened: a caller that put a unique
//!   marker into the parameters finds its run with [`DssClient::get_last_scenario_runs`] and
//!   [`ScenarioRun::has_param`](super::ScenarioRun::has_param).
//! - [`DssClient::abort_scenario`] is not scoped to a run: it stops whatever run is current.

use chrono::NaiveDate;
use http::Method;
use serde_json::{Map, Value};

use super::{
    DssClient, Error, LogTail, LogTailLimits, Operation,
    client::{MAX_ERROR_BODY, MAX_JSON_BODY},
    scenario_model::{
        ScenarioListItem, ScenarioRun, ScenarioRunDetails, ScenarioStatus, TriggerFire, decode_run_details,
        decode_run_for_trigger, decode_scenario_list, decode_scenario_runs, decode_scenario_status,
        decode_trigger_fire,
    },
};

/// The Python client's spelling of booleans in queries.
fn py_bool(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// One call: what to send, and how to read the answer.
struct Call<'a, T> {
    op: Operation,
    method: Method,
    path: &'a [&'a str],
    query: &'a [(&'a str, &'a str)],
    body: Option<Vec<u8>>,
    decode: fn(&[u8]) -> Result<T, String>,
}

impl<'a, T> Call<'a, T> {
    fn get(
        op: Operation,
        path: &'a [&'a str],
        query: &'a [(&'a str, &'a str)],
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Self {
        Call {
            op,
            method: Method::GET,
            path,
            query,
            body: None,
            decode,
        }
    }
}

impl DssClient {
    /// Sends a call and decodes its JSON answer.
    async fn decoded<T>(&self, call: Call<'_, T>) -> Result<T, Error> {
        let Call {
            op,
            method,
            path,
            query,
            body,
            decode,
        } = call;
        self.observed(op, async {
            let url = self.url(op, path, query)?;
            let answer = self.send(op, method, url, body, MAX_JSON_BODY).await?;
            decode(&answer.body).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })
        })
        .await
    }

    /// `GET /projects/{pk}/scenarios/`: the project's scenarios.
    #[tracing::instrument(name = "dss.list_scenarios", level = "debug", skip_all, fields(project = project_key))]
    pub async fn list_scenarios(&self, project_key: &str) -> Result<Vec<ScenarioListItem>, Error> {
        let path = ["projects", project_key, "scenarios", ""];
        self.decoded(Call::get(
            Operation::ListScenarios,
            &path,
            &[],
            decode_scenario_list,
        ))
        .await
    }

    /// `POST /projects/{pk}/scenarios/{id}/run` with `params` as the body: fires the scenario's
    /// manual trigger and returns the trigger fire.
    ///
    /// Sent exactly once, never retried, whatever the error: after a timeout, a transport error or a
    /// 5xx the trigger may or may not have fired (see the module documentation).
    #[tracing::instrument(
        name = "dss.run_scenario",
        level = "debug",
        skip_all,
        fields(project = project_key, scenario = scenario_id, trigger_run_id)
    )]
    pub async fn run_scenario(
        &self,
        project_key: &str,
        scenario_id: &str,
        params: &Map<String, Value>,
    ) -> Result<TriggerFire, Error> {
        let op = Operation::RunScenario;
        self.observed(op, async {
            let url = self.url(
                op,
                &["projects", project_key, "scenarios", scenario_id, "run"],
                &[],
            )?;
            let body = serde_json::to_vec(params).map_err(|e| Error::InvalidArgument {
                operation: op,
                detail: format!("cannot serialize the run parameters: {e}"),
            })?;
            let answer = self
                .send(op, Method::POST, url, Some(body), MAX_JSON_BODY)
                .await?;
            let fire = decode_trigger_fire(&answer.body).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })?;
            tracing::Span::current().record("trigger_run_id", fire.trigger_run_id.as_str());
            Ok(fire)
        })
        .await
    }

    /// `GET /projects/{pk}/scenarios/trigger/{id}/{triggerId}?triggerRunId=`: the trigger fire again,
    /// to learn whether DSS cancelled it.
    #[tracing::instrument(name = "dss.get_trigger_fire", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id))]
    pub async fn get_trigger_fire(
        &self,
        project_key: &str,
        scenario_id: &str,
        trigger_id: &str,
        trigger_run_id: &str,
    ) -> Result<TriggerFire, Error> {
        let path = [
            "projects",
            project_key,
            "scenarios",
            "trigger",
            scenario_id,
            trigger_id,
        ];
        self.decoded(Call::get(
            Operation::GetTriggerFire,
            &path,
            &[("triggerRunId", trigger_run_id)],
            decode_trigger_fire,
        ))
        .await
    }

    /// `GET /projects/{pk}/scenarios/{id}/get-run-for-trigger?triggerId=&triggerRunId=`: the run the
    /// fire started, or `None` while it has none (not started yet, or never: see
    /// [`DssClient::get_trigger_fire`]).
    #[tracing::instrument(name = "dss.get_run_for_trigger", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id))]
    pub async fn get_run_for_trigger(
        &self,
        project_key: &str,
        scenario_id: &str,
        trigger_id: &str,
        trigger_run_id: &str,
    ) -> Result<Option<ScenarioRun>, Error> {
        let path = [
            "projects",
            project_key,
            "scenarios",
            scenario_id,
            "get-run-for-trigger",
        ];
        let query = [("triggerId", trigger_id), ("triggerRunId", trigger_run_id)];
        self.decoded(Call::get(
            Operation::GetRunForTrigger,
            &path,
            &query,
            decode_run_for_trigger,
        ))
        .await
    }

    /// `GET /projects/{pk}/scenarios/{id}/get-last-runs?limit=&onlyFinishedRuns=`: the last runs,
    /// newest first (`only_finished` leaves out the current run).
    #[tracing::instrument(name = "dss.get_last_scenario_runs", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id))]
    pub async fn get_last_scenario_runs(
        &self,
        project_key: &str,
        scenario_id: &str,
        limit: u32,
        only_finished: bool,
    ) -> Result<Vec<ScenarioRun>, Error> {
        let path = ["projects", project_key, "scenarios", scenario_id, "get-last-runs"];
        let limit = limit.to_string();
        let query = [
            ("limit", limit.as_str()),
            ("onlyFinishedRuns", py_bool(only_finished)),
        ];
        self.decoded(Call::get(
            Operation::GetLastScenarioRuns,
            &path,
            &query,
            decode_scenario_runs,
        ))
        .await
    }

    /// `GET /projects/{pk}/scenarios/{id}/get-runs-by-date?fromDate=&toDate=`: the runs that started
    /// from `from` (inclusive) to `to` (exclusive), dates as DSS's server reads them.
    #[tracing::instrument(name = "dss.get_scenario_runs_by_date", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id))]
    pub async fn get_scenario_runs_by_date(
        &self,
        project_key: &str,
        scenario_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<ScenarioRun>, Error> {
        let path = [
            "projects",
            project_key,
            "scenarios",
            scenario_id,
            "get-runs-by-date",
        ];
        let (from, to) = (
            from.format("%Y-%m-%d").to_string(),
            to.format("%Y-%m-%d").to_string(),
        );
        let query = [("fromDate", from.as_str()), ("toDate", to.as_str())];
        self.decoded(Call::get(
            Operation::GetScenarioRunsByDate,
            &path,
            &query,
            decode_scenario_runs,
        ))
        .await
    }

    /// `GET /projects/{pk}/scenarios/{id}/{runId}/`: one run with its step runs (outcomes, the jobs
    /// each step ran, errors).
    #[tracing::instrument(name = "dss.get_scenario_run", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id, run_id))]
    pub async fn get_scenario_run(
        &self,
        project_key: &str,
        scenario_id: &str,
        run_id: &str,
    ) -> Result<ScenarioRunDetails, Error> {
        let path = ["projects", project_key, "scenarios", scenario_id, run_id, ""];
        self.decoded(Call::get(
            Operation::GetScenarioRun,
            &path,
            &[],
            decode_run_details,
        ))
        .await
    }

    /// `GET /projects/{pk}/scenarios/{id}/light`: whether the scenario is running, and since when.
    #[tracing::instrument(name = "dss.get_scenario_status", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id))]
    pub async fn get_scenario_status(
        &self,
        project_key: &str,
        scenario_id: &str,
    ) -> Result<ScenarioStatus, Error> {
        let path = ["projects", project_key, "scenarios", scenario_id, "light"];
        self.decoded(Call::get(
            Operation::GetScenarioStatus,
            &path,
            &[],
            decode_scenario_status,
        ))
        .await
    }

    /// `POST /projects/{pk}/scenarios/{id}/abort`: aborts the scenario's current run, *whoever started
    /// it*; does nothing when it is not running. Any 2xx answer is success.
    #[tracing::instrument(name = "dss.abort_scenario", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id))]
    pub async fn abort_scenario(&self, project_key: &str, scenario_id: &str) -> Result<(), Error> {
        let op = Operation::AbortScenario;
        self.observed(op, async {
            let url = self.url(
                op,
                &["projects", project_key, "scenarios", scenario_id, "abort"],
                &[],
            )?;
            self.send(op, Method::POST, url, None, MAX_ERROR_BODY)
                .await
                .map(|_| ())
        })
        .await
    }

    /// `GET /projects/{pk}/scenarios/{id}/{runId}/log[?stepId=]`: the run's log, or one step's.
    /// Decoded as UTF-8 (invalid bytes replaced); a log larger than 16 MiB is cut to its last 16 MiB,
    /// after a first line saying so.
    #[tracing::instrument(name = "dss.get_scenario_run_log", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id, run_id))]
    pub async fn get_scenario_run_log(
        &self,
        project_key: &str,
        scenario_id: &str,
        run_id: &str,
        step_id: Option<&str>,
    ) -> Result<String, Error> {
        let op = Operation::GetScenarioRunLog;
        self.observed(op, async {
            let query: Vec<(&str, &str)> = step_id.map(|s| ("stepId", s)).into_iter().collect();
            let path = ["projects", project_key, "scenarios", scenario_id, run_id, "log"];
            let url = self.url(op, &path, &query)?;
            self.send_keep_tail(op, url).await
        })
        .await
    }

    /// The run's log, or one step's, reduced to its end as it streams in, with the API key removed
    /// (as [`DssClient::get_log_tail`] does for a job's log).
    #[tracing::instrument(name = "dss.get_scenario_run_log_tail", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id, run_id))]
    pub async fn get_scenario_run_log_tail(
        &self,
        project_key: &str,
        scenario_id: &str,
        run_id: &str,
        step_id: Option<&str>,
        limits: LogTailLimits,
    ) -> Result<LogTail, Error> {
        let op = Operation::GetScenarioRunLog;
        self.observed(op, async {
            let query: Vec<(&str, &str)> = step_id.map(|s| ("stepId", s)).into_iter().collect();
            let path = ["projects", project_key, "scenarios", scenario_id, run_id, "log"];
            let url = self.url(op, &path, &query)?;
            self.send_tail(op, url, limits).await
        })
        .await
    }
}
