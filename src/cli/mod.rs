//! The `kube-dss jobs` command line: the DSS jobs API from a shell.

use std::process::ExitCode;

/// Arguments of `kube-dss jobs`.
#[derive(clap::Args, Debug)]
pub struct JobsArgs {}

/// Runs `kube-dss jobs`.
pub async fn main(_args: JobsArgs) -> ExitCode {
    ExitCode::FAILURE
}
