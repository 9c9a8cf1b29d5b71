//! Command-line arguments of `kube-dss scenarios`.

use std::{path::PathBuf, time::Duration};

use super::args::{ConnectionArgs, Format, parse_duration};

const EXIT_CODES: &str = "\
Exit codes:
  0   success; for `wait` and `run --wait`: the run ended SUCCESS
  1   the run ended FAILED
  2   the run ended ABORTED
  3   the wait timed out before the run ended
  4   DSS error: an HTTP error status, DSS unreachable, or an unusable answer
  5   the run ended WARNING
  6   DSS cancelled the trigger fire: the scenario was already running, so no run started
  64  usage error: bad arguments, missing URL, key or project, unreadable file

Errors are printed to stderr as one line with the HTTP status, DSS errorType and message.
The API key is never printed.";

/// Arguments of `kube-dss scenarios`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct ScenariosArgs {
    /// Where DSS is and how to authenticate.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: ScenariosCommand,
}

/// The subcommands of `kube-dss scenarios`.
#[derive(clap::Subcommand, Debug)]
pub enum ScenariosCommand {
    /// List a project's scenarios.
    List(ScenarioListArgs),
    /// Run a scenario (fire its manual trigger); prints the trigger fire `TRIGGER_ID TRIGGER_RUN_ID`.
    Run(ScenarioRunArgs),
    /// Show a scenario's status and last runs, or one run with its steps.
    Status(ScenarioStatusArgs),
    /// Abort the scenario's current run (whoever started it); prints its run id.
    Abort(ScenarioAbortArgs),
    /// Print a run's log, or one step's.
    Log(ScenarioLogArgs),
    /// Wait until a run ends; the exit code says how (0 SUCCESS, 1 FAILED, 2 ABORTED, 3 timeout, 5
    /// WARNING, 6 cancelled).
    Wait(ScenarioWaitArgs),
}

/// `kube-dss scenarios list`
#[derive(clap::Args, Debug)]
pub struct ScenarioListArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `kube-dss scenarios run`
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    kube-dss scenarios run --project P NIGHTLY --wait\n  \
    kube-dss scenarios run -p P NIGHTLY --param day=2024-01-01 --param mode=full\n  \
    kube-dss scenarios wait -p P NIGHTLY --fire $(kube-dss scenarios run -p P NIGHTLY)")]
pub struct ScenarioRunArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The scenario id.
    pub scenario: String,
    /// A run parameter (the run's `trigger.params`), as a string; repeatable. Wins over --params.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Run parameters from a JSON (or YAML unless the name ends in .json) object; `-` reads stdin.
    #[arg(long = "params", value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// Wait until the run ends; the exit code then says how it ended.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit code 3), e.g. 30m.
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    pub wait_timeout: Option<Duration>,
    /// Output format: the trigger fire and, with --wait, `RUN_ID OUTCOME` (table), or DSS's answers
    /// (json).
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `kube-dss scenarios status`
#[derive(clap::Args, Debug)]
pub struct ScenarioStatusArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The scenario id.
    pub scenario: String,
    /// One run: its outcome, times, trigger and steps (with their jobs and errors).
    pub run_id: Option<String>,
    /// Without RUN_ID: how many of the last runs to list.
    #[arg(long, default_value_t = 5, conflicts_with = "run_id")]
    pub last: u32,
    /// Output format (json prints DSS's documents).
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `kube-dss scenarios abort`
#[derive(clap::Args, Debug)]
#[command(
    after_help = "DSS aborts whatever run is current, not a given one. With --only-run, the current run is read \
    first and aborted only if it is that run; a run starting in between is still a race."
)]
pub struct ScenarioAbortArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The scenario id.
    pub scenario: String,
    /// Abort only if the current run is this one.
    #[arg(long, value_name = "RUN_ID")]
    pub only_run: Option<String>,
}

/// `kube-dss scenarios log`
#[derive(clap::Args, Debug)]
pub struct ScenarioLogArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The scenario id.
    pub scenario: String,
    /// The run id.
    pub run_id: String,
    /// Only this step's log (step ids are in `status SCENARIO RUN_ID`).
    #[arg(long)]
    pub step: Option<String>,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

/// `kube-dss scenarios wait`
#[derive(clap::Args, Debug)]
pub struct ScenarioWaitArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The scenario id.
    pub scenario: String,
    /// The run to wait for. Without it (and without --fire): the current run.
    #[arg(conflicts_with = "fire")]
    pub run_id: Option<String>,
    /// The trigger fire to wait for, as `run` prints it: first for its run, then for the run to end.
    #[arg(long, num_args = 2, value_names = ["TRIGGER_ID", "TRIGGER_RUN_ID"])]
    pub fire: Option<Vec<String>>,
    /// Give up after this long (exit code 3), e.g. 10m. Default: wait forever.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format: `RUN_ID OUTCOME` (table) or the run with its steps (json).
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Parses `KEY=VALUE` (the value may contain `=`; the key may not be empty).
pub(crate) fn parse_param(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, v)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{value:?}: expected KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(clap::Subcommand, Debug)]
    enum TestCommand {
        Scenarios(ScenariosArgs),
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn params() {
        assert_eq!(parse_param("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(parse_param("url=x?y=z").unwrap(), ("url".into(), "x?y=z".into()));
        assert_eq!(parse_param("empty=").unwrap(), ("empty".into(), String::new()));
        for bad in ["", "=v", "novalue", " =v"] {
            assert!(parse_param(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wait_takes_a_run_or_a_fire_and_abort_an_optional_guard() {
        let parse = |args: &[&str]| TestCli::try_parse_from([&["t", "scenarios"], args].concat());
        let cli = parse(&[
            "wait",
            "-p",
            "P",
            "S",
            "--fire",
            "manual",
            "2024-01-01-00-00-00-000",
        ])
        .unwrap();
        let TestCommand::Scenarios(ScenariosArgs {
            command: ScenariosCommand::Wait(wait),
            ..
        }) = cli.command
        else {
            panic!("not wait")
        };
        assert_eq!(wait.fire.unwrap(), ["manual", "2024-01-01-00-00-00-000"]);
        assert!(parse(&["wait", "S", "R", "--fire", "manual", "x"]).is_err());
        assert!(parse(&["wait", "S", "--fire", "manual"]).is_err());
        assert!(parse(&["status", "S", "R", "--last", "3"]).is_err());
        assert!(parse(&["run", "S", "--wait-timeout", "5m"]).is_err());
        assert!(parse(&["abort", "S", "--only-run", "R"]).is_ok());
    }
}
