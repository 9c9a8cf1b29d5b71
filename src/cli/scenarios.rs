//! `kube-dss scenarios`: the DSS scenarios API from a shell, with the jobs command line's conventions
//! (connection options, one-line errors on stderr, exit codes of [`super::exit`]; a run's outcome
//! gives the exit code of `wait` and `run --wait`).

use std::{io::Write, process::ExitCode};

use serde_json::{Map, Value, json};

use super::{
    CliError, Format, ScenarioAbortArgs, ScenarioListArgs, ScenarioLogArgs, ScenarioRunArgs,
    ScenarioStatusArgs, ScenarioWaitArgs, ScenariosArgs, ScenariosCommand, connect, exit, finish, output,
    read_document, required_project,
};
use crate::{
    dss::{DssClient, ScenarioOutcome, ScenarioRunDetails, ScenarioWait, ScenarioWaiter, log_tail},
    telemetry,
};

/// Runs `kube-dss scenarios` with the process's stdout and stderr.
pub async fn main(args: ScenariosArgs) -> ExitCode {
    telemetry::init(telemetry::LogFormat::Plain, "warn");
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    ExitCode::from(run(args, &mut stdout, &mut stderr).await)
}

/// Runs `kube-dss scenarios`, writing results to `out` and diagnostics to `err`; returns the exit code.
pub async fn run(args: ScenariosArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = execute(args, out, err).await;
    finish("scenarios", result, out, err)
}

async fn execute(args: ScenariosArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let client = connect(&args.connection)?;
    match args.command {
        ScenariosCommand::List(list) => cmd_list(&client, list, out).await,
        ScenariosCommand::Run(run) => cmd_run(&client, run, out, err).await,
        ScenariosCommand::Status(status) => cmd_status(&client, status, out).await,
        ScenariosCommand::Abort(abort) => cmd_abort(&client, abort, out, err).await,
        ScenariosCommand::Log(log) => cmd_log(&client, log, out).await,
        ScenariosCommand::Wait(wait) => cmd_wait(&client, wait, out, err).await,
    }
}

/// The exit code of a run's outcome.
fn outcome_exit_code(outcome: Option<&ScenarioOutcome>) -> u8 {
    match outcome {
        Some(ScenarioOutcome::Success) => exit::SUCCESS,
        Some(ScenarioOutcome::Failed) => exit::FAILED,
        Some(ScenarioOutcome::Aborted) => exit::ABORTED,
        Some(ScenarioOutcome::Warning) => exit::WARNING,
        // An outcome this tool does not know (or none: the waiter only returns finished runs).
        Some(ScenarioOutcome::Unknown(_)) | None => exit::DSS_ERROR,
    }
}

async fn cmd_list(client: &DssClient, args: ScenarioListArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    let scenarios = client.list_scenarios(&project).await?;
    match args.output {
        Format::Table => output::scenarios_table(out, &scenarios)?,
        Format::Json => output::json(out, &scenarios)?,
    }
    Ok(exit::SUCCESS)
}

/// The run parameters: the `--params` document, then each `--param`.
fn params_from_args(args: &ScenarioRunArgs) -> Result<Map<String, Value>, CliError> {
    let mut params = match &args.params_file {
        Some(path) => read_document::<Map<String, Value>>(path, "run parameters")?,
        None => Map::new(),
    };
    for (key, value) in &args.params {
        params.insert(key.clone(), Value::String(value.clone()));
    }
    Ok(params)
}

async fn cmd_run(
    client: &DssClient,
    args: ScenarioRunArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError> {
    let project = required_project(args.project.clone())?;
    let params = params_from_args(&args)?;
    let fire = client.run_scenario(&project, &args.scenario, &params).await?;
    if args.output == Format::Table {
        // The fire first, so that it is known even if the wait is interrupted; `wait --fire` takes it.
        writeln!(out, "{} {}", fire.trigger_id, fire.trigger_run_id)?;
        out.flush()?;
    }
    if !args.wait {
        if args.output == Format::Json {
            output::json(out, &fire.raw)?;
        }
        return Ok(exit::SUCCESS);
    }
    let waiter = ScenarioWaiter::new().with_timeout(args.wait_timeout);
    let waited = waiter
        .wait_for_fire(client, &project, &args.scenario, &fire)
        .await?;
    let target = Target {
        project: &project,
        scenario: &args.scenario,
        format: args.output,
    };
    report_wait(waited, &target, Some(&fire.raw), out, err)
}

/// What a wait is reported for.
struct Target<'a> {
    project: &'a str,
    scenario: &'a str,
    format: Format,
}

/// Prints how a wait ended and returns its exit code (`fire`: DSS's trigger fire, shown with the run
/// in JSON).
fn report_wait(
    waited: ScenarioWait,
    target: &Target<'_>,
    fire: Option<&Value>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError> {
    let Target {
        project,
        scenario,
        format,
    } = target;
    match waited {
        ScenarioWait::Finished(details) => {
            match format {
                Format::Table => writeln!(
                    out,
                    "{} {}",
                    details.run.run_id,
                    details
                        .run
                        .outcome
                        .as_ref()
                        .map_or("UNKNOWN", ScenarioOutcome::as_str)
                )?,
                Format::Json => {
                    let run = details_json(&details);
                    match fire {
                        Some(fire) => output::json(out, &json!({"fire": fire, "run": run}))?,
                        None => output::json(out, &run)?,
                    }
                }
            }
            Ok(outcome_exit_code(details.run.outcome.as_ref()))
        }
        ScenarioWait::Cancelled(fire) => {
            writeln!(
                err,
                "kube-dss scenarios: DSS cancelled the trigger fire {} {} of {project}.{scenario} (the scenario \
                 was already running): no run started",
                fire.trigger_id, fire.trigger_run_id
            )?;
            if *format == Format::Json {
                output::json(out, &json!({"fire": fire.raw}))?;
            }
            Ok(exit::CANCELLED)
        }
        ScenarioWait::TimedOut(last) => {
            let what = last.map_or_else(
                || "the trigger fire had no run yet".to_owned(),
                |r| format!("run {} is still running", r.run_id),
            );
            writeln!(
                err,
                "kube-dss scenarios: the wait for {project}.{scenario} timed out: {what}"
            )?;
            Ok(exit::WAIT_TIMEOUT)
        }
    }
}

/// DSS's run details as received: `{scenarioRun, stepRuns}`.
fn details_json(details: &ScenarioRunDetails) -> Value {
    let steps: Vec<&Value> = details.steps.iter().map(|s| &s.raw).collect();
    json!({"scenarioRun": details.run.raw, "stepRuns": steps})
}

async fn cmd_status(
    client: &DssClient,
    args: ScenarioStatusArgs,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    if let Some(run_id) = &args.run_id {
        let details = client.get_scenario_run(&project, &args.scenario, run_id).await?;
        match args.output {
            Format::Table => output::run_details(out, &project, &args.scenario, &details)?,
            Format::Json => output::json(out, &details_json(&details))?,
        }
        return Ok(exit::SUCCESS);
    }
    let status = client.get_scenario_status(&project, &args.scenario).await?;
    let runs = client
        .get_last_scenario_runs(&project, &args.scenario, args.last, false)
        .await?;
    match args.output {
        Format::Table => output::scenario_status(out, &project, &args.scenario, &status, &runs)?,
        Format::Json => {
            let runs: Vec<&Value> = runs.iter().map(|r| &r.raw).collect();
            output::json(out, &json!({"status": status.raw, "lastRuns": runs}))?;
        }
    }
    Ok(exit::SUCCESS)
}

async fn cmd_abort(
    client: &DssClient,
    args: ScenarioAbortArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    // DSS aborts whatever run is current: read it first, to say which one (and to honour --only-run).
    let current = client
        .get_last_scenario_runs(&project, &args.scenario, 1, false)
        .await?
        .into_iter()
        .find(|r| r.is_running());
    let Some(current) = current else {
        writeln!(
            err,
            "kube-dss scenarios: no run of {project}.{} is running",
            args.scenario
        )?;
        return Ok(exit::SUCCESS);
    };
    if let Some(only) = &args.only_run
        && *only != current.run_id
    {
        writeln!(
            err,
            "kube-dss scenarios: the current run of {project}.{} is {}, not {only}: not aborted",
            args.scenario, current.run_id
        )?;
        return Ok(exit::SUCCESS);
    }
    client.abort_scenario(&project, &args.scenario).await?;
    writeln!(out, "{}", current.run_id)?;
    Ok(exit::SUCCESS)
}

async fn cmd_log(client: &DssClient, args: ScenarioLogArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    let log = client
        .get_scenario_run_log(&project, &args.scenario, &args.run_id, args.step.as_deref())
        .await?;
    let text = match args.tail {
        Some(lines) => log_tail(&log, lines, usize::MAX),
        None => log.as_str(),
    };
    out.write_all(text.as_bytes())?;
    if !text.is_empty() && !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(exit::SUCCESS)
}

async fn cmd_wait(
    client: &DssClient,
    args: ScenarioWaitArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    let waiter = ScenarioWaiter::new().with_timeout(args.timeout);
    let waited = match (&args.run_id, args.fire.as_deref()) {
        (Some(run_id), _) => {
            waiter
                .wait_for_run(client, &project, &args.scenario, run_id)
                .await?
        }
        (None, Some([trigger_id, trigger_run_id])) => {
            let fire = client
                .get_trigger_fire(&project, &args.scenario, trigger_id, trigger_run_id)
                .await?;
            waiter
                .wait_for_fire(client, &project, &args.scenario, &fire)
                .await?
        }
        (None, Some(_)) => {
            return Err(CliError::Usage(
                "--fire takes TRIGGER_ID TRIGGER_RUN_ID".to_owned(),
            ));
        }
        (None, None) => {
            let current = client
                .get_last_scenario_runs(&project, &args.scenario, 1, false)
                .await?
                .into_iter()
                .find(|r| r.is_running())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "no run of {project}.{} is running: pass a RUN_ID or --fire TRIGGER_ID TRIGGER_RUN_ID",
                        args.scenario
                    ))
                })?;
            waiter
                .wait_for_run(client, &project, &args.scenario, &current.run_id)
                .await?
        }
    };
    let target = Target {
        project: &project,
        scenario: &args.scenario,
        format: args.output,
    };
    report_wait(waited, &target, None, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_give_exit_codes() {
        let cases = [
            (Some(ScenarioOutcome::Success), exit::SUCCESS),
            (Some(ScenarioOutcome::Failed), exit::FAILED),
            (Some(ScenarioOutcome::Aborted), exit::ABORTED),
            (Some(ScenarioOutcome::Warning), exit::WARNING),
            (Some(ScenarioOutcome::Unknown("SKIPPED".into())), exit::DSS_ERROR),
            (None, exit::DSS_ERROR),
        ];
        for (outcome, code) in cases {
            assert_eq!(outcome_exit_code(outcome.as_ref()), code, "{outcome:?}");
        }
    }
}
