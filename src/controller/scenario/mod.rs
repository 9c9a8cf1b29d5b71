//! The second kind of run: a `ScenarioRun` fires a DSS scenario's manual trigger once per run request.
//! This module maps it onto the run core (its controls, its status, its states) and makes the DSS
//! scenario calls the executor needs ([`calls`]): fire (with a request marker in the parameters,
//! [`definition`]), observe (the fire, then its run and steps), abort (only the scenario's current run,
//! and only when it is ours), and the search for a lost fire by its marker.
//!
//! What differs from a job is only here: a start answers a trigger *fire*, not a run; DSS may cancel
//! the fire (`TriggerCancelled`, retried as `spec.retry` allows); the run's id is learned later and
//! kept in the observation's details.

pub(crate) mod calls;
pub(crate) mod definition;

use std::time::Duration;

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{
    connections::Resolved,
    context::RunContext,
    error::Error,
    execute::{
        Look, RunKind, Sighting,
        controls::{self, RunFields},
    },
    metrics::Metrics,
    run::{
        Candidate, Controls, Current, Handled, Kind, Past, RunStatus, Signal,
        contract::Derived,
        vocabulary::{EventAction, EventReason, RunState, Words},
    },
    stores::Stores,
};
use crate::{
    crd::{
        ConnectionRef, FailureReason, SCENARIO_FINALIZER, ScenarioHistoryEntry, ScenarioRun, ScenarioRunSpec,
        ScenarioRunStatus, StartRequest, StepSummary,
    },
    dss::{self, ScenarioOutcome},
};

/// The DSS scenario kind of run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScenarioKind;

/// What names a scenario run: the trigger fire that started it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fire {
    /// `trigger.id`.
    pub(crate) trigger_id: String,
    /// The fire's `runId`.
    pub(crate) trigger_run_id: String,
}

/// Where a scenario run is, as the status shows it (`status.outcome`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScenarioState {
    /// Fired; DSS has not started the run yet.
    Fired,
    /// DSS cancelled the fire: it will never have a run.
    Cancelled,
    /// The run is going.
    Running,
    /// The run ended with this outcome.
    Ended(ScenarioOutcome),
}

impl ScenarioState {
    /// The spelling in `status.outcome`.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Fired => "FIRED",
            Self::Cancelled => "CANCELLED",
            Self::Running => "RUNNING",
            Self::Ended(outcome) => outcome.as_str(),
        }
    }

    /// Reads `status.outcome`.
    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "FIRED" => Self::Fired,
            "CANCELLED" => Self::Cancelled,
            "RUNNING" => Self::Running,
            other => Self::Ended(ScenarioOutcome::from_dss(other)),
        }
    }
}

/// What an observation learned beyond the state: the run's id, once DSS created it, and its steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScenarioDetails {
    /// The scenario run's id.
    pub(crate) run_id: Option<String>,
    /// The steps so far.
    pub(crate) steps: Vec<StepSummary>,
}

impl Kind for ScenarioKind {
    type Handle = Fire;
    type State = ScenarioState;
    type Details = ScenarioDetails;

    const WORDS: Words = Words {
        success: "SUCCESS",
        request: "the scenario's fire",
        failed: FailureReason::ScenarioFailed,
        aborted: FailureReason::ScenarioAborted,
        not_found: FailureReason::ScenarioRunNotFound,
        started: EventReason::ScenarioStarted,
        adopted: EventReason::ScenarioAdopted,
        succeeded: EventReason::ScenarioSucceeded,
        failed_event: EventReason::ScenarioFailed,
        aborted_event: EventReason::ScenarioAborted,
        start: EventAction::StartScenario,
        poll: EventAction::PollScenario,
        abort: EventAction::AbortScenario,
        adopt: EventAction::AdoptScenario,
    };

    fn run_state(state: &ScenarioState) -> RunState {
        match state {
            ScenarioState::Fired => RunState::Queued,
            ScenarioState::Running => RunState::Running,
            // A cancelled fire failed to start a run: retried as `spec.retry` allows.
            ScenarioState::Cancelled => RunState::Failed,
            ScenarioState::Ended(ScenarioOutcome::Success | ScenarioOutcome::Warning) => RunState::Succeeded,
            ScenarioState::Ended(ScenarioOutcome::Aborted) => RunState::Aborted,
            ScenarioState::Ended(ScenarioOutcome::Failed | ScenarioOutcome::Unknown(_)) => RunState::Failed,
        }
    }

    fn accepted_state() -> ScenarioState {
        ScenarioState::Fired
    }

    fn unknown_state() -> ScenarioState {
        ScenarioState::Ended(ScenarioOutcome::Unknown("UNKNOWN".to_string()))
    }

    fn describe(fire: &Fire) -> String {
        format!("the scenario run of fire {}", fire.trigger_run_id)
    }
}

/// What the scenario calls share: every ScenarioRun of every watch scope (to tell this object's runs
/// from others').
pub(crate) struct ScenarioIo {
    /// Every ScenarioRun of every scope.
    pub(crate) runs: Stores<ScenarioRun>,
}

fn past(h: ScenarioHistoryEntry) -> Past<ScenarioKind> {
    let ScenarioHistoryEntry {
        trigger_id,
        trigger_run_id,
        run_id,
        outcome,
        start_time,
        completion_time,
    } = h;
    Past {
        handle: Fire {
            trigger_id,
            trigger_run_id,
        },
        state: outcome.as_deref().map(ScenarioState::parse),
        start_time,
        completion_time,
        details: ScenarioDetails {
            run_id,
            steps: Vec::new(),
        },
    }
}

impl RunKind for ScenarioKind {
    type Resource = ScenarioRun;
    type Status = ScenarioRunStatus;
    type Io = ScenarioIo;

    const FINALIZER: &'static str = SCENARIO_FINALIZER;
    const CONTROLLER: &'static str = "scenariorun";

    /// The run controls of a ScenarioRun: its spec (named field by field) and its annotations.
    fn controls(run: &ScenarioRun) -> Controls {
        let ScenarioRunSpec {
            connection_ref: _,
            project_key: _,
            scenario_id: _,
            params: _,
            rerun_token,
            on_spec_change,
            suspend,
            active_deadline_seconds,
            start_deadline_seconds,
            retry,
            fail_on_warnings,
            deletion_policy,
        } = &run.spec;
        let fields = RunFields {
            rerun_token,
            on_spec_change,
            suspend,
            active_deadline_seconds,
            start_deadline_seconds,
            retry,
            fail_on_warnings,
            deletion_policy,
        };
        controls::controls(
            fields,
            &run.metadata,
            |rerun| definition::run_fingerprint(&run.spec, rerun),
            definition::definition_hash(&run.spec),
        )
    }

    fn connection(res: &ScenarioRun) -> Option<&ConnectionRef> {
        res.spec.connection_ref.as_ref()
    }

    /// The run core's view of a ScenarioRun's status.
    fn read(res: &ScenarioRun) -> RunStatus<Self> {
        let Some(s) = res.status.clone() else {
            return RunStatus::default();
        };
        let ScenarioRunStatus {
            observed_generation: _,
            phase: _,
            trigger_id,
            trigger_run_id,
            run_id,
            outcome,
            start_time,
            completion_time,
            warnings_count,
            attempts: _,
            start_request,
            not_before,
            abort_request,
            last_handled_rerun_token,
            last_handled_rerun_annotation,
            last_handled_abort_annotation,
            failure,
            steps,
            history,
            conditions,
        } = s;
        let current = match (trigger_id, trigger_run_id) {
            (Some(trigger_id), Some(trigger_run_id)) => Some(Current {
                handle: Fire {
                    trigger_id,
                    trigger_run_id,
                },
                state: outcome.as_deref().map(ScenarioState::parse),
                start_time,
                completion_time,
                warnings: warnings_count,
                details: ScenarioDetails { run_id, steps },
            }),
            _ => None,
        };
        RunStatus {
            current,
            start_request,
            not_before,
            abort_request,
            handled: Handled {
                rerun_token: last_handled_rerun_token,
                rerun_annotation: last_handled_rerun_annotation,
                abort_annotation: last_handled_abort_annotation,
            },
            failure,
            history: history.into_iter().map(past).collect(),
            conditions,
        }
    }

    fn written(res: &ScenarioRun) -> Option<&ScenarioRunStatus> {
        res.status.as_ref()
    }

    /// The ScenarioRun status for the run core's status and the derived fields.
    fn write(run: RunStatus<Self>, derived: Derived) -> ScenarioRunStatus {
        let RunStatus {
            current,
            start_request,
            not_before,
            abort_request,
            handled,
            failure,
            history,
            conditions: _,
        } = run;
        let (fire, state, start_time, completion_time, warnings, details) = match current {
            Some(c) => (
                Some(c.handle),
                c.state,
                c.start_time,
                c.completion_time,
                c.warnings,
                c.details,
            ),
            None => (None, None, None, None, None, ScenarioDetails::default()),
        };
        let (trigger_id, trigger_run_id) =
            fire.map_or((None, None), |f| (Some(f.trigger_id), Some(f.trigger_run_id)));
        ScenarioRunStatus {
            observed_generation: derived.observed_generation,
            phase: Some(derived.phase),
            trigger_id,
            trigger_run_id,
            run_id: details.run_id,
            outcome: state.map(|s| s.as_str().to_string()),
            start_time,
            completion_time,
            warnings_count: warnings,
            attempts: derived.attempts,
            start_request,
            not_before,
            abort_request,
            last_handled_rerun_token: handled.rerun_token,
            last_handled_rerun_annotation: handled.rerun_annotation,
            last_handled_abort_annotation: handled.abort_annotation,
            failure,
            steps: details.steps,
            history: history
                .into_iter()
                .map(|h| ScenarioHistoryEntry {
                    trigger_id: h.handle.trigger_id,
                    trigger_run_id: h.handle.trigger_run_id,
                    run_id: h.details.run_id,
                    outcome: h.state.map(|s| s.as_str().to_string()),
                    start_time: h.start_time,
                    completion_time: h.completion_time,
                })
                .collect(),
            conditions: derived.conditions,
        }
    }

    fn key(fire: &Fire) -> String {
        format!("scenario-fire/{}/{}", fire.trigger_id, fire.trigger_run_id)
    }

    fn count(metrics: &Metrics, signal: Signal) {
        match signal {
            Signal::Started => metrics.scenario_run_started(),
            Signal::Adopted => metrics.scenario_run_adopted(),
            Signal::Finished { outcome, age } => metrics.scenario_run_finished(outcome.as_str(), age),
            Signal::OutcomeUnknown => metrics.start_outcome_unknown(),
            Signal::Trouble(category) => metrics.reconcile_error(category.as_str()),
        }
    }

    async fn start(
        _ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &ScenarioRun,
        request: &StartRequest,
    ) -> Result<Fire, dss::Error> {
        calls::fire(conn, res, request).await
    }

    async fn observe(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &ScenarioRun,
        current: &Current<Self>,
        _age: Duration,
        look: Look,
    ) -> Result<Sighting<Self>, dss::Error> {
        calls::observe(ctx, conn, res, current, look)
            .await
            .map(Sighting::polled)
    }

    fn watch(io: &ScenarioIo, store: Store<ScenarioRun>) {
        io.runs.add(store);
    }

    fn wakes(_io: &ScenarioIo, _namespace: Option<&str>) -> BoxStream<'static, ObjectRef<ScenarioRun>> {
        // Scenario runs are polled one by one: DSS has no listing of running scenarios.
        futures::stream::empty().boxed()
    }

    async fn abort(
        _ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &ScenarioRun,
        fire: &Fire,
    ) -> Result<(), dss::Error> {
        calls::abort_if_ours(conn, res, fire).await
    }

    async fn search(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &ScenarioRun,
        status: &RunStatus<Self>,
        request: &StartRequest,
        _since: Timestamp,
    ) -> Result<Vec<Candidate<Fire>>, Error> {
        calls::search(ctx, conn, res, status, request).await
    }
}
