//! `kubectl dss`: the `kube-dss` binary run as the kubectl plugin `kubectl-dss` (`src/main.rs` picks
//! it by the file name it was started as). It works with the user's kubeconfig and RBAC, never the
//! operator's:
//!
//! - `status` reads the DatasetBuild, its DSSConnection and its events, and shows them on one screen
//!   ([`screen`]);
//! - `rerun` and `abort` stamp the request annotation on the build, after checking it applies
//!   ([`rules`], the rules of the Argo CD actions), with a resourceVersion precondition so that the
//!   check and the write see the same object;
//! - `logs` reads the build's DSSConnection and that connection's API-key Secret (so the user needs
//!   `get` on both), then asks DSS for the job's log.
//!
//! This module is the IO around those pure parts; errors are one line on stderr and the exit code
//! says what kind of failure it was ([`exit`]).

mod rules;
mod screen;

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::{
    Api, Client, Config,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

use self::{
    rules::{Request, RunView},
    screen::{ConnectionInfo, EventLine, StatusScreen},
};
use crate::{
    cli::args::parse_duration,
    controller::connections::{client_config, secret_value},
    crd::{DSSConnection, DatasetBuild},
    dss::{self, ApiKey, DssClient},
    telemetry,
};

/// Exit codes of `kubectl dss`.
pub mod exit {
    /// Done.
    pub const SUCCESS: u8 = 0;
    /// The request does not apply to the build now (e.g. rerun while a job runs); nothing was changed.
    pub const REFUSED: u8 = 1;
    /// DSS answered with an error or could not be reached (`logs`).
    pub const DSS_ERROR: u8 = 4;
    /// A Kubernetes API call failed: not found, forbidden by your RBAC, unreachable.
    pub const KUBE_ERROR: u8 = 5;
    /// Bad command line or kubeconfig.
    pub const USAGE: u8 = 64;
}

const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   the request does not apply to the build now (nothing was changed)
  4   DSS error (logs)
  5   Kubernetes API error: not found, forbidden by your RBAC, unreachable
  64  usage error, or no usable kubeconfig

Install: put the kube-dss binary on your PATH under the name kubectl-dss (a symlink or a copy).
It uses your kubeconfig and your permissions.";

/// `kubectl dss`: DatasetBuilds from kubectl, with your kubeconfig and your RBAC.
#[derive(clap::Parser, Debug)]
#[command(name = "kubectl-dss", bin_name = "kubectl dss", version, after_help = EXIT_CODES)]
pub struct PluginCli {
    #[command(flatten)]
    kube: KubeArgs,
    #[command(subcommand)]
    command: PluginCommand,
}

/// Which cluster and namespace, as kubectl takes them.
#[derive(clap::Args, Debug)]
struct KubeArgs {
    /// The namespace of the build (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Timeout of each DSS request (logs), e.g. 30s, 2m.
    #[arg(long, value_parser = parse_duration, default_value = "30s", global = true)]
    request_timeout: Duration,
}

#[derive(clap::Subcommand, Debug)]
enum PluginCommand {
    /// Phase, job, the job's page in DSS, connection, failure, conditions and last events of a build.
    Status {
        /// The DatasetBuild.
        build: String,
    },
    /// The DSS log of the build's job, read with the API key of its DSSConnection (you need get on
    /// that DSSConnection and on its Secret).
    Logs {
        /// The DatasetBuild.
        build: String,
        /// Only this activity's log, e.g. compute_mydataset_NP.
        #[arg(long)]
        activity: Option<String>,
        /// Another job of the build than its current one (see status.history).
        #[arg(long)]
        job: Option<String>,
    },
    /// Request one more run of the build's definition (annotation kube-dss.dev/rerun), once its
    /// last run has finished.
    Rerun {
        /// The DatasetBuild.
        build: String,
    },
    /// Abort the build's queued or running DSS job and keep the build (annotation kube-dss.dev/abort):
    /// it ends Aborted, reason AbortRequested.
    Abort {
        /// The DatasetBuild.
        build: String,
    },
}

/// Why `kubectl dss` stopped.
#[derive(Debug, thiserror::Error)]
enum PluginError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {reason}")]
    Kube { what: String, reason: String },
    #[error("DSS: {0}")]
    Dss(#[from] dss::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl PluginError {
    fn code(&self) -> u8 {
        match self {
            PluginError::Usage(_) => exit::USAGE,
            PluginError::Refused(_) => exit::REFUSED,
            PluginError::Kube { .. } => exit::KUBE_ERROR,
            PluginError::Dss(dss::Error::InvalidConfig(_)) => exit::USAGE,
            PluginError::Dss(_) | PluginError::Output(_) => exit::DSS_ERROR,
        }
    }
}

/// What a failed Kubernetes call means to the user, with their own permissions in mind.
fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => "not found".to_owned(),
        kube::Error::Api(s) if s.code == 403 => {
            format!(
                "forbidden by your RBAC (kubectl dss acts with your permissions): {}",
                s.message
            )
        }
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        other => other.to_string(),
    }
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> PluginError {
    move |e| PluginError::Kube {
        what: what.into(),
        reason: kube_reason(&e),
    }
}

/// Runs `kubectl dss` with the process's arguments, stdout and stderr.
pub async fn main() -> ExitCode {
    let cli = match <PluginCli as clap::Parser>::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    telemetry::init(telemetry::LogFormat::Plain, "warn");
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    ExitCode::from(run(cli, &mut stdout, &mut stderr).await)
}

/// Runs `kubectl dss`, writing results to `out` and the error line to `err`; returns the exit code.
pub async fn run(cli: PluginCli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = execute(cli, out).await;
    let _ = out.flush();
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "kubectl dss: {}", super::error_line(&e));
            e.code()
        }
    }
}

async fn execute(cli: PluginCli, out: &mut dyn Write) -> Result<(), PluginError> {
    let (client, namespace) = connect(&cli.kube).await?;
    match cli.command {
        PluginCommand::Status { build } => cmd_status(&client, &namespace, &build, out).await,
        PluginCommand::Logs { build, activity, job } => {
            let target = LogTarget {
                build: &build,
                activity: activity.as_deref(),
                job: job.as_deref(),
            };
            cmd_logs(&client, &namespace, target, cli.kube.request_timeout, out).await
        }
        PluginCommand::Rerun { build } => cmd_request(&client, &namespace, &build, Request::Rerun, out).await,
        PluginCommand::Abort { build } => cmd_request(&client, &namespace, &build, Request::Abort, out).await,
    }
}

/// A client from the user's kubeconfig, and the namespace to work in.
async fn connect(args: &KubeArgs) -> Result<(Client, String), PluginError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let usage = |e: &dyn std::fmt::Display| PluginError::Usage(format!("no usable kubeconfig: {e}"));
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| usage(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| usage(&e))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| usage(&e))?,
        (None, None) => Config::infer().await.map_err(|e| usage(&e))?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| usage(&e))?;
    Ok((client, namespace))
}

/// The build as typed and as JSON (the rules read status fields the types may not know).
async fn read_build(client: &Client, ns: &str, name: &str) -> Result<(DatasetBuild, Value), PluginError> {
    let resource = ApiResource::erase::<DatasetBuild>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let obj = api
        .get(name)
        .await
        .map_err(kube_error(format!("datasetbuild {ns}/{name}")))?;
    let value = serde_json::to_value(&obj)
        .map_err(|e| PluginError::Usage(format!("datasetbuild {ns}/{name}: {e}")))?;
    let build = serde_json::from_value(value.clone())
        .map_err(|e| PluginError::Usage(format!("datasetbuild {ns}/{name} does not decode: {e}")))?;
    Ok((build, value))
}

async fn cmd_status(client: &Client, ns: &str, name: &str, out: &mut dyn Write) -> Result<(), PluginError> {
    let (build, _) = read_build(client, ns, name).await?;
    let connection = match &build.spec.connection_ref {
        None => ConnectionInfo::Default,
        Some(r) => {
            let api: Api<DSSConnection> = Api::namespaced(client.clone(), ns);
            let read = api.get(&r.name).await.map(Box::new).map_err(|e| kube_reason(&e));
            ConnectionInfo::Named {
                name: r.name.clone(),
                read,
            }
        }
    };
    let events = match &build.metadata.uid {
        None => Ok(Vec::new()),
        Some(uid) => Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
            .await
            .map(|list| list.items.iter().map(EventLine::from_event).collect())
            .map_err(|e| kube_reason(&e)),
    };
    let screen = StatusScreen {
        build: &build,
        connection: &connection,
        events: &events,
        now: jiff::Timestamp::now(),
    };
    screen::render(out, &screen)?;
    Ok(())
}

/// Which log `logs` fetches.
struct LogTarget<'a> {
    build: &'a str,
    activity: Option<&'a str>,
    job: Option<&'a str>,
}

async fn cmd_logs(
    client: &Client,
    ns: &str,
    target: LogTarget<'_>,
    request_timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let name = target.build;
    let (build, _) = read_build(client, ns, name).await?;
    let status = build.status.clone().unwrap_or_default();
    let job_id = target
        .job
        .map(str::to_owned)
        .or(status.job_id)
        .ok_or_else(|| PluginError::Refused(format!("datasetbuild {ns}/{name} has no DSS job yet")))?;
    let Some(conn_ref) = &build.spec.connection_ref else {
        return Err(PluginError::Refused(format!(
            "datasetbuild {ns}/{name} runs on the operator's default connection, whose key kubectl dss \
             cannot read: use `kube-dss jobs log --url URL --api-key-file FILE --project {} {job_id}`",
            build.spec.project_key
        )));
    };
    let conn = Api::<DSSConnection>::namespaced(client.clone(), ns)
        .get(&conn_ref.name)
        .await
        .map_err(kube_error(format!("dssconnection {ns}/{}", conn_ref.name)))?;
    let key = read_secret_key(client, ns, &conn.spec.api_key_secret_ref, &conn_ref.name).await?;
    let ca = match conn.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
        Some(r) => Some(read_secret_key(client, ns, r, &conn_ref.name).await?.into_bytes()),
        None => None,
    };
    let mut config = client_config(&conn.spec, ApiKey::new(key), ca)
        .map_err(|e| PluginError::Usage(format!("dssconnection {ns}/{}: spec.url: {e}", conn_ref.name)))?;
    config.request_timeout = request_timeout;
    let dss = DssClient::new(config)?;
    let log = dss
        .get_log(&build.spec.project_key, &job_id, target.activity)
        .await?;
    out.write_all(log.as_bytes())?;
    if !log.is_empty() && !log.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

/// One key of a Secret of the connection, read with the user's permissions.
async fn read_secret_key(
    client: &Client,
    ns: &str,
    r: &crate::crd::SecretKeyRef,
    connection: &str,
) -> Result<String, PluginError> {
    let what = format!("secret {ns}/{} (named by dssconnection {connection})", r.name);
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&r.name)
        .await
        .map_err(kube_error(what.clone()))?;
    secret_value(&secret, &r.key).ok_or_else(|| PluginError::Kube {
        what,
        reason: format!("no non-empty key {:?}", r.key),
    })
}

/// Attempts of the read-check-write of a request when the build changes in between.
const REQUEST_ATTEMPTS: usize = 3;

async fn cmd_request(
    client: &Client,
    ns: &str,
    name: &str,
    request: Request,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let resource = ApiResource::erase::<DatasetBuild>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    for _ in 0..REQUEST_ATTEMPTS {
        let (_, value) = read_build(client, ns, name).await?;
        if let Some(why) = request.refusal(&RunView::from_json(&value)) {
            return Err(PluginError::Refused(format!("datasetbuild {ns}/{name}: {why}")));
        }
        let stamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        // The resourceVersion makes the write fail if the build changed since it was checked.
        let patch = json!({"metadata": {
            "resourceVersion": value["metadata"]["resourceVersion"],
            "annotations": {request.annotation(): stamp},
        }});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                writeln!(
                    out,
                    "datasetbuild.kube-dss.dev/{name}: {}={stamp}: {}",
                    request.annotation(),
                    request.effect()
                )?;
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(kube_error(format!("datasetbuild {ns}/{name}"))(e)),
        }
    }
    Err(PluginError::Kube {
        what: format!("datasetbuild {ns}/{name}"),
        reason: format!("it changed during each of {REQUEST_ATTEMPTS} attempts; try again"),
    })
}
