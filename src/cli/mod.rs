//! The `kube-dss jobs` and `kube-dss scenarios` command lines: the DSS jobs and scenarios APIs from a
//! shell. [`plugin`] is `kubectl dss`, the same binary as a kubectl plugin; `kube-dss schedules`
//! ([`schedules`]) works with DatasetBuildSchedules through the Kubernetes API.
//!
//! Each subcommand is one or a few [`DssClient`] calls; output goes to a writer (stdout in the binary)
//! so that it can be tested, errors go to stderr as one line, and the exit code says how a job or a
//! scenario run ended (see [`exit`]). The API key is never printed. This module holds the jobs
//! commands and what both command lines share (connection, errors, exit codes);
//! [`scenarios`] the scenario commands.

mod args;
mod output;
pub mod plugin;
mod scenario_args;
pub mod scenarios;
pub mod schedules;

use std::{io::Write, path::Path, process::ExitCode};

use chrono::{DateTime, Utc};
use url::Url;

pub use args::{
    AbortArgs, ConnectionArgs, Format, JobsArgs, JobsCommand, ListArgs, LogArgs, OutputSpec, StartArgs,
    StatusArgs, WaitArgs,
};
pub use scenario_args::{
    ScenarioAbortArgs, ScenarioListArgs, ScenarioLogArgs, ScenarioRunArgs, ScenarioStatusArgs,
    ScenarioWaitArgs, ScenariosArgs, ScenariosCommand,
};

use crate::{
    dss::{self, ApiKey, ClientConfig, DssClient, JobDefinition, JobDefinitionBuilder, JobState, JobWaiter},
    telemetry,
};

/// Exit codes of `kube-dss jobs` and `kube-dss scenarios`.
pub mod exit {
    /// Success; for `wait` and `start --wait`: the job ended `DONE` (a scenario run: `SUCCESS`).
    pub const SUCCESS: u8 = 0;
    /// The job or run ended `FAILED`.
    pub const FAILED: u8 = 1;
    /// The job or run ended `ABORTED`.
    pub const ABORTED: u8 = 2;
    /// The wait timed out before the job or run ended.
    pub const WAIT_TIMEOUT: u8 = 3;
    /// DSS answered with an error, could not be reached, or sent something unusable.
    pub const DSS_ERROR: u8 = 4;
    /// The scenario run ended `WARNING`.
    pub const WARNING: u8 = 5;
    /// DSS cancelled the trigger fire (the scenario was already running): no run started.
    pub const CANCELLED: u8 = 6;
    /// Bad command line or configuration (missing URL or key, unreadable file, invalid value).
    pub const USAGE: u8 = 64;
}

/// What went wrong, and so which exit code applies.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The invocation or its configuration is wrong.
    #[error("{0}")]
    Usage(String),
    /// A DSS call failed.
    #[error(transparent)]
    Dss(#[from] dss::Error),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `kube-dss jobs` with the process's stdout and stderr.
pub async fn main(args: JobsArgs) -> ExitCode {
    telemetry::init(telemetry::LogFormat::Plain, "warn");
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    ExitCode::from(run(args, &mut stdout, &mut stderr).await)
}

/// Runs `kube-dss jobs`, writing results to `out` and diagnostics to `err`; returns the exit code.
pub async fn run(args: JobsArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = execute(args, out, err).await;
    finish("jobs", result, out, err)
}

/// The exit code of a command's result, after its error (if any) is printed as one line on `err`,
/// prefixed with `kube-dss TOOL:`.
pub(crate) fn finish(
    tool: &str,
    result: Result<u8, CliError>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let _ = out.flush();
    match result {
        Ok(code) => code,
        Err(error) => {
            let (code, line) = match &error {
                CliError::Usage(message) => (exit::USAGE, message.clone()),
                CliError::Dss(dss::Error::WaitTimeout { .. }) => (exit::WAIT_TIMEOUT, error_line(&error)),
                CliError::Dss(dss::Error::InvalidConfig(_)) => (exit::USAGE, error_line(&error)),
                CliError::Dss(_) | CliError::Output(_) => (exit::DSS_ERROR, error_line(&error)),
            };
            let _ = writeln!(err, "kube-dss {tool}: {line}");
            code
        }
    }
}

/// The error and its causes on one line.
pub(crate) fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace(['\n', '\r'], " ")
}

async fn execute(args: JobsArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let client = connect(&args.connection)?;
    match args.command {
        JobsCommand::List(list) => cmd_list(&client, list, out).await,
        JobsCommand::Start(start) => cmd_start(&client, start, out).await,
        JobsCommand::Status(status) => cmd_status(&client, status, out).await,
        JobsCommand::Abort(abort) => cmd_abort(&client, abort, out, err).await,
        JobsCommand::Log(log) => cmd_log(&client, log, out).await,
        JobsCommand::Wait(wait) => cmd_wait(&client, wait, out).await,
    }
}

pub(crate) fn connect(conn: &ConnectionArgs) -> Result<DssClient, CliError> {
    let url = conn
        .url
        .as_deref()
        .ok_or_else(|| CliError::Usage("no DSS URL: pass --url or set DSS_URL".to_owned()))?;
    let url = Url::parse(url).map_err(|e| CliError::Usage(format!("invalid DSS URL {url:?}: {e}")))?;
    let key = match (&conn.api_key, &conn.api_key_file) {
        (Some(key), _) => ApiKey::new(key.trim()),
        (None, Some(path)) => ApiKey::from_file_contents(&read_file(path, "API key file")?),
        (None, None) => {
            return Err(CliError::Usage(
                "no API key: pass --api-key or --api-key-file, or set DSS_API_KEY or DSS_API_KEY_FILE"
                    .to_owned(),
            ));
        }
    };
    if key.is_empty() {
        return Err(CliError::Usage("the API key is empty".to_owned()));
    }
    let mut config = ClientConfig::new(url, key);
    config.prefix = conn.prefix;
    config.insecure_skip_verify = conn.insecure_skip_verify;
    config.request_timeout = conn.request_timeout;
    if let Some(ca_file) = &conn.ca_file {
        config.ca_pem = Some(read_file(ca_file, "CA file")?.into_bytes());
    }
    Ok(DssClient::new(config)?)
}

pub(crate) fn read_file(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Reads a JSON document, or a YAML one unless the file name ends in `.json`; `-` reads stdin (JSON
/// when it starts with `{`). `what` names it in errors.
pub(crate) fn read_document<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, CliError> {
    let (text, is_json) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| CliError::Usage(format!("cannot read the {what} from stdin: {e}")))?;
        let is_json = text.trim_start().starts_with('{');
        (text, is_json)
    } else {
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        (read_file(path, &format!("{what} file"))?, is_json)
    };
    let parsed: Result<T, String> = if is_json {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| CliError::Usage(format!("invalid {what}: {e}")))
}

pub(crate) fn required_project(project: Option<String>) -> Result<String, CliError> {
    project
        .filter(|p| !p.is_empty())
        .ok_or_else(|| CliError::Usage("no project: pass --project or set DSS_PROJECT".to_owned()))
}

async fn cmd_list(client: &DssClient, args: ListArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let (jobs, show_project) = if args.all_projects {
        (client.list_all_running_jobs(!args.mine).await?, true)
    } else {
        let project = required_project(args.project)?;
        if args.running {
            (client.list_running_jobs(&project).await?, false)
        } else {
            (client.list_jobs(&project).await?, false)
        }
    };
    let states: Vec<String> = args.state.iter().map(|s| s.trim().to_ascii_uppercase()).collect();
    let since: Option<DateTime<Utc>> = args.since;
    let jobs: Vec<_> = jobs
        .into_iter()
        .filter(|job| states.is_empty() || states.iter().any(|s| s == job.state.as_str()))
        .filter(|job| match since {
            None => true,
            // The seed's filter: def.initiationTimestamp >= date. Jobs without one cannot match.
            Some(since) => job
                .definition
                .as_ref()
                .and_then(|d| d.initiation_timestamp)
                .is_some_and(|t| t >= since),
        })
        .collect();
    match args.output {
        Format::Table => output::jobs_table(out, &jobs, show_project)?,
        Format::Json => output::json(out, &jobs)?,
    }
    Ok(exit::SUCCESS)
}

fn definition_from_args(args: &StartArgs) -> Result<JobDefinition, CliError> {
    let definition = if let Some(path) = &args.definition {
        read_document::<JobDefinition>(path, "job definition")?
    } else {
        if args.outputs.is_empty() {
            return Err(CliError::Usage(
                "nothing to build: pass --output ID (repeatable) or --definition FILE".into(),
            ));
        }
        let mut builder = JobDefinitionBuilder::new(args.job_type.unwrap_or_default())
            .with_refresh_metastore(args.refresh_hive_metastore)
            .with_auto_update_schema_before_each_recipe_run(args.auto_update_schema);
        for spec in &args.outputs {
            builder = builder.with_output(&spec.id, spec.object_type, None, spec.partition.as_deref());
        }
        builder.build()
    };
    definition
        .validate()
        .map_err(|e| CliError::Usage(format!("invalid job definition: {e}")))?;
    Ok(definition)
}

async fn cmd_start(client: &DssClient, args: StartArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let project = required_project(args.project.clone())?;
    let definition = definition_from_args(&args)?;
    let started = client.start_job(&project, &definition).await?;
    if !args.wait {
        match args.format {
            Format::Table => writeln!(out, "{}", started.id)?,
            Format::Json => output::json(out, &started.raw)?,
        }
        return Ok(exit::SUCCESS);
    }
    if args.format == Format::Table {
        // The id first, so that it is known even if the wait is interrupted.
        writeln!(out, "{}", started.id)?;
        out.flush()?;
    }
    let waiter = JobWaiter::new().with_timeout(args.wait_timeout);
    let status = waiter.wait(client, &project, &started.id).await?;
    match args.format {
        Format::Table => writeln!(out, "{}", status.state)?,
        Format::Json => output::json(out, &serde_json::json!({"id": started.id, "status": status.raw}))?,
    }
    Ok(state_exit_code(&status.state))
}

fn state_exit_code(state: &JobState) -> u8 {
    match state {
        JobState::Done => exit::SUCCESS,
        JobState::Failed => exit::FAILED,
        JobState::Aborted => exit::ABORTED,
        // The waiter only returns terminal states.
        _ => exit::DSS_ERROR,
    }
}

async fn cmd_status(client: &DssClient, args: StatusArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    let status = client.get_status(&project, &args.job_id).await?;
    match args.output {
        Format::Table => output::status_table(out, &project, &args.job_id, &status)?,
        Format::Json => output::json(out, &status.raw)?,
    }
    Ok(exit::SUCCESS)
}

async fn cmd_abort(
    client: &DssClient,
    args: AbortArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    match (args.job_id, args.all_running) {
        (Some(job_id), false) => {
            client.abort(&project, &job_id).await?;
            writeln!(out, "{job_id}")?;
            Ok(exit::SUCCESS)
        }
        (None, true) => {
            // The seed's example: abort every job whose stableState is false.
            let jobs = client.list_jobs(&project).await?;
            let mut code = exit::SUCCESS;
            let mut aborted = 0usize;
            for job in jobs.iter().filter(|j| !j.stable_state) {
                match client.abort(&job.project_key, &job.job_id).await {
                    Ok(()) => {
                        writeln!(out, "{}", job.job_id)?;
                        aborted += 1;
                    }
                    Err(e) => {
                        writeln!(
                            err,
                            "kube-dss jobs: cannot abort {}: {}",
                            job.job_id,
                            error_line(&e)
                        )?;
                        code = exit::DSS_ERROR;
                    }
                }
            }
            if aborted == 0 && code == exit::SUCCESS {
                writeln!(err, "kube-dss jobs: no running job in project {project}")?;
            }
            Ok(code)
        }
        _ => Err(CliError::Usage(
            "pass either a JOB_ID or --all-running".to_owned(),
        )),
    }
}

async fn cmd_log(client: &DssClient, args: LogArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    let log = client
        .get_log(&project, &args.job_id, args.activity.as_deref())
        .await?;
    out.write_all(log.as_bytes())?;
    if !log.is_empty() && !log.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(exit::SUCCESS)
}

async fn cmd_wait(client: &DssClient, args: WaitArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let project = required_project(args.project)?;
    let waiter = JobWaiter::new().with_timeout(args.timeout);
    let status = waiter.wait(client, &project, &args.job_id).await?;
    match args.output {
        Format::Table => writeln!(out, "{}", status.state)?,
        Format::Json => output::json(out, &status.raw)?,
    }
    Ok(state_exit_code(&status.state))
}
