//! Command-line arguments of `kube-dss jobs` and their value parsers.

use std::{path::PathBuf, time::Duration};

use chrono::{DateTime, NaiveDate, Utc};

use crate::dss::{ApiPrefix, BuildType, ObjectType};

const EXIT_CODES: &str = "\
Exit codes:
  0   success; for `wait` and `start --wait`: the job ended DONE
  1   the job ended FAILED
  2   the job ended ABORTED
  3   the wait timed out before the job ended
  4   DSS error: an HTTP error status, DSS unreachable, or an unusable answer
  64  usage error: bad arguments, missing URL, key or project, unreadable file

Errors are printed to stderr as one line with the HTTP status, DSS errorType and message.
The API key is never printed.";

/// Arguments of `kube-dss jobs`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct JobsArgs {
    /// Where DSS is and how to authenticate.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// Connection options, accepted before or after the subcommand.
#[derive(clap::Args, Debug)]
pub struct ConnectionArgs {
    /// DSS URL, e.g. https://dss.example.com:11200 (without the API path).
    #[arg(long, env = "DSS_URL", global = true)]
    pub url: Option<String>,
    /// The API key (prefer --api-key-file or the DSS_API_KEY variable: arguments are visible to other
    /// local users). Takes precedence over --api-key-file.
    #[arg(long, env = "DSS_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// A file holding the API key (surrounding whitespace is ignored).
    #[arg(long, env = "DSS_API_KEY_FILE", global = true)]
    pub api_key_file: Option<PathBuf>,
    /// The API path prefix: public-api (/public/api, documented) or dip-publicapi (/dip/publicapi, used by
    /// the Python client).
    #[arg(long, default_value = "public-api", env = "DSS_API_PREFIX", global = true)]
    pub prefix: ApiPrefix,
    /// Extra CA certificates (PEM) to trust for DSS's TLS certificate.
    #[arg(long, env = "DSS_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (sandboxes only).
    #[arg(long, global = true)]
    pub insecure_skip_verify: bool,
    /// Timeout of each HTTP request, e.g. 30s, 2m.
    #[arg(long, value_parser = parse_duration, default_value = "30s", env = "DSS_REQUEST_TIMEOUT", global = true)]
    pub request_timeout: Duration,
}

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Table,
    /// JSON.
    Json,
}

/// The subcommands of `kube-dss jobs`.
#[derive(clap::Subcommand, Debug)]
pub enum JobsCommand {
    /// List a project's jobs (or the running jobs of every project).
    List(ListArgs),
    /// Start a job that builds datasets (or folders, models...); prints its id.
    Start(StartArgs),
    /// Show a job's status.
    Status(StatusArgs),
    /// Abort a job, or every job of a project still being processed.
    Abort(AbortArgs),
    /// Print a job's log, or one activity's.
    Log(LogArgs),
    /// Wait until a job ends; the exit code says how (0 DONE, 1 FAILED, 2 ABORTED, 3 timeout).
    Wait(WaitArgs),
}

/// `kube-dss jobs list`
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (failed jobs since a date):\n  kube-dss jobs list --project TEST_PROJECT --state FAILED --since 2015-09-24"
)]
pub struct ListArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// Keep only jobs in these states (NOT_STARTED, RUNNING, DONE, FAILED, ABORTED); repeatable or
    /// comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub state: Vec<String>,
    /// Keep only jobs initiated at or after this time: YYYY-MM-DD (midnight UTC), YYYY/MM/DD or RFC 3339.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// List only running jobs (DSS 15.2 or later).
    #[arg(long)]
    pub running: bool,
    /// With --running: running jobs of every project, instead of one.
    #[arg(long, requires = "running")]
    pub all_projects: bool,
    /// With --all-projects: only the jobs of the API key's user.
    #[arg(long, requires = "all_projects")]
    pub mine: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `kube-dss jobs start`
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    kube-dss jobs start --project TEST_PROJECT --output dataset_to_build@NP --wait\n  \
    kube-dss jobs start --project P --type RECURSIVE_BUILD --output ds_b:DATASET@2024-01-01|FR --output Fold3r1d:MANAGED_FOLDER\n  \
    kube-dss jobs start --project P --definition job.yaml")]
pub struct StartArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// What to build: ID[:TYPE][@PARTITION], e.g. `sales`, `sales@2024-01-01|FR`, `Fold3r1d:MANAGED_FOLDER`.
    /// TYPE is DATASET (default), MANAGED_FOLDER, SAVED_MODEL, STREAMING_ENDPOINT, MODEL_EVALUATION_STORE
    /// or RETRIEVABLE_KNOWLEDGE. Repeatable.
    #[arg(long = "output", value_name = "ID[:TYPE][@PARTITION]", value_parser = parse_output_spec, conflicts_with = "definition")]
    pub outputs: Vec<OutputSpec>,
    /// Build mode: NON_RECURSIVE_FORCED_BUILD (default), RECURSIVE_BUILD, RECURSIVE_FORCED_BUILD or
    /// RECURSIVE_MISSING_ONLY_BUILD.
    #[arg(long = "type", value_name = "BUILD_TYPE", value_parser = parse_build_type, conflicts_with = "definition")]
    pub job_type: Option<BuildType>,
    /// Refresh the Hive metastore after the build.
    #[arg(long, conflicts_with = "definition")]
    pub refresh_hive_metastore: bool,
    /// Update output schemas before each recipe runs.
    #[arg(long, conflicts_with = "definition")]
    pub auto_update_schema: bool,
    /// A job definition file in dataikuapi's format (JSON, or YAML unless the name ends in .json);
    /// `-` reads it from stdin.
    #[arg(long, value_name = "FILE")]
    pub definition: Option<PathBuf>,
    /// Wait until the job ends; the exit code then says how it ended.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit code 3), e.g. 30m.
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    pub wait_timeout: Option<Duration>,
    /// Output format: the job id (table) or DSS's answer (json).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One `--output` of `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// The object id.
    pub id: String,
    /// Its type; `None` sends `null` (a dataset).
    pub object_type: Option<ObjectType>,
    /// The partition spec.
    pub partition: Option<String>,
}

/// `kube-dss jobs status`
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The job id.
    pub job_id: String,
    /// Output format (json prints DSS's status document).
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `kube-dss jobs abort`
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (abort every job being processed):\n  kube-dss jobs abort --project TEST_PROJECT --all-running"
)]
pub struct AbortArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The job id.
    #[arg(required_unless_present = "all_running")]
    pub job_id: Option<String>,
    /// Abort every job of the project whose stableState is false. Prints each aborted job id.
    #[arg(long, conflicts_with = "job_id")]
    pub all_running: bool,
}

/// `kube-dss jobs log`
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The job id.
    pub job_id: String,
    /// Only this activity's log, e.g. compute_mydataset_NP.
    #[arg(long)]
    pub activity: Option<String>,
}

/// `kube-dss jobs wait`
#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The project key.
    #[arg(long, short = 'p', env = "DSS_PROJECT")]
    pub project: Option<String>,
    /// The job id.
    pub job_id: String,
    /// Give up after this long (exit code 3), e.g. 10m. Default: wait forever.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format: the final state (table) or the final status document (json).
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Parses `ID[:TYPE][@PARTITION]`.
pub(crate) fn parse_output_spec(value: &str) -> Result<OutputSpec, String> {
    let (left, partition) = match value.split_once('@') {
        Some((left, partition)) if !partition.is_empty() => (left, Some(partition.to_owned())),
        Some(_) => return Err(format!("{value:?}: empty partition after '@'")),
        None => (value, None),
    };
    let (id, object_type) = match left.rsplit_once(':') {
        Some((id, ty)) => (id, Some(ty.parse::<ObjectType>()?)),
        None => (left, None),
    };
    if id.trim().is_empty() {
        return Err(format!("{value:?}: empty output id"));
    }
    Ok(OutputSpec {
        id: id.to_owned(),
        object_type,
        partition,
    })
}

fn parse_build_type(value: &str) -> Result<BuildType, String> {
    value.parse()
}

/// Parses durations such as `500ms`, `30s`, `5m`, `1h30m`, `2d`; a bare number is seconds.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let bad = || format!("invalid duration {value:?} (examples: 30s, 5m, 1h30m, 500ms)");
    if value.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(Duration::try_from_secs_f64(number * scale).map_err(|_| bad())?)
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses `YYYY-MM-DD` / `YYYY/MM/DD` (midnight UTC) or an RFC 3339 time.
pub(crate) fn parse_since(value: &str) -> Result<DateTime<Utc>, String> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d", "%Y/%m/%d"]
        .iter()
        .find_map(|fmt| NaiveDate::parse_from_str(value, fmt).ok())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("invalid date {value:?} (use YYYY-MM-DD or RFC 3339)"))
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
        Jobs(JobsArgs),
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn output_specs() {
        assert_eq!(
            parse_output_spec("ds").unwrap(),
            OutputSpec {
                id: "ds".into(),
                object_type: None,
                partition: None
            }
        );
        assert_eq!(
            parse_output_spec("ds_b:dataset@2024-01-01|FR").unwrap(),
            OutputSpec {
                id: "ds_b".into(),
                object_type: Some(ObjectType::Dataset),
                partition: Some("2024-01-01|FR".into())
            }
        );
        assert_eq!(
            parse_output_spec("F1:MANAGED_FOLDER").unwrap().object_type,
            Some(ObjectType::ManagedFolder)
        );
        assert_eq!(
            parse_output_spec("ds@NP").unwrap().partition.as_deref(),
            Some("NP")
        );
        for bad in ["", ":DATASET", "ds:NOPE", "ds@", "@NP"] {
            assert!(parse_output_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("12").unwrap(), Duration::from_secs(12));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        for bad in ["", "s", "5x", "-1", "1e400", "m5", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_dates() {
        let midnight = DateTime::parse_from_rfc3339("2015-09-24T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_since("2015-09-24").unwrap(), midnight);
        assert_eq!(parse_since("2015/09/24").unwrap(), midnight);
        assert_eq!(parse_since("2015-09-24T02:00:00+02:00").unwrap(), midnight);
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn global_options_go_anywhere_and_the_key_stays_hidden_in_help() {
        let cli = TestCli::try_parse_from([
            "t",
            "jobs",
            "list",
            "--url",
            "http://h",
            "--project",
            "P",
            "--state",
            "FAILED,done",
        ])
        .unwrap();
        let TestCommand::Jobs(args) = cli.command;
        assert_eq!(args.connection.url.as_deref(), Some("http://h"));
        let JobsCommand::List(list) = args.command else {
            panic!("not list")
        };
        assert_eq!(list.state, ["FAILED", "done"]);
        assert!(TestCli::try_parse_from(["t", "jobs", "list", "--all-projects"]).is_err());
        assert!(TestCli::try_parse_from(["t", "jobs", "abort", "--project", "P"]).is_err());
        assert!(
            TestCli::try_parse_from(["t", "jobs", "abort", "--project", "P", "j", "--all-running"]).is_err()
        );
        assert!(
            TestCli::try_parse_from(["t", "jobs", "start", "--definition", "f.json", "--output", "ds"])
                .is_err()
        );
    }
}
