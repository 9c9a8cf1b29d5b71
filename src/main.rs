//! The `kube-dss` binary: one entry point for the operator, the CRD printer, the DSS emulator, the
//! jobs, scenarios and schedules CLIs; started as `kubectl-dss`, the kubectl plugin (`cli::plugin`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kube_dss::{cli, controller, crd, emulator};

/// jemalloc with background threads that return freed pages to the OS after its decay time, so an
/// operator that has finished a burst of builds shrinks back to what it holds (see Cargo.toml).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// kube-dss: drive Dataiku DSS dataset builds from Kubernetes.
#[derive(Parser)]
#[command(name = "kube-dss", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the operator (DatasetBuild, DSSConnection and DatasetBuildSchedule controllers).
    Controller(controller::Args),
    /// Print every CRD as YAML (the content of `crds/`).
    Crds,
    /// Run a local DSS emulator (jobs and scenarios API subset) for demos, tests and sandboxes.
    Emulator(emulator::Args),
    /// Work with DSS jobs from a shell: list, start, status, abort, log, wait.
    Jobs(cli::JobsArgs),
    /// Work with DSS scenarios from a shell: list, run, status, abort, log, wait.
    Scenarios(cli::ScenariosArgs),
    /// Work with DatasetBuildSchedules: run a slot's build now.
    Schedules(cli::schedules::SchedulesArgs),
}

/// Exit code of a command-line usage error (EX_USAGE). clap's own default, 2, would collide with
/// `kube-dss jobs wait`'s "job ABORTED" (and `kube-dss scenarios wait`'s "run ABORTED").
const EXIT_USAGE: u8 = 64;

/// True when the binary was started as `kubectl-dss` (kubectl runs plugins by that file name): it is
/// then the kubectl plugin, with its own command line.
fn started_as_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_stem().map(|s| s == "kubectl-dss"))
        .unwrap_or(false)
}

fn main() -> ExitCode {
    if started_as_kubectl_plugin() {
        return match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(cli::plugin::main()),
            Err(err) => {
                eprintln!("kubectl dss: cannot start the async runtime: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` also arrive here, and are not errors.
            let code = if err.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
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
            Command::Scenarios(args) => cli::scenarios::main(args).await,
            Command::Schedules(args) => cli::schedules::main(args).await,
        }
    })
}
