//! `kube-dss schedules run`: create the build of a slot of a DatasetBuildSchedule now, with the
//! user's kubeconfig and permissions, as `kubectl create job --from=cronjob/NAME` does for a CronJob.
//! The build is the one the operator would create for that slot (same name, placeholders, labels and
//! owner), so a run can never double a slot: if the slot's build exists, nothing is created.

use std::{io::Write, path::PathBuf, process::ExitCode};

use jiff::Timestamp;
use kube::{
    Api, Client, Config, ResourceExt,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{
    controller::schedule::{
        children::{self, Created, Origin, Templates},
        slots::{self, Schedule},
    },
    crd::{DatasetBuild, DatasetBuildSchedule},
    telemetry,
};

const EXIT_CODES: &str = "\
Exit codes:
  0   the build was created
  1   the slot's build exists already: nothing was created
  2   the schedule is invalid (its schedule, time zone or build template): nothing was created
  4   Kubernetes API error: the schedule was not found, access was refused, or the API is unreachable
  64  usage error: bad arguments or an unreadable kubeconfig";

/// Exit codes of `kube-dss schedules`.
pub mod exit {
    /// The build was created.
    pub const CREATED: u8 = 0;
    /// The slot's build exists already.
    pub const EXISTS: u8 = 1;
    /// The schedule cannot make a build.
    pub const INVALID: u8 = 2;
    /// A Kubernetes API call failed.
    pub const API_ERROR: u8 = 4;
    /// Bad command line or configuration.
    pub const USAGE: u8 = 64;
}

/// Arguments of `kube-dss schedules`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct SchedulesArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: SchedulesCommand,
}

/// The subcommands of `kube-dss schedules`.
#[derive(clap::Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Create the build of a slot now (the current one, or --slot), as the schedule would.
    Run(RunArgs),
}

/// `kube-dss schedules run`
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    kube-dss schedules run nightly -n analytics\n  \
    kube-dss schedules run nightly -n analytics --slot 2024-03-30T02:00:00+01:00   # rebuild that night's partition")]
pub struct RunArgs {
    /// The DatasetBuildSchedule.
    pub name: String,
    /// Its namespace. Default: the kubeconfig context's namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The slot, as an RFC 3339 time (e.g. 2024-03-30T02:00:00+01:00). Default: now. Taken down to
    /// the minute (to the second for a 6-field schedule), the unit builds are named by.
    #[arg(long, value_parser = parse_slot)]
    pub slot: Option<Timestamp>,
    /// Print the build as YAML instead of creating it.
    #[arg(long)]
    pub dry_run: bool,
    /// The kubeconfig file. Default: $KUBECONFIG, then ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context. Default: the current context.
    #[arg(long)]
    pub context: Option<String>,
}

fn parse_slot(text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>()
        .map_err(|e| format!("not an RFC 3339 time with an offset, such as 2024-03-30T02:00:00+01:00: {e}"))
}

/// What went wrong, and so which exit code applies.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Api(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `kube-dss schedules` with the process's stdout and stderr.
pub async fn main(args: SchedulesArgs) -> ExitCode {
    telemetry::init(telemetry::LogFormat::Plain, "warn");
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    ExitCode::from(run(args, &mut stdout, &mut stderr).await)
}

/// Runs `kube-dss schedules`, writing results to `out` and diagnostics to `err`; returns the exit code.
pub async fn run(args: SchedulesArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let SchedulesCommand::Run(run) = args.command;
    let result = run_slot(run, out, err).await;
    let _ = out.flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = match e {
                RunError::Usage(_) => exit::USAGE,
                RunError::Invalid(_) => exit::INVALID,
                RunError::Api(_) | RunError::Output(_) => exit::API_ERROR,
            };
            let _ = writeln!(
                err,
                "kube-dss schedules run: {}",
                e.to_string().replace(['\n', '\r'], " ")
            );
            code
        }
    }
}

async fn client(args: &RunArgs) -> Result<Client, RunError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .map_err(|e| RunError::Usage(format!("cannot read the kubeconfig {}: {e}", path.display())))?,
        None => Kubeconfig::read().map_err(|e| RunError::Usage(format!("cannot read a kubeconfig: {e}")))?,
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| RunError::Usage(format!("cannot use the kubeconfig: {e}")))?;
    Client::try_from(config).map_err(|e| RunError::Usage(format!("cannot build a Kubernetes client: {e}")))
}

async fn run_slot(args: RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, RunError> {
    let client = client(&args).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let schedules: Api<DatasetBuildSchedule> = Api::namespaced(client.clone(), &namespace);
    let schedule = schedules.get(&args.name).await.map_err(|e| match &e {
        kube::Error::Api(s) if s.code == 404 => RunError::Api(format!(
            "datasetbuildschedule {}/{} not found",
            namespace, args.name
        )),
        _ => RunError::Api(format!(
            "cannot read datasetbuildschedule {}/{}: {e}",
            namespace, args.name
        )),
    })?;
    let parsed = Schedule::parse(&schedule.spec.schedule, schedule.spec.time_zone.as_deref())
        .map_err(|e| RunError::Invalid(e.to_string()))?;
    let templates = Templates::parse(&schedule).map_err(|e| RunError::Invalid(e.to_string()))?;
    let slot = slots::truncate(args.slot.unwrap_or_else(Timestamp::now), parsed.unit());
    let build = children::build_for_slot(&schedule, &parsed, &templates, slot, Origin::Manual)
        .map_err(|e| RunError::Invalid(e.to_string()))?;
    let slot_text = slot.to_zoned(parsed.tz().clone()).to_string();
    if args.dry_run {
        let yaml = serde_yaml::to_string(&build).map_err(|e| RunError::Invalid(e.to_string()))?;
        write!(out, "{yaml}")?;
        return Ok(exit::CREATED);
    }
    let builds: Api<DatasetBuild> = Api::namespaced(client, &namespace);
    match children::create(&builds, &build, schedule.uid().as_deref()).await {
        Ok(Created::New(created)) => {
            writeln!(
                out,
                "datasetbuild.kube-dss.dev/{} created for the slot {slot_text}",
                created.name_any()
            )?;
            Ok(exit::CREATED)
        }
        Ok(Created::Existed) => {
            writeln!(
                err,
                "kube-dss schedules run: datasetbuild.kube-dss.dev/{} exists already for the slot {slot_text}: nothing created (delete it to build that slot again)",
                build.name_any()
            )?;
            Ok(exit::EXISTS)
        }
        Ok(Created::Invalid(message)) => Err(RunError::Invalid(format!(
            "the build of the slot {slot_text} is refused: {message}"
        ))),
        Err(e) => Err(RunError::Api(e.chain())),
    }
}
