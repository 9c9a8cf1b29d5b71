//! A local DSS emulator (jobs API subset).

use std::process::ExitCode;

/// Arguments of `kube-dss emulator`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `kube-dss emulator`.
pub async fn main(_args: Args) -> ExitCode {
    ExitCode::FAILURE
}
