//! The DSS scenario calls of a ScenarioRun: fire (with the request marker), observe (the fire until
//! DSS starts its run, then the run and its steps), abort only our run, and find a lost fire's run by
//! its marker.

use std::collections::HashSet;

use kube::ResourceExt;

use super::{Fire, ScenarioDetails, ScenarioKind, ScenarioState, definition};
use crate::{
    controller::{
        connections::Resolved,
        context::RunContext,
        error::Error,
        execute::Look,
        run::{Candidate, Current, FailureDetails, Observation, RunStatus},
    },
    crd::{FailureReason, ScenarioRun, StartRequest, StepSummary},
    dss::{self, LogTailLimits, ScenarioOutcome, ScenarioRunDetails},
};

/// How many of the scenario's latest runs a search for a lost fire reads.
const SEARCH_DEPTH: u32 = 50;

/// Fires the scenario's manual trigger with the spec's parameters and the request's marker.
pub(crate) async fn fire(
    conn: &Resolved,
    run: &ScenarioRun,
    request: &StartRequest,
) -> Result<Fire, dss::Error> {
    let marker = definition::marker(&run.uid().unwrap_or_default(), request);
    let params = definition::fire_params(&run.spec, &marker);
    let fired = conn
        .client
        .run_scenario(&run.spec.project_key, &run.spec.scenario_id, &params)
        .await?;
    Ok(Fire {
        trigger_id: fired.trigger_id,
        trigger_run_id: fired.trigger_run_id,
    })
}

/// The current state of our fire and its run.
pub(crate) async fn observe(
    ctx: &RunContext<ScenarioKind>,
    conn: &Resolved,
    run: &ScenarioRun,
    current: &Current<ScenarioKind>,
    look: Look,
) -> Result<Observation<ScenarioKind>, dss::Error> {
    let (project, scenario) = (&run.spec.project_key, &run.spec.scenario_id);
    let fire = &current.handle;
    let run_id = match &current.details.run_id {
        Some(id) => id.clone(),
        None => match conn
            .client
            .get_run_for_trigger(project, scenario, &fire.trigger_id, &fire.trigger_run_id)
            .await?
        {
            Some(found) => found.run_id,
            None => return unstarted(conn, run, fire).await,
        },
    };
    let details = conn.client.get_scenario_run(project, scenario, &run_id).await?;
    let state = match &details.run.outcome {
        Some(outcome) => ScenarioState::Ended(outcome.clone()),
        None => ScenarioState::Running,
    };
    let failure = match (&state, look) {
        (ScenarioState::Ended(ScenarioOutcome::Failed), Look::Poll) => {
            Some(failure_details(ctx, conn, run, &details).await)
        }
        _ => None,
    };
    Ok(observation(state, &details, failure))
}

/// A fire without a run yet: DSS either has not started it, or cancelled it.
async fn unstarted(
    conn: &Resolved,
    run: &ScenarioRun,
    fire: &Fire,
) -> Result<Observation<ScenarioKind>, dss::Error> {
    let again = conn
        .client
        .get_trigger_fire(
            &run.spec.project_key,
            &run.spec.scenario_id,
            &fire.trigger_id,
            &fire.trigger_run_id,
        )
        .await?;
    let (state, failure) = if again.cancelled {
        let details = FailureDetails {
            reason: Some(FailureReason::TriggerCancelled),
            cause: Some(
                "DSS cancelled the trigger fire (the scenario was already running, or another trigger fired)"
                    .into(),
            ),
            ..FailureDetails::default()
        };
        (ScenarioState::Cancelled, Some(details))
    } else {
        (ScenarioState::Fired, None)
    };
    Ok(Observation {
        state,
        start_time: None,
        end_time: None,
        warnings: 0,
        failure,
        details: ScenarioDetails::default(),
    })
}

/// An observation of a scenario run and its steps.
fn observation(
    state: ScenarioState,
    details: &ScenarioRunDetails,
    failure: Option<FailureDetails>,
) -> Observation<ScenarioKind> {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).ok())
    };
    let warned = details
        .steps
        .iter()
        .filter(|s| s.outcome == Some(ScenarioOutcome::Warning))
        .count();
    // A WARNING outcome counts at least one warning, even when no step says which.
    let warnings = match state {
        ScenarioState::Ended(ScenarioOutcome::Warning) => warned.max(1),
        _ => warned,
    };
    let steps = details
        .steps
        .iter()
        .map(|s| StepSummary {
            name: s.name.clone().or_else(|| s.step_id.clone()).unwrap_or_default(),
            outcome: s.outcome.as_ref().map(|o| o.as_str().to_string()),
            job_ids: s.job_ids.clone(),
        })
        .collect();
    Observation {
        state,
        start_time: time(details.run.start),
        end_time: time(details.run.end),
        warnings: u64::try_from(warnings).unwrap_or(u64::MAX),
        failure,
        details: ScenarioDetails {
            run_id: Some(details.run.run_id.clone()),
            steps,
        },
    }
}

/// Which step failed, its error, and the end of its log.
async fn failure_details(
    ctx: &RunContext<ScenarioKind>,
    conn: &Resolved,
    run: &ScenarioRun,
    details: &ScenarioRunDetails,
) -> FailureDetails {
    let step = details.failing_step();
    let location = step.and_then(|s| s.name.clone().or_else(|| s.step_id.clone()));
    let thrown = step
        .and_then(|s| s.thrown.as_ref())
        .or_else(|| details.first_error())
        .and_then(|t| t.text().map(String::from));
    let limits = LogTailLimits::new(ctx.shared.settings.log_tail_lines, 4096);
    let step_id = step.and_then(|s| s.step_id.as_deref());
    let (project, scenario) = (&run.spec.project_key, &run.spec.scenario_id);
    let tail = match conn
        .client
        .get_scenario_run_log_tail(project, scenario, &details.run.run_id, step_id, limits)
        .await
    {
        Ok(tail) => Some(tail),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the DSS log of the failed scenario run");
            None
        }
    };
    let cause = thrown.or_else(|| tail.as_ref().and_then(dss::LogTail::failure_message));
    FailureDetails {
        reason: None,
        location,
        cause,
        log_tail: tail.map(|t| t.text).filter(|t| !t.is_empty()),
    }
}

/// Aborts the scenario's current run if it is ours. DSS's abort is not scoped to a run: it stops
/// whatever run is current, so another object's (or a user's) run is never aborted. When ours is not
/// running (it ended, or DSS has not started it yet), there is nothing to abort now; the next
/// observation shows where it is.
pub(crate) async fn abort_if_ours(conn: &Resolved, run: &ScenarioRun, fire: &Fire) -> Result<(), dss::Error> {
    let (project, scenario) = (&run.spec.project_key, &run.spec.scenario_id);
    let Some(ours) = conn
        .client
        .get_run_for_trigger(project, scenario, &fire.trigger_id, &fire.trigger_run_id)
        .await?
    else {
        return Ok(());
    };
    let latest = conn
        .client
        .get_last_scenario_runs(project, scenario, 1, false)
        .await?;
    let current_is_ours = latest
        .first()
        .is_some_and(|r| r.run_id == ours.run_id && r.is_running());
    if current_is_ours {
        conn.client.abort_scenario(project, scenario).await?;
    }
    Ok(())
}

/// The runs that carry the marker of `request`: the lost fire's run, if DSS started one. Runs other
/// ScenarioRuns track, or claimed by this process, are never candidates.
pub(crate) async fn search(
    ctx: &RunContext<ScenarioKind>,
    conn: &Resolved,
    run: &ScenarioRun,
    status: &RunStatus<ScenarioKind>,
    request: &StartRequest,
) -> Result<Vec<Candidate<Fire>>, Error> {
    let (project, scenario) = (&run.spec.project_key, &run.spec.scenario_id);
    let marker = definition::marker(&run.uid().unwrap_or_default(), request);
    let runs = conn
        .client
        .get_last_scenario_runs(project, scenario, SEARCH_DEPTH, false)
        .await
        .map_err(Error::dss("list scenario runs"))?;
    let mut known: HashSet<String> = status
        .history
        .iter()
        .map(|h| h.handle.trigger_run_id.clone())
        .collect();
    for other in ctx.io.runs.state() {
        if other.uid() != run.uid()
            && let Some(s) = &other.status
        {
            known.extend(s.trigger_run_id.iter().cloned());
            known.extend(s.history.iter().map(|h| h.trigger_run_id.clone()));
        }
    }
    let adopt = run.annotations().get(crate::crd::ADOPT_ANNOTATION);
    Ok(runs
        .into_iter()
        .filter(|r| match adopt {
            Some(id) => &r.run_id == id,
            None => r.has_param(definition::MARKER_KEY, &marker),
        })
        .filter_map(|r| {
            let fire = Fire {
                trigger_id: r.trigger_id.clone()?,
                trigger_run_id: r.trigger_run_id.clone()?,
            };
            let claimed = ctx
                .starts
                .claimed(&<ScenarioKind as crate::controller::execute::RunKind>::key(&fire));
            (!known.contains(&fire.trigger_run_id) && !claimed).then(|| Candidate {
                name: format!("scenario run {}", r.run_id),
                initiated: r
                    .start
                    .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).ok()),
                handle: fire,
            })
        })
        .collect())
}
