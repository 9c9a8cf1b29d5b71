//! `kube-dss controller`'s flags (each also an environment variable, as the chart sets them), and the
//! tunables and default connection derived from them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    connection_policy::{ConnectionPolicy, Violation},
    connections::DefaultConnection,
    context::Settings,
    run,
};
use crate::{dss, telemetry::LogFormat};

/// Arguments of `kube-dss controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// URL of the default DSS connection, used by builds that name no connection.
    #[arg(long, env = "DSS_URL")]
    pub dss_url: Option<url::Url>,

    /// File holding the default connection's API key (re-read when DSS refuses it).
    #[arg(long, env = "DSS_API_KEY_FILE")]
    pub dss_api_key_file: Option<PathBuf>,

    /// API prefix of the default connection: `/public/api` or `/dip/publicapi`.
    #[arg(long, env = "DSS_API_PREFIX", default_value = "/public/api")]
    pub dss_api_prefix: String,

    /// PEM CA bundle to trust for the default connection.
    #[arg(long, env = "DSS_CA_FILE")]
    pub dss_ca_file: Option<PathBuf>,

    /// Skip TLS verification for the default connection (sandboxes only).
    #[arg(long, env = "DSS_INSECURE_SKIP_VERIFY")]
    pub dss_insecure_skip_verify: bool,

    /// Refuse DSS connections that skip TLS verification (a DSSConnection with
    /// `tls.insecureSkipVerify: true` is not Ready; `--dss-insecure-skip-verify` is an error).
    #[arg(long, env = "REFUSE_INSECURE_CONNECTIONS")]
    pub refuse_insecure_connections: bool,

    /// Refuse DSS URLs that are not https:// (a DSSConnection with an http:// URL is not Ready;
    /// an http:// `--dss-url` is an error).
    #[arg(long, env = "REQUIRE_HTTPS")]
    pub require_https: bool,

    /// Request budget of the default connection (requests per second).
    #[arg(long, env = "DSS_REQUESTS_PER_SECOND", default_value_t = 10)]
    pub dss_requests_per_second: u32,

    /// Concurrent requests of the default connection.
    #[arg(long, env = "DSS_MAX_IN_FLIGHT", default_value_t = 8)]
    pub dss_max_in_flight: usize,

    /// Timeout of one DSS request, in seconds.
    #[arg(long, env = "DSS_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub dss_request_timeout_seconds: u64,

    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Builds reconciled at the same time.
    #[arg(long, env = "CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// After deletion, how long the finalizer waits for DSS to confirm an abort (or to become
    /// reachable) before it is released with a Warning event.
    #[arg(long, env = "FINALIZER_TIMEOUT_SECONDS", default_value_t = 600)]
    pub finalizer_timeout_seconds: u64,

    /// Tolerated clock difference between the operator and DSS when matching a lost start.
    #[arg(long, env = "CLOCK_SKEW_SECONDS", default_value_t = 30)]
    pub clock_skew_seconds: u64,

    /// Lines of the DSS log kept in `status.failure.logTail`.
    #[arg(long, env = "LOG_TAIL_LINES", default_value_t = 20)]
    pub log_tail_lines: usize,

    /// Slowest poll of an active job, in seconds.
    #[arg(long, env = "POLL_MAX_SECONDS", default_value_t = 8)]
    pub poll_max_seconds: u64,

    /// How often each connection's running jobs are listed while it has jobs to watch, in
    /// milliseconds: a job's end is noticed within about this long.
    #[arg(long, env = "LISTING_INTERVAL_MS", default_value_t = 1000)]
    pub listing_interval_ms: u64,

    /// The longest a DSS call of a reconcile waits for its connection's request budget, in
    /// milliseconds; beyond it the object is requeued, so one throttled DSS never holds the
    /// reconcilers of the others (job starts wait up to their own deadline at the start gate).
    #[arg(long, env = "MAX_BUDGET_WAIT_MS", default_value_t = 2000)]
    pub max_budget_wait_ms: u64,

    /// Elect a leader on a Lease so that only one replica acts.
    #[arg(long, env = "LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "kube-dss-controller")]
    pub lease_name: String,

    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Lease duration in seconds.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity (events' reporting instance, lease holder).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

/// An error in the flags.
pub(crate) type FlagError = Box<dyn std::error::Error + Send + Sync>;

impl Args {
    /// The tunables of the controllers.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            run: run::Settings {
                start_grace: Duration::from_secs(self.dss_request_timeout_seconds + 10),
                poll_max: Duration::from_secs(self.poll_max_seconds.max(1)),
                ..run::Settings::default()
            },
            finalizer_timeout: Duration::from_secs(self.finalizer_timeout_seconds),
            clock_skew: Duration::from_secs(self.clock_skew_seconds),
            log_tail_lines: self.log_tail_lines.max(1),
            listing_interval: Duration::from_millis(self.listing_interval_ms.max(100)),
            max_budget_wait: Duration::from_millis(self.max_budget_wait_ms),
            request_timeout: Duration::from_secs(self.dss_request_timeout_seconds.max(1)),
            connection_policy: self.connection_policy(),
        }
    }

    /// The connections refused by `--refuse-insecure-connections` and `--require-https`.
    fn connection_policy(&self) -> ConnectionPolicy {
        ConnectionPolicy {
            refuse_insecure: self.refuse_insecure_connections,
            require_https: self.require_https,
        }
    }

    /// The namespaces to watch: `None` for all of them.
    pub(crate) fn scopes(&self) -> Vec<Option<String>> {
        let list: Vec<String> = self
            .namespace
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if list.is_empty() {
            vec![None]
        } else {
            list.into_iter().map(Some).collect()
        }
    }

    /// The default connection, when `--dss-url` names one.
    pub(crate) fn default_connection(&self) -> Result<Option<DefaultConnection>, FlagError> {
        let (Some(url), Some(key_file)) = (&self.dss_url, &self.dss_api_key_file) else {
            if self.dss_url.is_some() {
                return Err("--dss-url needs --dss-api-key-file".into());
            }
            return Ok(None);
        };
        let prefix: dss::ApiPrefix = self.dss_api_prefix.parse().map_err(|_| {
            format!(
                "--dss-api-prefix must be /public/api or /dip/publicapi, not {}",
                self.dss_api_prefix
            )
        })?;
        let refused = self
            .connection_policy()
            .violations(url.as_str(), self.dss_insecure_skip_verify);
        if let Some(v) = refused.first() {
            return Err(match v {
                Violation::NotHttps(scheme) => {
                    format!("--dss-url is an {scheme}:// URL, and --require-https is set: use DSS's https:// address")
                }
                Violation::InsecureSkipVerify => "--dss-insecure-skip-verify contradicts --refuse-insecure-connections:                      drop it, and give DSS's CA with --dss-ca-file if its certificate is not publicly trusted"
                    .to_string(),
            }
            .into());
        }
        let rps = self.dss_requests_per_second.max(1);
        Ok(Some(DefaultConnection {
            url: url.clone(),
            api_key_file: key_file.clone(),
            prefix,
            ca_file: self.dss_ca_file.clone(),
            insecure_skip_verify: self.dss_insecure_skip_verify,
            limits: dss::Limits {
                requests_per_second: f64::from(rps),
                burst: rps,
                max_in_flight: self.dss_max_in_flight.max(1),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn default_connection(flags: &[&str]) -> Result<Option<DefaultConnection>, String> {
        let base = ["controller", "--dss-api-key-file", "/keys/apiKey"];
        let cli = Cli::try_parse_from(base.iter().chain(flags)).map_err(|e| e.to_string())?;
        cli.args.default_connection().map_err(|e| e.to_string())
    }

    #[test]
    fn a_default_connection_the_policy_refuses_stops_the_operator() {
        let https = ["--dss-url", "https://dss.example.com"];
        let http = ["--dss-url", "http://dss.example.com"];
        assert!(default_connection(&[&http[..], &["--dss-insecure-skip-verify"]].concat()).is_ok());
        let err = default_connection(&[&http[..], &["--require-https"]].concat()).unwrap_err();
        assert!(
            err.contains("--dss-url is an http:// URL") && err.contains("--require-https"),
            "{err}"
        );
        let err = default_connection(
            &[
                &https[..],
                &["--dss-insecure-skip-verify", "--refuse-insecure-connections"],
            ]
            .concat(),
        )
        .unwrap_err();
        assert!(
            err.contains("--dss-insecure-skip-verify contradicts --refuse-insecure-connections"),
            "{err}"
        );
        let ok =
            default_connection(&[&https[..], &["--require-https", "--refuse-insecure-connections"]].concat());
        assert!(ok.is_ok_and(|c| c.is_some()));
        let cli = Cli::try_parse_from(["controller", "--require-https"]).unwrap();
        assert_eq!(
            cli.args.settings().connection_policy,
            ConnectionPolicy {
                refuse_insecure: false,
                require_https: true
            }
        );
    }
}
