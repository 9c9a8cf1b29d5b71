//! The DatasetBuild reconciler: observe the DSS job, decide with [`plan::next_step`], act, record the
//! whole status (written only when it changed), and publish events on transitions.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use rand::Rng;
use serde_json::json;

use super::{
    Context,
    connections::Resolved,
    definition::{self, ADOPT_ANNOTATION, RERUN_ANNOTATION},
    error::{Error, from_finalizer, truncate},
    events::{self, reason},
    plan::{self, AbortReason, Sending, Step},
    poller::Observed,
    status::{self, Blocker},
};
use crate::{
    crd::{
        AbortRequest, DatasetBuild, DatasetBuildStatus, DeletionPolicy, FIELD_MANAGER, FINALIZER, Phase,
        StartRequest,
    },
    dss::JobState,
};

/// Reconciles one DatasetBuild.
pub async fn reconcile(build: Arc<DatasetBuild>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled("datasetbuild");
    let ns = build.namespace().unwrap_or_default();
    let api: Api<DatasetBuild> = Api::namespaced(ctx.kube.clone(), &ns);
    finalizer(&api, FINALIZER, build, |event| async {
        match event {
            Finalizer::Apply(b) => apply(&b, &api, &ctx).await,
            Finalizer::Cleanup(b) => cleanup(&b, &api, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer)
}

/// What one reconcile of a live build does.
async fn apply(build: &DatasetBuild, api: &Api<DatasetBuild>, ctx: &Context) -> Result<Action, Error> {
    let mut run = Run::new(build, ctx);
    let action = run.drive(api).await;
    run.finish(api, action).await
}

/// The state of one reconcile: the status being computed and what happened on the way.
struct Run<'a> {
    build: &'a DatasetBuild,
    ctx: &'a Context,
    old: DatasetBuildStatus,
    status: DatasetBuildStatus,
    blocker: Option<Blocker>,
    want: String,
    now: Timestamp,
    /// The resourceVersion every write must find (the one read, then the one last written).
    rv: Option<String>,
    /// A DSS job was started in this reconcile (its id must not be lost to a write conflict).
    started_job: bool,
    /// Events to publish once the status is recorded.
    events: Vec<(EventType, &'static str, &'static str, String)>,
}

impl<'a> Run<'a> {
    fn new(build: &'a DatasetBuild, ctx: &'a Context) -> Self {
        let old = build.status.clone().unwrap_or_default();
        let rerun = build.annotations().get(RERUN_ANNOTATION).map(String::as_str);
        Self {
            build,
            ctx,
            status: old.clone(),
            old,
            blocker: None,
            want: definition::run_fingerprint(&build.spec, rerun),
            // Kubernetes times have whole seconds: a finer `now` would never compare equal to what
            // is read back, and every poll would rewrite the status.
            now: status::now_seconds(),
            rv: build.resource_version(),
            started_job: false,
            events: Vec::new(),
        }
    }

    fn event(&mut self, type_: EventType, reason: &'static str, action: &'static str, note: String) {
        self.events.push((type_, reason, action, note));
    }

    fn block(&mut self, reason: impl Into<String>, message: impl Into<String>, stalled: bool) {
        self.blocker = Some(Blocker {
            reason: reason.into(),
            message: message.into(),
            stalled,
        });
    }

    /// Observes, decides and acts. Returns how to requeue, or an error for the error policy.
    async fn drive(&mut self, api: &Api<DatasetBuild>) -> Result<Action, Error> {
        let ns = self.build.namespace().unwrap_or_default();
        let conn = match self
            .ctx
            .connections
            .resolve(&ns, self.build.spec.connection_ref.as_ref())
            .await
        {
            Ok(conn) => conn,
            Err(Error::Connection { reason, message }) => {
                if self.status.phase.is_none() {
                    self.status.phase = Some(Phase::Pending);
                }
                self.block(reason, message, false);
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            Err(e) => return Err(e),
        };

        if plan::has_active_job(&self.status)
            && let Err(e) = self.observe(&conn).await
        {
            return self.dss_trouble(&conn, e).await;
        }

        let mut step = self.decide();
        if step == Step::Withdraw {
            // Nothing was sent for the recorded request: drop it, and the new decision records its own.
            self.ctx.starts.forget(&self.uid());
            self.status.start_request = None;
            step = self.decide();
        }
        tracing::debug!(?step, "decided");
        match step {
            Step::Done => {
                self.settle_phase();
                Ok(Action::await_change())
            }
            Step::Suspend => {
                self.status.phase = Some(Phase::Suspended);
                Ok(Action::await_change())
            }
            Step::Poll { after } => Ok(Action::requeue(jitter(after))),
            Step::WaitForStarter { after } => {
                self.status.phase = Some(Phase::Starting);
                Ok(Action::requeue(after))
            }
            Step::RetryLater { after } => {
                self.status.phase = Some(Phase::Pending);
                let msg = format!(
                    "the job failed; retry {} is due in {}s",
                    self.status.attempts.unwrap_or(1),
                    after.as_secs()
                );
                self.block("RetryScheduled", msg, false);
                Ok(Action::requeue(after))
            }
            Step::Abort { reason } => self.abort(&conn, reason).await,
            Step::Start { attempt } => self.start(api, &conn, attempt).await,
            Step::Send { attempt } => {
                let Ok(_permit) = conn.start_gate.clone().try_acquire_owned() else {
                    self.mark_queued();
                    return Ok(Action::requeue(jitter(Duration::from_secs(1))));
                };
                let fresh = self
                    .status
                    .start_request
                    .as_ref()
                    .is_some_and(|r| self.ctx.starts.may_send(r, status::now_seconds()));
                if !fresh {
                    // Recorded too long ago to be sent as it is: record it again (with the
                    // resourceVersion precondition and a new time), then send.
                    self.ctx.starts.forget(&self.uid());
                    if let Some(action) = self.record_start(api, attempt, false).await? {
                        return Ok(action);
                    }
                } else if !self.still_stands(api).await? {
                    // The object changed since this copy (the cache may lag, say while its watch
                    // is re-established): decide again on the newer copy before sending anything.
                    self.mark_queued();
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                tracing::debug!(
                    fresh,
                    "sending a start request recorded while it waited for its turn"
                );
                self.post_start(&conn, attempt).await
            }
            Step::Withdraw => Ok(Action::requeue(Duration::ZERO)),
            Step::ResolveStart { since } => self.resolve_start(api, &conn, since).await,
        }
    }

    /// When the desired state is reached, the phase says how the last job ended (it may still read
    /// `Pending` after an abort for a spec change that was reverted).
    fn settle_phase(&mut self) {
        if matches!(
            self.status.phase,
            Some(Phase::Succeeded | Phase::Failed | Phase::Aborted | Phase::Suspended)
        ) || self.status.job_id.is_none()
        {
            return;
        }
        self.status.phase = match plan::recorded_state(&self.status) {
            Some(JobState::Done) if self.status.failure.is_none() => Some(Phase::Succeeded),
            Some(JobState::Aborted) if self.status.failure.is_none() => {
                self.status.failure = Some(status::failure("JobAborted", "the DSS job was aborted"));
                Some(Phase::Aborted)
            }
            Some(JobState::Aborted)
                if self
                    .status
                    .failure
                    .as_ref()
                    .is_some_and(|f| f.reason == "JobAborted") =>
            {
                Some(Phase::Aborted)
            }
            Some(_) => Some(Phase::Failed),
            None => self.status.phase,
        };
    }

    /// Polls the current job and folds the answer into the status.
    async fn observe(&mut self, conn: &Resolved) -> Result<(), Error> {
        let Some(job_id) = self.status.job_id.clone() else {
            return Ok(());
        };
        let project = &self.build.spec.project_key;
        let started = self.start_instant();
        let observed = match self.ctx.poller.observe(conn, project, &job_id, started).await {
            Ok(o) => o,
            Err(e) if e.is_not_found() => {
                // DSS no longer knows the job (purged, or DSS lost its state): the run cannot be
                // followed any more; say so instead of polling forever.
                self.status.state = Some("UNKNOWN".to_string());
                self.status.phase = Some(Phase::Failed);
                self.status.completion_time = Some(Time(self.now));
                self.status.failure = Some(status::failure(
                    "JobNotFound",
                    format!("DSS no longer knows job {job_id}: {e}"),
                ));
                self.event(
                    EventType::Warning,
                    reason::JOB_FAILED,
                    "PollJob",
                    format!("DSS no longer knows job {job_id}"),
                );
                return Ok(());
            }
            Err(e) => return Err(Error::dss("poll job")(e)),
        };
        self.fold(conn, &job_id, observed).await;
        Ok(())
    }

    /// Records an observation; on a terminal state, records the outcome (and the log tail of a failure).
    async fn fold(&mut self, conn: &Resolved, job_id: &str, observed: Observed) {
        let was_terminal = plan::recorded_state(&self.status).is_some_and(|s| s.is_terminal());
        self.status.state = Some(observed.state.as_str().to_string());
        if let Some(t) = status::time_from_chrono(observed.start_time) {
            self.status.start_time = Some(t);
        }
        self.status.warnings_count = Some(i64::try_from(observed.warnings).unwrap_or(i64::MAX));
        if !observed.state.is_terminal() {
            self.status.phase = Some(status::active_phase(&observed.state));
            return;
        }
        if was_terminal {
            return;
        }
        self.status.completion_time =
            Some(status::time_from_chrono(observed.end_time).unwrap_or(Time(self.now)));
        let duration = self.job_age();
        let abort_reason = self.status.abort_request.as_ref().map(|a| a.reason.clone());
        let spec = &self.build.spec;
        match observed.state {
            JobState::Done if spec.fail_on_warnings.unwrap_or(false) && observed.warnings > 0 => {
                self.status.phase = Some(Phase::Failed);
                let msg = format!(
                    "DSS job {job_id} finished DONE with {} warning(s) and spec.failOnWarnings is true",
                    observed.warnings
                );
                self.status.failure = Some(status::failure("FailedWithWarnings", msg.clone()));
                self.event(EventType::Warning, reason::JOB_FAILED, "PollJob", msg);
                self.ctx.metrics.job_finished("failed", duration);
            }
            JobState::Done => {
                self.status.phase = Some(Phase::Succeeded);
                self.status.failure = None;
                let msg = format!(
                    "DSS job {job_id} finished DONE ({} warning(s))",
                    observed.warnings
                );
                self.event(EventType::Normal, reason::JOB_SUCCEEDED, "PollJob", msg);
                self.ctx.metrics.job_finished("done", duration);
            }
            JobState::Failed => {
                self.status.phase = Some(Phase::Failed);
                let (failure, note) = self.failure_details(conn, job_id, observed.failed_activity).await;
                self.status.failure = Some(failure);
                self.event(EventType::Warning, reason::JOB_FAILED, "PollJob", note);
                self.ctx.metrics.job_finished("failed", duration);
            }
            _ => {
                self.ctx.metrics.job_finished("aborted", duration);
                match abort_reason.as_deref() {
                    Some("DeadlineExceeded") => {
                        self.status.phase = Some(Phase::Failed);
                        let msg = format!("DSS job {job_id} was aborted because a deadline passed");
                        self.status.failure = Some(status::failure("DeadlineExceeded", msg.clone()));
                        self.event(EventType::Warning, reason::DEADLINE_EXCEEDED, "AbortJob", msg);
                    }
                    Some("SpecChanged") => {
                        // Superseded by a new run request, which starts next.
                        self.status.phase = Some(Phase::Pending);
                        self.status.failure = None;
                    }
                    _ => {
                        self.status.phase = Some(Phase::Aborted);
                        let msg = format!("DSS job {job_id} was aborted outside the operator");
                        self.status.failure = Some(status::failure("JobAborted", msg.clone()));
                        self.event(EventType::Warning, reason::JOB_ABORTED, "PollJob", msg);
                    }
                }
            }
        }
    }

    /// The failure record of a FAILED job: the failing activity and the tail of its log.
    async fn failure_details(
        &self,
        conn: &Resolved,
        job_id: &str,
        activity: Option<String>,
    ) -> (crate::crd::Failure, String) {
        let project = &self.build.spec.project_key;
        // The listing does not carry activities: ask for the full status when it is missing.
        let activity = match activity {
            Some(a) => Some(a),
            None => self
                .ctx
                .poller
                .status(conn, project, job_id)
                .await
                .ok()
                .and_then(|o| o.failed_activity),
        };
        let log = conn.client.get_log(project, job_id, activity.as_deref()).await;
        let log_tail = match log {
            Ok(text) => Some(log_tail(&text, self.ctx.settings.log_tail_lines)),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the DSS log of the failed job");
                None
            }
        };
        let last_line = log_tail
            .as_deref()
            .and_then(|t| t.lines().last())
            .unwrap_or("")
            .to_string();
        let message = match &activity {
            Some(a) => format!("DSS job {job_id} failed in activity {a}: {last_line}"),
            None => format!("DSS job {job_id} failed: {last_line}"),
        };
        let note = match &log_tail {
            Some(t) => format!("{message}\n{t}"),
            None => message.clone(),
        };
        (
            crate::crd::Failure {
                reason: "JobFailed".to_string(),
                message: Some(message),
                activity,
                log_tail,
            },
            note,
        )
    }

    /// Aborts the active job (deadline or spec change).
    async fn abort(&mut self, conn: &Resolved, why: AbortReason) -> Result<Action, Error> {
        let Some(job_id) = self.status.job_id.clone() else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        if let Err(e) = conn.client.abort(&self.build.spec.project_key, &job_id).await {
            return self.dss_trouble(conn, Error::dss("abort job")(e)).await;
        }
        self.status.abort_request = Some(AbortRequest {
            reason: why.as_str().to_string(),
            requested_at: Time(self.now),
        });
        let (reason, note) = match why {
            AbortReason::DeadlineExceeded => (
                reason::DEADLINE_EXCEEDED,
                format!("deadline passed: aborting DSS job {job_id}"),
            ),
            AbortReason::SpecChanged => (
                reason::SPEC_CHANGED,
                format!(
                    "a new run request arrived and spec.onSpecChange is Abort: aborting DSS job {job_id}"
                ),
            ),
        };
        self.event(EventType::Normal, reason, "AbortJob", note);
        Ok(Action::requeue(self.ctx.settings.plan.abort_poll))
    }

    fn uid(&self) -> String {
        self.build.uid().unwrap_or_default()
    }

    /// Decides with what this process knows of a recorded start request.
    fn decide(&self) -> Step {
        let sending = match (&self.status.start_request, &self.status.job_id) {
            (Some(request), None) => self.ctx.starts.sending_state(&self.uid(), request),
            _ => Sending::MaybeSent { since: self.now },
        };
        plan::next_step(
            &self.build.spec,
            &self.status,
            &self.want,
            sending,
            self.now,
            &self.ctx.settings.plan,
        )
    }

    /// A recorded start request waits for a place at the connection's start gate. The same status
    /// every time, so waiting writes nothing.
    fn mark_queued(&mut self) {
        self.status.phase = Some(Phase::Starting);
        self.block(
            "StartQueued",
            "the start request is recorded and waits for the DSS connection's request budget",
            false,
        );
    }

    /// Starts a job: records the start request, then sends it, then records the job id. Starts wait
    /// for the connection's budget a few at a time; the others record their start request now and
    /// send it when a place frees up (`Step::Send`), without holding a reconcile slot or a place in
    /// the budget's queue meanwhile.
    async fn start(
        &mut self,
        api: &Api<DatasetBuild>,
        conn: &Resolved,
        attempt: i32,
    ) -> Result<Action, Error> {
        let permit = conn.start_gate.clone().try_acquire_owned().ok();
        if let Some(action) = self.record_start(api, attempt, permit.is_none()).await? {
            return Ok(action);
        }
        match permit {
            Some(_permit) => self.post_start(conn, attempt).await,
            None => {
                if let Some(request) = &self.status.start_request {
                    self.ctx.starts.queued(&self.uid(), request);
                }
                Ok(Action::requeue(jitter(Duration::from_secs(1))))
            }
        }
    }

    /// Whether the recorded start request still stands on the object as the apiserver has it now (a
    /// quorum read): not deleted, not suspended, the same run request, the same record, no job.
    async fn still_stands(&self, api: &Api<DatasetBuild>) -> Result<bool, Error> {
        let latest = api
            .get(&self.build.name_any())
            .await
            .map_err(Error::kube("read build"))?;
        let rerun = latest.annotations().get(RERUN_ANNOTATION).map(String::as_str);
        let status = latest.status.as_ref();
        Ok(latest.meta().deletion_timestamp.is_none()
            && !latest.spec.suspend.unwrap_or(false)
            && definition::run_fingerprint(&latest.spec, rerun) == self.want
            && status.and_then(|s| s.job_id.as_ref()).is_none()
            && status.and_then(|s| s.start_request.as_ref()) == self.status.start_request.as_ref())
    }

    /// Records the start request with a resourceVersion precondition, so a stale copy of the object
    /// cannot start a second job; `queued` when it waits for its turn to be sent. `Some(action)` when
    /// it was not recorded (a newer copy exists).
    async fn record_start(
        &mut self,
        api: &Api<DatasetBuild>,
        attempt: i32,
        queued: bool,
    ) -> Result<Option<Action>, Error> {
        let new_request = self.status.fingerprint.as_deref() != Some(&self.want);
        status::push_history(&mut self.status);
        self.status.abort_request = None;
        self.status.attempts = Some(if new_request { 1 } else { attempt });
        self.status.fingerprint = Some(self.want.clone());
        self.status.last_handled_rerun_token = self.build.spec.rerun_token.clone();
        self.status.last_handled_rerun_annotation = self.build.annotations().get(RERUN_ANNOTATION).cloned();
        self.status.not_before = None;
        self.status.start_request = Some(StartRequest {
            definition_hash: Some(definition::definition_hash(&self.build.spec)),
            requested_at: Time(self.now),
            fingerprint: self.want.clone(),
            attempt: Some(attempt),
        });
        self.status.phase = Some(Phase::Starting);
        self.blocker = None;
        if queued {
            self.mark_queued();
        }
        status::summarize(
            &mut self.status,
            self.build.metadata.generation,
            self.blocker.as_ref(),
            self.now,
        );
        match write_status(api, self.build, &self.status, self.rv.as_deref()).await {
            Ok(rv) => self.rv = rv,
            Err(e) if e.is_conflict() => {
                // Someone else (or a newer copy of this object) moved first: look again.
                tracing::debug!("start request lost a resourceVersion race; requeueing");
                self.status = self.old.clone();
                return Ok(Some(Action::requeue(Duration::from_secs(1))));
            }
            Err(e) => {
                self.status = self.old.clone();
                return Err(e);
            }
        }
        // The recorded start request is now the old status for `finish`'s change detection.
        self.old = self.status.clone();
        Ok(None)
    }

    /// Sends the start request. It is never retried blindly: an unknown outcome goes to the search.
    async fn post_start(&mut self, conn: &Resolved, attempt: i32) -> Result<Action, Error> {
        let definition = definition::job_definition(&self.build.spec);
        let project = self.build.spec.project_key.clone();
        let uid = self.uid();
        let sent_at = status::now_seconds();
        if let Some(request) = &self.status.start_request {
            self.ctx.starts.sending(&uid, request, sent_at);
        }
        // The whole call, budget wait included, ends before the crash guard's grace period does, so
        // a resolver never searches while this request could still reach DSS.
        let deadline = self
            .ctx
            .settings
            .plan
            .start_grace
            .saturating_sub(Duration::from_secs(10));
        let sent = tokio::time::timeout(deadline, conn.client.start_job(&project, &definition)).await;
        let result = match sent {
            Ok(result) => result,
            Err(_) => Err(crate::dss::Error::Timeout {
                operation: crate::dss::Operation::StartJob,
            }),
        };
        match result {
            Ok(started) => {
                self.ctx.starts.forget(&uid);
                self.ctx.starts.claim(&started.id);
                self.started_job = true;
                self.ctx.metrics.job_started();
                self.status.job_id = Some(started.id.clone());
                // From here on the request's time is the job's age (polling pace, deadlines): the
                // time it was sent, not the time it was recorded while waiting for its turn.
                if let Some(request) = self.status.start_request.as_mut() {
                    request.requested_at = Time(sent_at);
                }
                // A job DSS just accepted has not started and has no warnings: recording that now
                // saves a status write at the first poll.
                self.status.state = Some(JobState::NotStarted.as_str().to_string());
                self.status.warnings_count = Some(0);
                self.status.phase = Some(Phase::Queued);
                let note = match attempt {
                    1 => format!("started DSS job {} in project {project}", started.id),
                    n => format!(
                        "started DSS job {} in project {project} (attempt {n})",
                        started.id
                    ),
                };
                self.event(EventType::Normal, reason::JOB_STARTED, "StartJob", note);
                Ok(Action::requeue(self.ctx.settings.plan.poll_min))
            }
            Err(e) if e.status() == Some(429) || e.is_unauthorized() => {
                // DSS refused before creating anything: starting again later is safe.
                self.ctx.starts.forget(&uid);
                self.status.start_request = None;
                self.status.phase = Some(Phase::Pending);
                let retry = e
                    .retry_after()
                    .unwrap_or(Duration::from_secs(15))
                    .max(Duration::from_secs(1));
                let until = self.now.as_millisecond() + i64::try_from(retry.as_millis()).unwrap_or(i64::MAX);
                self.status.not_before = Timestamp::from_millisecond(until)
                    .ok()
                    .map(|t| Time(status::whole_seconds(t)));
                if e.is_unauthorized() {
                    let _ = self.ctx.connections.refresh_key(conn, None).await;
                }
                self.block(e.category(), format!("DSS refused to start the job: {e}"), false);
                Ok(Action::requeue(retry))
            }
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s) && s != 408) => {
                // DSS rejected the definition: only a spec change can help.
                self.ctx.starts.forget(&uid);
                self.status.start_request = None;
                self.status.phase = Some(Phase::Failed);
                let msg = format!("DSS rejected the job definition: {e}");
                self.status.failure = Some(status::failure("StartRejected", msg.clone()));
                self.event(EventType::Warning, reason::START_REJECTED, "StartJob", msg);
                Ok(Action::await_change())
            }
            Err(e) => {
                // 5xx, timeout, reset: the job may or may not exist. Keep the start request; the crash
                // guard searches DSS once the grace period is over.
                tracing::warn!(error = %e, "start request outcome unknown; will search DSS for the job");
                self.status.phase = Some(Phase::Starting);
                self.block(
                    "StartPending",
                    format!("the start request's outcome is unknown ({e}); looking for the job in DSS"),
                    false,
                );
                Ok(Action::requeue(self.ctx.settings.plan.start_grace))
            }
        }
    }

    /// The crash guard: a start request without a job id. Adopt the one matching job, start again
    /// when there is none, stop and ask a human when there are several.
    async fn resolve_start(
        &mut self,
        api: &Api<DatasetBuild>,
        conn: &Resolved,
        since: Timestamp,
    ) -> Result<Action, Error> {
        let Some(request) = self.status.start_request.clone() else {
            return Ok(Action::requeue(Duration::ZERO));
        };
        let project = self.build.spec.project_key.clone();
        let adopt = self.build.annotations().get(ADOPT_ANNOTATION).cloned();
        // A start of the same definition by another build may be in flight: its job could be
        // listed before that build records it, and must not be taken for this one.
        let in_flight = self.ctx.settings.plan.start_grace;
        if self
            .ctx
            .starts
            .sending_alike(&self.uid(), request.definition_hash.as_deref(), in_flight)
        {
            return Ok(Action::requeue(jitter(Duration::from_secs(2))));
        }
        let candidates =
            match lost_start_candidates(self.ctx, conn, self.build, &self.status, &request, since).await {
                Ok(c) => c,
                Err(e) => return self.dss_trouble(conn, e).await,
            };
        match candidates.as_slice() {
            [job] => {
                if !self.ctx.starts.claim(&job.job_id) {
                    // Another build of this process took the job this instant: search again.
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                self.ctx.starts.forget(&self.uid());
                self.ctx.metrics.job_adopted();
                self.status.job_id = Some(job.job_id.clone());
                // The job's age counts from when DSS got the request, not from when it was recorded
                // (it may have waited for its turn first).
                let initiated = job
                    .definition
                    .as_ref()
                    .and_then(|d| status::time_from_chrono(d.initiation_timestamp));
                if let (Some(r), Some(t)) = (self.status.start_request.as_mut(), initiated)
                    && t.0 > r.requested_at.0
                {
                    r.requested_at = t;
                }
                // The next reconcile observes the job like any other, terminal or not.
                self.status.state = None;
                self.status.phase = Some(Phase::Queued);
                let note = format!(
                    "adopted DSS job {} whose start response was not recorded",
                    job.job_id
                );
                self.event(EventType::Normal, reason::JOB_ADOPTED, "AdoptJob", note);
                Ok(Action::requeue(Duration::ZERO))
            }
            [] if adopt.is_some() => {
                let msg = format!(
                    "annotation {ADOPT_ANNOTATION} names job {} but project {project} has no such job",
                    adopt.unwrap_or_default()
                );
                self.block("StartOutcomeUnknown", msg, true);
                Ok(Action::await_change())
            }
            [] if self.build.spec.suspend == Some(true) => {
                // No job exists and the user suspended the build meanwhile: start nothing.
                self.ctx.starts.forget(&self.uid());
                self.status.start_request = None;
                self.status.phase = Some(Phase::Suspended);
                Ok(Action::await_change())
            }
            [] => {
                // No job exists for the request: starting is safe. Record a fresh start request first
                // (with the precondition) so two resolvers cannot both start.
                let attempt = request.attempt.unwrap_or(1);
                self.status.start_request = None;
                self.start(api, conn, attempt).await
            }
            many => {
                let ids: Vec<&str> = many.iter().map(|j| j.job_id.as_str()).collect();
                if self
                    .old
                    .conditions
                    .iter()
                    .all(|c| c.reason != "StartOutcomeUnknown")
                {
                    self.ctx.metrics.start_outcome_unknown();
                    self.event(
                        EventType::Warning,
                        reason::START_OUTCOME_UNKNOWN,
                        "AdoptJob",
                        format!("several DSS jobs match the lost start: {}", ids.join(", ")),
                    );
                }
                let msg = format!(
                    "several DSS jobs match the start request whose response was lost ({}): set annotation \
                     {ADOPT_ANNOTATION}=<job id> to adopt one (and abort the others if needed)",
                    ids.join(", ")
                );
                self.block("StartOutcomeUnknown", msg, true);
                Ok(Action::await_change())
            }
        }
    }

    /// A DSS call failed: wait with a condition (no hot loop), refresh a refused key.
    async fn dss_trouble(&mut self, conn: &Resolved, err: Error) -> Result<Action, Error> {
        let (retry_after, unauthorized) = match &err {
            Error::Dss { source, .. } => (source.retry_after(), source.is_unauthorized()),
            _ => (None, false),
        };
        if unauthorized {
            match self.ctx.connections.refresh_key(conn, None).await {
                Ok(true) => return Ok(Action::requeue(Duration::from_millis(200))),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not re-read the API key"),
            }
        }
        let reason = err.category();
        self.block(reason, format!("waiting for DSS: {}", err.chain()), false);
        self.ctx.metrics.reconcile_error(reason);
        let backoff = self
            .ctx
            .backoff
            .next(self.build.uid().as_deref().unwrap_or_default());
        Ok(Action::requeue(retry_after.map_or(backoff, |r| r.max(backoff))))
    }

    /// Records the status (only when it changed) and publishes the events.
    async fn finish(
        mut self,
        api: &Api<DatasetBuild>,
        action: Result<Action, Error>,
    ) -> Result<Action, Error> {
        if self.blocker.is_none() {
            self.ctx
                .backoff
                .reset(self.build.uid().as_deref().unwrap_or_default());
        }
        if self.status.phase.is_none() {
            self.status.phase = Some(Phase::Pending);
        }
        status::summarize(
            &mut self.status,
            self.build.metadata.generation,
            self.blocker.as_ref(),
            self.now,
        );
        if self.status != self.old {
            match write_status(api, self.build, &self.status, self.rv.as_deref()).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() && self.started_job => {
                    // The object changed (an edit, a label) between recording the start request and
                    // recording the job id. The status is ours alone: write it again on the newest
                    // version rather than lose the id of a job that now exists.
                    let latest = api
                        .get_status(&self.build.name_any())
                        .await
                        .map_err(Error::kube("read build"))?;
                    // The request this reconcile sent is the one recorded before (`old`).
                    let same_request = latest.status.as_ref().and_then(|s| s.start_request.as_ref())
                        == self.old.start_request.as_ref();
                    if !same_request {
                        return Err(e);
                    }
                    write_status(
                        api,
                        self.build,
                        &self.status,
                        latest.resource_version().as_deref(),
                    )
                    .await?;
                }
                Err(e) if e.is_conflict() => {
                    // A newer copy exists: it is reconciled next; transitions are seen again there.
                    tracing::debug!("status write lost a resourceVersion race; requeueing");
                    return Ok(Action::requeue(Duration::from_millis(500)));
                }
                Err(e) => return Err(e),
            }
        }
        self.ctx
            .metrics
            .set_phase(self.build.uid().as_deref().unwrap_or_default(), self.status.phase);
        for (type_, reason, act, note) in self.events.drain(..) {
            events::publish(&self.ctx.recorder, self.build, type_, reason, act, note).await;
        }
        action
    }

    fn job_age(&self) -> Duration {
        let since = self
            .status
            .start_request
            .as_ref()
            .map(|r| r.requested_at.0)
            .unwrap_or(self.now);
        Duration::from_millis(
            u64::try_from((self.now.as_millisecond() - since.as_millisecond()).max(0)).unwrap_or(0),
        )
    }

    fn start_instant(&self) -> Instant {
        Instant::now()
            .checked_sub(self.job_age())
            .unwrap_or_else(Instant::now)
    }
}

/// The DSS jobs that may be the one a lost start request created: initiated at or after the request
/// (minus the tolerated clock skew) by this connection's key, building the requested definition, and
/// tracked by no build of this scope. With the `kube-dss.dev/adopt-job` annotation, the named job.
async fn lost_start_candidates(
    ctx: &Context,
    conn: &Resolved,
    build: &DatasetBuild,
    status: &DatasetBuildStatus,
    request: &StartRequest,
    since: Timestamp,
) -> Result<Vec<crate::dss::JobListItem>, Error> {
    let project = build.spec.project_key.clone();
    // Any listing taken once the grace after `since` is over shows the job if it exists; builds
    // resolving together (after a takeover) share one.
    let taken_after = since.checked_add(ctx.settings.plan.start_grace).unwrap_or(since);
    let jobs = ctx
        .poller
        .jobs_listed_after(&conn.key, &project, taken_after, || {
            conn.client.list_jobs(&project)
        })
        .await
        .map_err(Error::dss("list jobs"))?;
    let identity = ctx.connections.auth_identifier(conn).await?;
    let adopt = build.annotations().get(ADOPT_ANNOTATION).cloned();
    // Jobs this build or any other build already tracks are never candidates: two builds with the
    // same outputs must not adopt each other's jobs.
    let mut known: Vec<String> = status.history.iter().map(|h| h.job_id.clone()).collect();
    for other in ctx.builds.state() {
        if other.uid() == build.uid() {
            continue;
        }
        if let Some(s) = &other.status {
            known.extend(s.job_id.iter().cloned());
            known.extend(s.history.iter().map(|h| h.job_id.clone()));
        }
    }
    let wanted = request
        .definition_hash
        .clone()
        .unwrap_or_else(|| definition::definition_hash(&build.spec));
    let skew = i64::try_from(ctx.settings.clock_skew.as_millis()).unwrap_or(i64::MAX);
    let earliest = request.requested_at.0.as_millisecond().saturating_sub(skew);
    Ok(jobs
        .iter()
        .filter(|j| !known.contains(&j.job_id) && !ctx.starts.claimed(&j.job_id))
        .filter(|j| match &adopt {
            Some(id) => &j.job_id == id,
            None => j.definition.as_ref().is_some_and(|d| {
                d.initiation_timestamp
                    .is_some_and(|t| t.timestamp_millis() >= earliest)
                    && d.initiator.as_deref().is_some_and(|i| initiator_is(i, &identity))
                    && definition::dss_definition_hash(&d.raw, &project).as_ref() == Some(&wanted)
            }),
        })
        .cloned()
        .collect())
}

/// What deletion finds for a start request whose job id was never recorded.
enum LostStart {
    /// The starter may still record it: look again later.
    Wait(Duration),
    /// The one job the request created.
    Found(String),
    /// No single job can be named; the note says why.
    None(String),
}

async fn find_lost_start(
    build: &DatasetBuild,
    ctx: &Context,
    status: &DatasetBuildStatus,
    request: &StartRequest,
    sent_by: Timestamp,
) -> LostStart {
    let waited = plan::elapsed(sent_by, Timestamp::now());
    if let Some(left) = ctx.settings.plan.start_grace.checked_sub(waited)
        && !left.is_zero()
    {
        return LostStart::Wait(left);
    }
    let ns = build.namespace().unwrap_or_default();
    let found = match ctx
        .connections
        .resolve(&ns, build.spec.connection_ref.as_ref())
        .await
    {
        Ok(conn) => lost_start_candidates(ctx, &conn, build, status, request, sent_by).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(jobs) if jobs.len() == 1 => LostStart::Found(jobs[0].job_id.clone()),
        Ok(jobs) if jobs.is_empty() => {
            LostStart::None("released: the start request in flight created no DSS job".into())
        }
        Ok(jobs) => LostStart::None(format!(
            "released: several DSS jobs match the start request in flight ({}); check which to abort",
            jobs.iter()
                .map(|j| j.job_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => LostStart::None(format!(
            "released: could not look for the job of the start request in flight ({}); check DSS for a job to abort",
            e.chain()
        )),
    }
}

/// The deletion path: abort the job (Abort policy), confirm a terminal state, release the finalizer.
/// Bounded: past `finalizer_timeout` with DSS unreachable or credentials gone, it releases anyway.
async fn cleanup(build: &DatasetBuild, _api: &Api<DatasetBuild>, ctx: &Context) -> Result<Action, Error> {
    let status = build.status.clone().unwrap_or_default();
    let uid = build.uid().unwrap_or_default();
    let release = |note: String, type_: EventType| {
        let uid = uid.clone();
        async move {
            events::publish(
                &ctx.recorder,
                build,
                type_,
                reason::FINALIZER_RELEASED,
                "ReleaseFinalizer",
                note,
            )
            .await;
            ctx.metrics.set_phase(&uid, None);
            ctx.backoff.reset(&uid);
            ctx.starts.forget(&uid);
            Ok(Action::await_change())
        }
    };
    let job_id = match (status.job_id.clone(), &status.start_request) {
        (Some(id), _) => id,
        (None, None) => {
            // Never started a job: nothing to abort.
            ctx.metrics.set_phase(&uid, None);
            return Ok(Action::await_change());
        }
        (None, Some(_)) if build.spec.deletion_policy == Some(DeletionPolicy::Orphan) => {
            return release(
                "released; a job start was in flight (deletionPolicy: Orphan)".to_string(),
                EventType::Normal,
            )
            .await;
        }
        (None, Some(request)) => match ctx.starts.sending_state(&uid, request) {
            Sending::NotSent => {
                return release(
                    "released; the start request waiting for its turn was never sent".to_string(),
                    EventType::Normal,
                )
                .await;
            }
            Sending::MaybeSent { since } => {
                match find_lost_start(build, ctx, &status, request, since).await {
                    LostStart::Wait(after) => {
                        return Err(Error::AbortPending {
                            job_id: "(start in flight)".into(),
                            retry_after: after,
                        });
                    }
                    LostStart::Found(id) => id,
                    LostStart::None(note) => return release(note, EventType::Warning).await,
                }
            }
        },
    };
    if build.spec.deletion_policy == Some(DeletionPolicy::Orphan) {
        return release(
            format!("released; DSS job {job_id} left running (deletionPolicy: Orphan)"),
            EventType::Normal,
        )
        .await;
    }
    if plan::recorded_state(&status).is_some_and(|s| s.is_terminal()) {
        ctx.metrics.set_phase(&uid, None);
        return Ok(Action::await_change());
    }
    let deleting_since = build
        .meta()
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let overdue = Timestamp::now().as_millisecond() - deleting_since.as_millisecond()
        > i64::try_from(ctx.settings.finalizer_timeout.as_millis()).unwrap_or(i64::MAX);
    let ns = build.namespace().unwrap_or_default();
    let outcome: Result<bool, Error> = async {
        let conn = ctx
            .connections
            .resolve(&ns, build.spec.connection_ref.as_ref())
            .await?;
        let project = &build.spec.project_key;
        let observed = match ctx.poller.status(&conn, project, &job_id).await {
            Ok(o) => o,
            Err(e) if e.is_not_found() => return Ok(true),
            Err(e) => {
                if e.is_unauthorized() {
                    let _ = ctx.connections.refresh_key(&conn, None).await;
                }
                return Err(Error::dss("job status")(e));
            }
        };
        if observed.state.is_terminal() {
            return Ok(true);
        }
        conn.client
            .abort(project, &job_id)
            .await
            .map_err(Error::dss("abort job"))?;
        Ok(false)
    }
    .await;
    match outcome {
        Ok(true) => {
            release(
                format!("DSS job {job_id} is no longer running; finalizer released"),
                EventType::Normal,
            )
            .await
        }
        Ok(false) => {
            if status.abort_request.is_none() {
                events::publish(
                    &ctx.recorder,
                    build,
                    EventType::Normal,
                    reason::ABORT_REQUESTED,
                    "AbortJob",
                    format!("resource deleted: aborting DSS job {job_id}"),
                )
                .await;
                let mut s = status.clone();
                s.abort_request = Some(AbortRequest {
                    reason: "Deleted".into(),
                    requested_at: Time(Timestamp::now()),
                });
                // Best effort: recording the abort is informative only.
                let api: Api<DatasetBuild> = Api::namespaced(ctx.kube.clone(), &ns);
                let _ = write_status(&api, build, &s, build.resource_version().as_deref()).await;
            }
            if overdue {
                ctx.metrics.finalizer_forced("AbortUnconfirmed");
                return release(
                    format!(
                        "DSS did not confirm the abort of job {job_id} within the finalizer timeout; released"
                    ),
                    EventType::Warning,
                )
                .await;
            }
            Err(Error::AbortPending {
                job_id,
                retry_after: ctx.settings.plan.abort_poll,
            })
        }
        Err(e) if overdue => {
            let why = match &e {
                Error::Connection { .. } => "CredentialsUnavailable",
                _ => "DssUnreachable",
            };
            ctx.metrics.finalizer_forced(why);
            release(
                format!(
                    "could not abort DSS job {job_id} within the finalizer timeout ({}); released",
                    e.chain()
                ),
                EventType::Warning,
            )
            .await
        }
        Err(e) => Err(e),
    }
}

/// Writes the whole status by server-side apply and returns the new resourceVersion. With
/// `resource_version`, the write only succeeds if the object is unchanged since it was read (409
/// otherwise): every write of the reconciler uses it, so a replica or a reconcile working from a stale
/// copy can never roll the status back (and, say, erase a recorded job id, which would start a second
/// job).
async fn write_status(
    api: &Api<DatasetBuild>,
    build: &DatasetBuild,
    status: &DatasetBuildStatus,
    resource_version: Option<&str>,
) -> Result<Option<String>, Error> {
    let mut metadata = json!({ "name": build.name_any() });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    let patch = json!({
        "apiVersion": DatasetBuild::api_version(&()),
        "kind": DatasetBuild::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &build.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|written| written.resource_version())
    .map_err(Error::kube("write status"))
}

/// True when a DSS job's `initiator` is the identity of our key (DSS shows API keys as `API (<id>)`).
fn initiator_is(initiator: &str, identity: &str) -> bool {
    initiator == identity
        || initiator.strip_prefix("API (").and_then(|r| r.strip_suffix(')')) == Some(identity)
}

/// The last lines of a DSS log, bounded, with obvious secrets masked.
pub fn log_tail(log: &str, lines: usize) -> String {
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect();
    let text = tail.into_iter().rev().map(redact).collect::<Vec<_>>().join("\n");
    truncate(&text, 4096)
}

/// Masks values that look like credentials (DSS logs can carry job tickets and tokens).
fn redact(line: &str) -> String {
    const MARKERS: [&str; 6] = [
        "secret",
        "password",
        "apikey",
        "api_key",
        "token",
        "authorization",
    ];
    let lower = line.to_ascii_lowercase();
    // Mask from the earliest marker that is followed by a separator: everything after it goes.
    let cut = MARKERS
        .iter()
        .filter_map(|m| {
            let pos = lower.find(m)?;
            let sep = line[pos..].find([':', '='])?;
            Some(pos + sep)
        })
        .min();
    match cut {
        Some(at) => format!("{}***", &line[..=at]),
        None => line.to_string(),
    }
}

fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..1.1);
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines_and_masks_secrets() {
        let log = "a\nb\n\nc jobTicketSecret=abc123\nd\n";
        assert_eq!(log_tail(log, 2), "c jobTicketSecret=***\nd");
        assert_eq!(redact("x token=abc password=xyz"), "x token=***");
        assert_eq!(redact("password: a, token=b"), "password:***");
        assert_eq!(log_tail("x", 5), "x");
    }

    #[test]
    fn initiator_matches_api_key_identity() {
        assert!(initiator_is("API (kube-dss-operator)", "kube-dss-operator"));
        assert!(initiator_is("kube-dss-operator", "kube-dss-operator"));
        assert!(!initiator_is("API (someone-else)", "kube-dss-operator"));
    }
}
