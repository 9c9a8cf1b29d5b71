//! The operator.

use std::process::ExitCode;

/// Arguments of `kube-dss controller`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `kube-dss controller`.
pub async fn main(_args: Args) -> ExitCode {
    ExitCode::FAILURE
}
