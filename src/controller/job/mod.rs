//! The first kind of run: a `DatasetBuild` runs one DSS job. This module maps the build onto the run
//! core (its controls, its status) and makes the DSS job calls the executor needs: start
//! ([`definition`]), observe ([`poller`], and the end of the log of a failed job), abort, and the
//! search for a lost start ([`search`]).

pub(crate) mod definition;
pub(crate) mod poller;
pub(crate) mod search;

use std::{sync::Arc, time::Duration};

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    connections::Resolved,
    context::RunContext,
    error::Error,
    execute::{
        Look, RunKind, Sighting,
        controls::{self, RunFields},
    },
    metrics::Metrics,
    run::{
        Candidate, Controls, Current, FailureDetails, Handled, Kind, Observation, Past, RunStatus, Signal,
        contract::Derived,
        vocabulary::{EventAction, EventReason, RunState, Words},
    },
    stores::Stores,
};
use crate::{
    crd::{
        ConnectionRef, DatasetBuild, DatasetBuildSpec, DatasetBuildStatus, FINALIZER, FailureReason,
        HistoryEntry, StartRequest,
    },
    dss::{self, JobState, LogTail, LogTailLimits},
};

/// The most bytes of a failed job's log kept in `status.failure.logTail`.
const LOG_TAIL_BYTES: usize = 4096;

/// The DSS job kind of run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JobKind;

/// What the job calls share: the watch of DSS jobs, and every build of every watch scope (to tell
/// this build's jobs from other builds' jobs).
pub(crate) struct JobIo {
    /// The shared watcher of DSS jobs.
    pub(crate) poller: Arc<poller::Poller>,
    /// Every DatasetBuild of every scope.
    pub(crate) builds: Stores<DatasetBuild>,
}

/// The reference a wake-up of `build` carries.
fn wake_ref(build: &DatasetBuild) -> ObjectRef<DatasetBuild> {
    ObjectRef::new(&build.name_any()).within(&build.namespace().unwrap_or_default())
}

impl Kind for JobKind {
    type Handle = String;
    type State = JobState;
    type Details = ();

    const WORDS: Words = Words {
        success: "DONE",
        request: "the job definition",
        failed: FailureReason::JobFailed,
        aborted: FailureReason::JobAborted,
        not_found: FailureReason::JobNotFound,
        started: EventReason::JobStarted,
        adopted: EventReason::JobAdopted,
        succeeded: EventReason::JobSucceeded,
        failed_event: EventReason::JobFailed,
        aborted_event: EventReason::JobAborted,
        start: EventAction::StartJob,
        poll: EventAction::PollJob,
        abort: EventAction::AbortJob,
        adopt: EventAction::AdoptJob,
    };

    fn run_state(state: &JobState) -> RunState {
        match state {
            JobState::NotStarted => RunState::Queued,
            JobState::Running | JobState::Unknown(_) => RunState::Running,
            JobState::Done => RunState::Succeeded,
            JobState::Failed => RunState::Failed,
            JobState::Aborted => RunState::Aborted,
        }
    }

    fn accepted_state() -> JobState {
        JobState::NotStarted
    }

    fn unknown_state() -> JobState {
        JobState::Unknown("UNKNOWN".to_string())
    }

    fn describe(job_id: &String) -> String {
        format!("DSS job {job_id}")
    }
}

impl RunKind for JobKind {
    type Resource = DatasetBuild;
    type Status = DatasetBuildStatus;
    type Io = JobIo;

    const FINALIZER: &'static str = FINALIZER;
    const CONTROLLER: &'static str = "datasetbuild";

    /// The run controls of a build: its spec (named field by field, so a new one cannot be forgotten)
    /// and its annotations.
    fn controls(build: &DatasetBuild) -> Controls {
        let DatasetBuildSpec {
            connection_ref: _,
            project_key: _,
            build_type: _,
            outputs: _,
            refresh_hive_metastore: _,
            auto_update_schema_before_each_recipe_run: _,
            rerun_token,
            on_spec_change,
            suspend,
            active_deadline_seconds,
            start_deadline_seconds,
            retry,
            fail_on_warnings,
            deletion_policy,
        } = &build.spec;
        let fields = RunFields {
            rerun_token,
            on_spec_change,
            suspend,
            active_deadline_seconds,
            start_deadline_seconds,
            retry,
            fail_on_warnings,
            deletion_policy,
        };
        controls::controls(
            fields,
            &build.metadata,
            |rerun| definition::run_fingerprint(&build.spec, rerun),
            definition::definition_hash(&build.spec),
        )
    }

    fn connection(res: &DatasetBuild) -> Option<&ConnectionRef> {
        res.spec.connection_ref.as_ref()
    }

    /// The run core's view of a build's status. Phase, attempts, conditions' derivation inputs and the
    /// observed generation are derived again when written.
    fn read(res: &DatasetBuild) -> RunStatus<Self> {
        let Some(s) = res.status.clone() else {
            return RunStatus::default();
        };
        let DatasetBuildStatus {
            observed_generation: _,
            phase: _,
            job_id,
            state,
            start_time,
            completion_time,
            warnings_count,
            attempts: _,
            start_request,
            not_before,
            abort_request,
            last_handled_rerun_token,
            last_handled_rerun_annotation,
            last_handled_abort_annotation,
            failure,
            history,
            conditions,
        } = s;
        RunStatus {
            current: job_id.map(|handle| Current {
                handle,
                state: state.as_deref().map(JobState::from_dss),
                start_time,
                completion_time,
                warnings: warnings_count,
                details: (),
            }),
            start_request,
            not_before,
            abort_request,
            handled: Handled {
                rerun_token: last_handled_rerun_token,
                rerun_annotation: last_handled_rerun_annotation,
                abort_annotation: last_handled_abort_annotation,
            },
            failure: failure.map(|f| *f),
            history: history
                .into_iter()
                .map(|h| Past {
                    handle: h.job_id,
                    state: h.state.as_deref().map(JobState::from_dss),
                    start_time: h.start_time,
                    completion_time: h.completion_time,
                    details: (),
                })
                .collect(),
            conditions,
        }
    }

    fn written(res: &DatasetBuild) -> Option<&DatasetBuildStatus> {
        res.status.as_ref()
    }

    /// The build's status for the run core's status and the derived fields.
    fn write(run: RunStatus<Self>, derived: Derived) -> DatasetBuildStatus {
        let RunStatus {
            current,
            start_request,
            not_before,
            abort_request,
            handled,
            failure,
            history,
            conditions: _,
        } = run;
        let state = |s: Option<JobState>| s.map(|s| s.as_str().to_string());
        let (job_id, job_state, start_time, completion_time, warnings_count) = match current {
            Some(c) => (
                Some(c.handle),
                state(c.state),
                c.start_time,
                c.completion_time,
                c.warnings,
            ),
            None => (None, None, None, None, None),
        };
        DatasetBuildStatus {
            observed_generation: derived.observed_generation,
            phase: Some(derived.phase),
            job_id,
            state: job_state,
            start_time,
            completion_time,
            warnings_count,
            attempts: derived.attempts,
            start_request,
            not_before,
            abort_request,
            last_handled_rerun_token: handled.rerun_token,
            last_handled_rerun_annotation: handled.rerun_annotation,
            last_handled_abort_annotation: handled.abort_annotation,
            failure: failure.map(Box::new),
            history: history
                .into_iter()
                .map(|h| HistoryEntry {
                    job_id: h.handle,
                    state: state(h.state),
                    start_time: h.start_time,
                    completion_time: h.completion_time,
                })
                .collect(),
            conditions: derived.conditions,
        }
    }

    fn key(job_id: &String) -> String {
        job_id.clone()
    }

    fn watch(io: &JobIo, store: Store<DatasetBuild>) {
        io.builds.add(store);
    }

    fn wakes(io: &JobIo, namespace: Option<&str>) -> BoxStream<'static, ObjectRef<DatasetBuild>> {
        io.poller.wakes(namespace).boxed()
    }

    fn count(metrics: &Metrics, signal: Signal) {
        match signal {
            Signal::Started => metrics.job_started(),
            Signal::Adopted => metrics.job_adopted(),
            Signal::Finished { outcome, age } => metrics.job_finished(outcome.as_str(), age),
            Signal::OutcomeUnknown => metrics.start_outcome_unknown(),
            Signal::Trouble(category) => metrics.reconcile_error(category.as_str()),
        }
    }

    async fn start(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &DatasetBuild,
        _request: &StartRequest,
    ) -> Result<String, dss::Error> {
        let definition = definition::job_definition(&res.spec);
        let started = conn.client.start_job(&res.spec.project_key, &definition).await?;
        // Watched from now on: the next listing wakes the build when the job runs or ends.
        ctx.io.poller.track(
            conn,
            wake_ref(res),
            &res.spec.project_key,
            &started.id,
            Some(JobState::NotStarted),
        );
        Ok(started.id)
    }

    async fn observe(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &DatasetBuild,
        current: &Current<Self>,
        _age: Duration,
        look: Look,
    ) -> Result<Sighting<Self>, dss::Error> {
        let project = &res.spec.project_key;
        let poller = &ctx.io.poller;
        let seen = match look {
            Look::Poll => {
                poller
                    .observe(
                        conn,
                        wake_ref(res),
                        project,
                        &current.handle,
                        current.state.clone(),
                    )
                    .await?
            }
            Look::Confirm => poller::Seen {
                observed: Some(poller.status(conn, project, &current.handle).await?),
                watched: false,
            },
        };
        let Some(observed) = seen.observed else {
            return Ok(Sighting {
                observation: None,
                watched: seen.watched,
            });
        };
        let failure = if look == Look::Poll && observed.state == JobState::Failed {
            Some(
                failure_details(
                    ctx,
                    conn,
                    project,
                    &current.handle,
                    observed.failed_activity.clone(),
                )
                .await,
            )
        } else {
            None
        };
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.and_then(|t| Timestamp::from_second(t.timestamp()).ok())
        };
        Ok(Sighting {
            observation: Some(Observation {
                state: observed.state,
                start_time: time(observed.start_time),
                end_time: time(observed.end_time),
                warnings: observed.warnings,
                failure,
                details: (),
            }),
            watched: seen.watched,
        })
    }

    async fn abort(
        _ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &DatasetBuild,
        job_id: &String,
    ) -> Result<(), dss::Error> {
        conn.client.abort(&res.spec.project_key, job_id).await
    }

    async fn search(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &DatasetBuild,
        status: &RunStatus<Self>,
        request: &StartRequest,
        since: Timestamp,
    ) -> Result<Vec<Candidate<String>>, Error> {
        search::candidates(ctx, conn, res, status, request, since).await
    }
}

/// Where a FAILED job failed, the end of its log and the line that explains the failure. The log is
/// streamed and reduced to its end (the final error stays, however long its lines), with the API key
/// and its Basic form removed before anything is cut.
async fn failure_details(
    ctx: &RunContext<JobKind>,
    conn: &Resolved,
    project: &str,
    job_id: &str,
    activity: Option<String>,
) -> FailureDetails {
    // The listing does not carry activities: ask for the full status when it is missing.
    let location = match activity {
        Some(a) => Some(a),
        None => ctx
            .io
            .poller
            .status(conn, project, job_id)
            .await
            .ok()
            .and_then(|o| o.failed_activity),
    };
    let limits = LogTailLimits::new(ctx.shared.settings.log_tail_lines, LOG_TAIL_BYTES);
    let tail = match conn
        .client
        .get_log_tail(project, job_id, location.as_deref(), limits)
        .await
    {
        Ok(tail) => Some(tail),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the DSS log of the failed job");
            None
        }
    };
    FailureDetails {
        reason: None,
        location,
        cause: tail.as_ref().and_then(LogTail::failure_message),
        log_tail: tail.map(|t| t.text).filter(|t| !t.is_empty()),
    }
}
