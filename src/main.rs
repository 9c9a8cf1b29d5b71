//! The `kube-dss` binary: one entry point for the operator, the CRD printer, the DSS emulator and
//! the jobs CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kube_dss::{cli, controller, crd, emulator};

/// kube-dss: drive Dataiku DSS dataset builds from Kubernetes.
#[derive(Parser)]
#[command(name = "kube-dss", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (DatasetBuild and DSSConnection controllers).
    Controller(controller::Args),
    /// Print every CRD as YAML (the content of `crds/`).
    Crds,
    /// Run a local DSS emulator (jobs API subset) for demos, tests and sandboxes.
    Emulator(emulator::Args),
    /// Work with DSS jobs from a shell: list, start, status, abort, log, wait.
    Jobs(cli::JobsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("kube-dss: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Controller(args) => controller::main(args).await,
            Command::Crds => match crd::crds_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("kube-dss: {err}");
                    ExitCode::FAILURE
                }
            },
            Command::Emulator(args) => emulator::main(args).await,
            Command::Jobs(args) => cli::main(args).await,
        }
    })
}
