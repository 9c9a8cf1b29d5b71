//! The operator: the DatasetBuild and ScenarioRun controllers (start, observe and abort DSS jobs and
//! scenario runs), the DSSConnection
//! controller (check credentials) and the DatasetBuildSchedule controller ([`schedule`]: a build per
//! cron slot), an admin server (health, readiness, metrics) and optional leader election, all under
//! one shutdown signal ([`process`], per watch scope [`scope`]).
//!
//! The way a build travels (docs/architecture.md):
//!
//! watch -> reconcile ([`execute`]) -> observe -> decide ([`run`], pure) -> act -> record,
//! and on deletion [`execute::cleanup`] with the decisions of [`run::cleanup`].
//!
//! - [`run`]: the run core, every decision of run control, generic over the kind of run.
//! - [`execute`]: the IO executor around it, generic over [`execute::RunKind`].
//! - [`job`]: the first kind of run, a DatasetBuild's DSS job; [`scenario`]: the second, a
//!   ScenarioRun's DSS scenario run.
//! - [`schedule`]: DatasetBuildSchedules, one DatasetBuild per cron slot.
//! - [`connections`] / [`connection`]: DSS clients per connection, and the DSSConnection reconciler;
//!   [`connection_policy`]: the connections a cluster forbids.
//! - [`events`], [`metrics`], [`admin`], [`leader`]: what the operator reports and how it runs.

pub(crate) mod admin;
mod args;
mod backoff;
pub(crate) mod connection;
pub(crate) mod connection_policy;
pub(crate) mod connections;
pub(crate) mod context;
pub(crate) mod error;
pub mod events;
pub(crate) mod execute;
pub(crate) mod job;
pub(crate) mod leader;
pub(crate) mod metrics;
mod process;
pub(crate) mod run;
pub(crate) mod scenario;
pub(crate) mod schedule;
mod scope;
pub(crate) mod stores;

pub use args::Args;
pub use process::main;
