//! A local DSS emulator (jobs and scenarios API subset) for demos, tests and sandboxes.
//!
//! It serves the DSS public API under both `/public/api` and `/dip/publicapi`, so the official
//! Python client (`dataiku-api-client`) works against it unchanged. It simulates jobs from a
//! configured flow (activities with durations, outcomes, warnings and log lines, an instance-wide
//! limit on running activities, the four build types) and scenarios whose steps build objects with
//! real jobs, wait, warn or fail. Faults (latency, 5xx, a gateway's bare 404, 429, resets, lost start and
//! run responses, a hung server, outages) can be injected, and an admin API under `/__emulator/` (on the DSS listener, or on one
//! of its own) lets tests see and finish jobs and see scenario runs. `docs/emulator.md` documents
//! the configuration and both APIs.
//!
//! Where things live: `server.rs` (listeners, the fault and stats layer, [`spawn`]) serves
//! `api.rs` (projects, jobs, datasets), `scenario_api.rs` and `admin_api.rs`; they share
//! `state.rs`, `auth.rs` and `wire.rs`. `world.rs` advances `sim.rs` (jobs) and `scenarios.rs`
//! (fires, runs, steps) in one time order; `scenario_view.rs` renders runs. `catalog.rs` compiles
//! `config.rs`; `clock.rs`, `faults.rs`, `stats.rs` and `error.rs` are leaves.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_dss::emulator::Error> {
//! use kube_dss::emulator::{Config, spawn};
//! let config = Config::from_yaml("projects: [{projectKey: P, datasets: [{name: d}]}]\napiKeys: [{key: k, id: me, admin: true}]")?;
//! let emulator = spawn(config, "127.0.0.1:0".parse().expect("a socket address")).await?;
//! println!("{}", emulator.base_url());
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
mod admin_api;
mod api;
mod auth;
mod catalog;
mod clock;
mod config;
mod error;
mod faults;
mod scenario_api;
mod scenario_view;
mod scenarios;
mod server;
mod sim;
mod state;
mod stats;
mod wire;
mod world;

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

pub use config::{
    ApiKeyConfig, BuildSpec, Config, DimensionConfig, InstanceConfig, ObjectConfig, Outcome, ProjectConfig,
    RecipeConfig,
};
pub use error::Error;
pub use faults::{DropMode, FaultCounters, Faults, GatewayFault};
pub use server::{Handle, Listen, spawn, spawn_with};
pub use stats::Stats;

use crate::telemetry::{self, LogFormat};

/// The example configuration, used when `--config` is not given.
const EXAMPLE_CONFIG: &str = include_str!("../../examples/emulator.yaml");

/// Arguments of `kube-dss emulator`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the ready line shows the real one).
    #[arg(long, default_value = "127.0.0.1:11200", env = "KUBE_DSS_EMULATOR_LISTEN")]
    pub listen: SocketAddr,
    /// Serve the admin API (`/__emulator/`) on this address instead of on --listen, so that DSS
    /// API callers cannot reach it; a second ready line shows its URL. Port 0 picks a free port.
    #[arg(long, env = "KUBE_DSS_EMULATOR_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// The YAML configuration file (projects, flow, API keys, faults). Without it, the built-in
    /// copy of `examples/emulator.yaml` is used.
    #[arg(long, env = "KUBE_DSS_EMULATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `instance.timeScale` (e.g. 10 makes every build ten times faster).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Log format (logs go to stderr; stdout only carries the ready line).
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

fn load(path: Option<&Path>, time_scale: Option<f64>) -> Result<Config, Error> {
    let mut config = match path {
        Some(p) => Config::from_file(p)?,
        None => Config::from_yaml(EXAMPLE_CONFIG)?,
    };
    if let Some(scale) = time_scale {
        // Checked with the rest of the configuration when the emulator starts.
        config.instance.time_scale = scale;
    }
    Ok(config)
}

fn report(err: &dyn std::error::Error) -> ExitCode {
    let mut msg = format!("kube-dss emulator: {err}");
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}

/// Waits for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `kube-dss emulator`: serves until SIGTERM or Ctrl-C. Prints one ready line on stdout
/// (`kube-dss emulator listening on http://ADDR`) once it accepts connections, and a second one
/// (`kube-dss emulator admin API on http://ADDR`) with `--admin-addr`.
pub async fn main(args: Args) -> ExitCode {
    telemetry::init(args.log_format, "info,kube_dss=info");
    let config = match load(args.config.as_deref(), args.time_scale) {
        Ok(c) => c,
        Err(err) => return report(&err),
    };
    let projects = config.projects.len();
    let listen = Listen {
        dss: args.listen,
        admin: args.admin_addr,
    };
    let handle = match spawn_with(config, listen).await {
        Ok(h) => h,
        Err(err) => return report(&err),
    };
    tracing::info!(addr = %handle.local_addr(), projects, "DSS emulator ready");
    let mut stdout = std::io::stdout().lock();
    // Scripts wait for this exact line to learn the port (and for the second one, when the admin
    // API has its own listener).
    let mut ready = format!("kube-dss emulator listening on {}\n", handle.base_url());
    if handle.admin_addr().is_some() {
        ready.push_str(&format!(
            "kube-dss emulator admin API on {}\n",
            handle.admin_url()
        ));
    }
    if stdout
        .write_all(ready.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        eprintln!("kube-dss emulator: cannot write the ready line to stdout");
    }
    drop(stdout);
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}
