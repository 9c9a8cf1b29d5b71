//! kube-dss: drives Dataiku DSS dataset builds from Kubernetes.
//!
//! - [`crd`]: the `DatasetBuild` and `DSSConnection` custom resources.
//! - [`controller`]: the operator that starts, polls and aborts DSS jobs for them.
//! - [`dss`]: a typed client of the DSS jobs REST API, shared by the operator and the CLI.
//! - [`emulator`]: a local DSS (jobs API subset) for demos, tests and sandboxes.
//! - [`cli`]: the `kube-dss jobs` command line.

pub mod cli;
pub mod controller;
pub mod crd;
pub mod dss;
pub mod emulator;
mod sync;
pub mod telemetry;
