//! Typed client of the DSS jobs and scenarios REST API: the Rust twin of `dataikuapi`'s job and
//! scenario API.
//!
//! The operator and the `kube-dss jobs` / `kube-dss scenarios` CLIs talk to DSS through [`DssClient`]. It speaks the
//! protocol described in `dss-api.md`: the official client's paths (with their exact trailing slashes),
//! Basic authentication with the API key as user name, and DSS's JSON error bodies. Unlike the Python
//! client it sets timeouts on every call, percent-encodes project keys and job ids, keeps the HTTP status
//! of every error, and sends every call through a per-client budget (token bucket, in-flight cap and
//! 429 / `Retry-After` pauses), because a DSS is a shared, fragile server.
//!
//! - [`config`]: [`ClientConfig`], [`ApiKey`], [`ApiPrefix`], [`Limits`].
//! - [`client`]: [`DssClient`] and the [`RequestObserver`] hook for metrics.
//! - [`model`]: wire types: job list items, status documents, job definitions and their builder.
//! - [`error`]: [`Error`], its classification ([`Category`], `is_not_found`, `is_retryable`,
//!   `is_rejection`, ...) and [`Operation`]. Only DSS's own JSON error classifies a job or a key;
//!   a gateway's page is [`Category::GatewayError`], transient.
//! - [`log_tail`]: [`LogTail`], the end of a job log read as a stream, secrets removed, and
//!   [`failure_message`].
//! - [`waiter`]: [`JobWaiter`], polling a job until it reaches a terminal state.
//! - [`scenario`]: the scenario calls of [`DssClient`] (run, the trigger fire and its run, run
//!   listings, one run with its steps, status, abort, logs); [`scenario_model`]: their wire types;
//!   [`scenario_waiter`]: [`ScenarioWaiter`], from a trigger fire to its finished run.
//! - `listing` (streaming decode of job and project listings), `redact` (removing the key from
//!   texts DSS sends back) and `limiter` (the budget) are internal.
//!
//! The client never retries a call by itself; in particular a job start is sent at most once per
//! [`DssClient::start_job`] call, and a scenario run request at most once per
//! [`DssClient::run_scenario`] call, whatever happens, so that callers can reason about duplicates.
//! Each call is bounded in time (one deadline for request and body) and in memory (capped bodies,
//! streamed listings and logs); with [`DssClient::with_max_budget_wait`] its wait for the budget is
//! bounded too.
//!
//! ```no_run
//! use std::time::Duration;
//! use kube_dss::dss::{ApiKey, BuildType, ClientConfig, DssClient, JobDefinitionBuilder, JobWaiter, ObjectType};
//!
//! # async fn example() -> Result<(), kube_dss::dss::Error> {
//! let url = url::Url::parse("https://dss.example.com:11200").expect("a valid URL");
//! let client = DssClient::new(ClientConfig::new(url, ApiKey::from("my-key")))?;
//! let definition = JobDefinitionBuilder::new(BuildType::NonRecursiveForcedBuild)
//!     .with_output("cat_train_hdfs", Some(ObjectType::Dataset), None, Some("NP"))
//!     .build();
//! let job = client.start_job("IMPALA", &definition).await?; // never retried
//! let status = JobWaiter::new()
//!     .with_timeout(Some(Duration::from_secs(3600)))
//!     .wait(&client, "IMPALA", &job.id)
//!     .await?;
//! println!("{} ended {}", job.id, status.state);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod clock;
pub mod config;
pub mod error;
mod limiter;
mod listing;
pub mod log_tail;
pub mod model;
mod poll;
mod redact;
pub mod scenario;
pub mod scenario_model;
pub mod scenario_waiter;
pub mod waiter;

pub use client::{
    DssClient, MAX_LISTED_JOBS, MAX_LISTED_PROJECTS, MAX_RATE_LIMIT_PAUSE, Outcome, RequestObserver, Running,
};
pub use clock::ClockOffset;
pub use config::{ApiKey, ApiPrefix, ClientConfig, Limits};
pub use error::{Category, Error, Operation};
pub use log_tail::{LogTail, LogTailLimits, failure_message};
pub use model::{
    ActivityStatus, AuthInfo, BuildType, GlobalState, JobDefinition, JobDefinitionBuilder,
    JobDefinitionSummary, JobListItem, JobOutput, JobSearch, JobState, JobStatus, ObjectType, StartedJob,
};
pub use scenario_model::{
    ScenarioListItem, ScenarioOutcome, ScenarioRun, ScenarioRunDetails, ScenarioStatus, StepRun, ThrownError,
    TriggerFire, log_tail,
};
pub use scenario_waiter::{ScenarioWait, ScenarioWaiter};
pub use waiter::JobWaiter;
