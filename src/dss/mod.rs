//! Typed client of the DSS jobs REST API: the Rust twin of `dataikuapi`'s job API.
//!
//! The operator and the `kube-dss jobs` CLI both talk to DSS through [`DssClient`]. It speaks the
//! protocol described in `dss-api.md`: the official client's paths (with their exact trailing slashes),
//! Basic authentication with the API key as user name, and DSS's JSON error bodies. Unlike the Python
//! client it sets timeouts on every call, percent-encodes project keys and job ids, keeps the HTTP status
//! of every error, and sends every call through a per-client budget (token bucket, in-flight cap and
//! 429 / `Retry-After` pauses), because a DSS is a shared, fragile server.
//!
//! - [`config`]: [`ClientConfig`], [`ApiKey`], [`ApiPrefix`], [`Limits`].
//! - [`client`]: [`DssClient`] and the [`RequestObserver`] hook for metrics.
//! - [`model`]: wire types: job list items, status documents, job definitions and their builder.
//! - [`error`]: [`Error`], its classification (`is_retryable`, `category`, ...) and [`Operation`].
//! - [`waiter`]: [`JobWaiter`], polling a job until it reaches a terminal state.
//!
//! The client never retries a call by itself; in particular a job start is sent at most once per
//! [`DssClient::start_job`] call, whatever happens, so that callers can reason about duplicate jobs.

pub mod client;
pub mod config;
pub mod error;
mod limiter;
pub mod model;
pub mod waiter;

pub use client::{DssClient, Outcome, RequestObserver};
pub use config::{ApiKey, ApiPrefix, ClientConfig, Limits};
pub use error::{Error, Operation};
pub use model::{
    ActivityStatus, AuthInfo, BuildType, GlobalState, JobDefinition, JobDefinitionBuilder,
    JobDefinitionSummary, JobListItem, JobOutput, JobState, JobStatus, ObjectType, StartedJob,
};
pub use waiter::JobWaiter;
