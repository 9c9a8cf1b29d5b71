//! kube-dss: drives Dataiku DSS dataset builds from Kubernetes.
//!
//! - [`crd`]: the `DatasetBuild`, `DSSConnection` and `DatasetBuildSchedule` custom resources.
//! - [`controller`]: the operator that starts, polls and aborts DSS jobs for them, and creates the
//!   builds of schedules.
//! - [`dss`]: a typed client of the DSS jobs and scenarios REST API, shared by the operator and the
//!   CLIs.
//! - [`emulator`]: a local DSS (jobs and scenarios API subset) for demos, tests and sandboxes.
//! - [`cli`]: the `kube-dss jobs`, `kube-dss scenarios` and `kube-dss schedules` command lines.

pub mod cli;
pub mod controller;
pub mod crd;
mod digest;
pub mod dss;
pub mod emulator;
mod sync;
pub mod telemetry;
mod text;
