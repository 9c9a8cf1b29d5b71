//! The decision function of the DatasetBuild controller: from the spec, the status (with the latest
//! DSS observation already folded in) and `now`, what to do next. Pure: no client, no clock.
//!
//! The desired state is "this definition, at this rerunToken, has been built once" (design.md 3):
//! one job per run request, retries only as `spec.retry` allows, a new request handled per
//! `onSpecChange`, deadlines enforced on the active job.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::{
    crd::{DatasetBuildSpec, DatasetBuildStatus, OnSpecChange, Phase},
    dss::JobState,
};

/// Why the operator aborts a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// `activeDeadlineSeconds` or `startDeadlineSeconds` passed.
    DeadlineExceeded,
    /// A new run request arrived with `onSpecChange: Abort`.
    SpecChanged,
}

impl AbortReason {
    /// The PascalCase reason recorded in status and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::SpecChanged => "SpecChanged",
        }
    }
}

/// What the reconciler knows about a recorded start request that has no job id yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sending {
    /// This process recorded it and has not sent it: no job can exist for it.
    NotSent,
    /// It may have been sent, at the latest at `since` (the crash guard's grace runs from there).
    MaybeSent {
        /// The latest moment the request may have been sent.
        since: Timestamp,
    },
}

/// The next thing to do for a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A start request is recorded without a job id and its starter had time to record it: search DSS
    /// for the job (crash guard).
    ResolveStart {
        /// The latest moment the request may have been sent: the search needs a listing taken at
        /// least the grace after it.
        since: Timestamp,
    },
    /// The start request this process recorded and has not sent yet still stands: send it.
    Send {
        /// The attempt it records.
        attempt: i32,
    },
    /// The start request this process recorded and has not sent yet no longer stands (the run
    /// request changed, or the build was suspended): drop it and decide again.
    Withdraw,
    /// A start request is recent: its starter may still record the job id. Look again later.
    WaitForStarter {
        /// When to look again.
        after: Duration,
    },
    /// Start a job for the wanted run request.
    Start {
        /// 1 for a new run request, more for retries.
        attempt: i32,
    },
    /// Abort the active job.
    Abort {
        /// Why.
        reason: AbortReason,
    },
    /// The job is active: poll it again later.
    Poll {
        /// When.
        after: Duration,
    },
    /// The last job failed; a retry is due later.
    RetryLater {
        /// When.
        after: Duration,
    },
    /// No job is active and `suspend` forbids starting one.
    Suspend,
    /// The desired state is reached: nothing to do until the spec changes.
    Done,
}

/// Tunables of the decision.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a start request may stay without a job id before DSS is searched for the job. Longer
    /// than the start call's timeout, so a live starter always records its job id first.
    pub start_grace: Duration,
    /// Fastest poll of an active job.
    pub poll_min: Duration,
    /// Slowest poll of an active job.
    pub poll_max: Duration,
    /// Poll of a job the operator asked to abort.
    pub abort_poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            start_grace: Duration::from_secs(40),
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(8),
            abort_poll: Duration::from_secs(2),
        }
    }
}

/// Parses the DSS state recorded in status.
pub fn recorded_state(status: &DatasetBuildStatus) -> Option<JobState> {
    status.state.as_deref().map(JobState::from_dss)
}

/// True when the status has a job that has not reached a terminal state.
pub fn has_active_job(status: &DatasetBuildStatus) -> bool {
    // A finished phase settles the job even when DSS never reported a terminal state for it (for
    // example a job DSS no longer knows).
    let settled = matches!(
        status.phase,
        Some(Phase::Succeeded | Phase::Failed | Phase::Aborted)
    );
    status.job_id.is_some() && !settled && !recorded_state(status).is_some_and(|s| s.is_terminal())
}

/// Time from `since` to `now`, zero when `now` is earlier.
pub fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    let ms = now.as_millisecond().saturating_sub(since.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Poll interval for a job of a given age: fast at first (short jobs end soon), backing off to
/// `poll_max` (a tenth of the age, bounded).
pub fn poll_interval(age: Duration, settings: &Settings) -> Duration {
    (age / 8).clamp(settings.poll_min, settings.poll_max)
}

/// Decides the next step. `sending` says what is known of a recorded start request without a job id
/// (ignored otherwise).
pub fn next_step(
    spec: &DatasetBuildSpec,
    status: &DatasetBuildStatus,
    want: &str,
    sending: Sending,
    now: Timestamp,
    settings: &Settings,
) -> Step {
    let suspended = spec.suspend.unwrap_or(false);
    // Crash guard: a start was requested but its job id was never recorded.
    if let (Some(request), None) = (&status.start_request, &status.job_id) {
        let since = match sending {
            Sending::NotSent if request.fingerprint == want && !suspended => {
                return Step::Send {
                    attempt: request.attempt.unwrap_or(1),
                };
            }
            Sending::NotSent => return Step::Withdraw,
            Sending::MaybeSent { since } => since.max(request.requested_at.0),
        };
        let waited = elapsed(since, now);
        return if waited >= settings.start_grace {
            Step::ResolveStart { since }
        } else {
            Step::WaitForStarter {
                after: settings.start_grace - waited,
            }
        };
    }

    if has_active_job(status) {
        if status.abort_request.is_some() {
            return Step::Poll {
                after: settings.abort_poll,
            };
        }
        let started = status.start_request.as_ref().map(|r| r.requested_at.0);
        let age = started.map(|t| elapsed(t, now)).unwrap_or_default();
        let mut next = poll_interval(age, settings);
        if started.is_some() {
            if let Some(limit) = spec.active_deadline_seconds.and_then(secs) {
                if age >= limit {
                    return Step::Abort {
                        reason: AbortReason::DeadlineExceeded,
                    };
                }
                next = next.min(limit - age);
            }
            let queued = matches!(recorded_state(status), None | Some(JobState::NotStarted));
            if let (true, Some(limit)) = (queued, spec.start_deadline_seconds.and_then(secs)) {
                if age >= limit {
                    return Step::Abort {
                        reason: AbortReason::DeadlineExceeded,
                    };
                }
                next = next.min(limit - age);
            }
        }
        if status.fingerprint.as_deref() != Some(want) && spec.on_spec_change == Some(OnSpecChange::Abort) {
            return Step::Abort {
                reason: AbortReason::SpecChanged,
            };
        }
        return Step::Poll {
            after: next.max(Duration::from_millis(100)),
        };
    }

    // DSS refused this very request's definition: only a new request (spec or token) helps.
    if status.fingerprint.as_deref() == Some(want)
        && status.job_id.is_none()
        && status
            .failure
            .as_ref()
            .is_some_and(|f| f.reason == "StartRejected")
    {
        return Step::Done;
    }
    // DSS asked us to wait (rate limit) or refused the key: no start before `notBefore`.
    if let Some(not_before) = &status.not_before
        && not_before.0 > now
    {
        return Step::RetryLater {
            after: elapsed(now, not_before.0),
        };
    }
    let same_request = status.fingerprint.as_deref() == Some(want) && status.job_id.is_some();
    if !same_request {
        // A start DSS refused before creating a job (429, a refused key) is tried again as the same
        // attempt, so refusals never grant extra retries.
        let attempt = if status.fingerprint.as_deref() == Some(want) {
            status.attempts.unwrap_or(1)
        } else {
            1
        };
        return if suspended {
            Step::Suspend
        } else {
            Step::Start { attempt }
        };
    }

    // The current run request has a terminal job: retry a FAILED one if allowed.
    let failed = recorded_state(status) == Some(JobState::Failed);
    let attempts = status.attempts.unwrap_or(1);
    let retry = spec.retry.clone().unwrap_or_default();
    let limit = retry.limit.unwrap_or(0);
    if failed && attempts <= limit {
        let backoff = Duration::from_secs(u64::try_from(retry.backoff_seconds.unwrap_or(60)).unwrap_or(0));
        let ended = status.completion_time.as_ref().map(|t| t.0).unwrap_or(now);
        let waited = elapsed(ended, now);
        if waited < backoff {
            return Step::RetryLater {
                after: backoff - waited,
            };
        }
        return if suspended {
            Step::Suspend
        } else {
            Step::Start {
                attempt: attempts + 1,
            }
        };
    }
    Step::Done
}

fn secs(s: i64) -> Option<Duration> {
    u64::try_from(s).ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::crd::{AbortRequest, RetryPolicy, StartRequest};

    const WANT: &str = "fp-want";

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn spec() -> DatasetBuildSpec {
        serde_json::from_value(json!({"projectKey": "P", "outputs": [{"id": "d"}]})).unwrap()
    }

    fn started(fp: &str, at: i64, job: Option<&str>, state: Option<&str>) -> DatasetBuildStatus {
        DatasetBuildStatus {
            fingerprint: Some(fp.into()),
            start_request: Some(StartRequest {
                requested_at: Time(ts(at)),
                fingerprint: fp.into(),
                attempt: Some(1),
                definition_hash: None,
            }),
            job_id: job.map(Into::into),
            state: state.map(Into::into),
            attempts: Some(1),
            ..Default::default()
        }
    }

    /// Decides for a start request (if any) this process knows nothing about, and that it began to
    /// act before.
    fn decide(spec: &DatasetBuildSpec, status: &DatasetBuildStatus, now: i64) -> Step {
        decide_sending(spec, status, Sending::MaybeSent { since: ts(-1000) }, now)
    }

    fn decide_sending(
        spec: &DatasetBuildSpec,
        status: &DatasetBuildStatus,
        sending: Sending,
        now: i64,
    ) -> Step {
        next_step(spec, status, WANT, sending, ts(now), &Settings::default())
    }

    #[test]
    fn table() {
        let s = Settings::default();
        let base = spec();
        let suspended = DatasetBuildSpec {
            suspend: Some(true),
            ..spec()
        };
        let abort_on_change = DatasetBuildSpec {
            on_spec_change: Some(OnSpecChange::Abort),
            ..spec()
        };
        let deadline = DatasetBuildSpec {
            active_deadline_seconds: Some(100),
            ..spec()
        };
        let start_deadline = DatasetBuildSpec {
            start_deadline_seconds: Some(30),
            ..spec()
        };
        let retrying = DatasetBuildSpec {
            retry: Some(RetryPolicy {
                limit: Some(2),
                backoff_seconds: Some(60),
            }),
            ..spec()
        };
        let mut failed_at_0 = started(WANT, 0, Some("j1"), Some("FAILED"));
        failed_at_0.completion_time = Some(Time(ts(10)));
        let mut aborting = started(WANT, 0, Some("j1"), Some("RUNNING"));
        aborting.abort_request = Some(AbortRequest {
            reason: "DeadlineExceeded".into(),
            requested_at: Time(ts(5)),
        });
        let rejected = DatasetBuildStatus {
            fingerprint: Some(WANT.into()),
            phase: Some(Phase::Failed),
            failure: Some(crate::crd::Failure {
                reason: "StartRejected".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rejected_old = DatasetBuildStatus {
            fingerprint: Some("old".into()),
            ..rejected.clone()
        };
        let deferred = DatasetBuildStatus {
            fingerprint: Some(WANT.into()),
            not_before: Some(Time(ts(30))),
            ..Default::default()
        };
        let refused_retry = DatasetBuildStatus {
            attempts: Some(2),
            ..deferred.clone()
        };
        let mut lost = started(WANT, 0, Some("j1"), Some("UNKNOWN"));
        lost.phase = Some(Phase::Failed);
        let mut third_attempt_failed = failed_at_0.clone();
        third_attempt_failed.attempts = Some(3);

        let cases: Vec<(&str, &DatasetBuildSpec, DatasetBuildStatus, i64, Step)> = vec![
            (
                "new build starts a job",
                &base,
                DatasetBuildStatus::default(),
                0,
                Step::Start { attempt: 1 },
            ),
            (
                "new build while suspended starts nothing",
                &suspended,
                DatasetBuildStatus::default(),
                0,
                Step::Suspend,
            ),
            (
                "recent start request without job waits for its starter",
                &base,
                started(WANT, 0, None, None),
                10,
                Step::WaitForStarter {
                    after: s.start_grace - Duration::from_secs(10),
                },
            ),
            (
                "old start request without job searches DSS",
                &base,
                started(WANT, 0, None, None),
                41,
                Step::ResolveStart { since: ts(0) },
            ),
            (
                "young running job is polled fast",
                &base,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                2,
                Step::Poll { after: s.poll_min },
            ),
            (
                "old running job is polled slowly",
                &base,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                3600,
                Step::Poll { after: s.poll_max },
            ),
            (
                "job with unknown state counts as active",
                &base,
                started(WANT, 0, Some("j1"), Some("COMPUTING")),
                2,
                Step::Poll { after: s.poll_min },
            ),
            (
                "done job of the wanted request is done",
                &base,
                started(WANT, 0, Some("j1"), Some("DONE")),
                50,
                Step::Done,
            ),
            (
                "aborted job of the wanted request is done",
                &base,
                started(WANT, 0, Some("j1"), Some("ABORTED")),
                50,
                Step::Done,
            ),
            (
                "failed job without retries is done",
                &base,
                failed_at_0.clone(),
                500,
                Step::Done,
            ),
            (
                "failed job retries after the backoff",
                &retrying,
                failed_at_0.clone(),
                70,
                Step::Start { attempt: 2 },
            ),
            (
                "failed job waits for the backoff",
                &retrying,
                failed_at_0.clone(),
                40,
                Step::RetryLater {
                    after: Duration::from_secs(30),
                },
            ),
            (
                "retries stop at the limit",
                &retrying,
                third_attempt_failed,
                500,
                Step::Done,
            ),
            (
                "new rerun token after a done job starts one job",
                &base,
                started("old", 0, Some("j1"), Some("DONE")),
                50,
                Step::Start { attempt: 1 },
            ),
            (
                "new request while suspended starts nothing",
                &suspended,
                started("old", 0, Some("j1"), Some("DONE")),
                50,
                Step::Suspend,
            ),
            (
                "spec change under Wait lets the job run",
                &base,
                started("old", 0, Some("j1"), Some("RUNNING")),
                2,
                Step::Poll { after: s.poll_min },
            ),
            (
                "spec change under Abort aborts the job",
                &abort_on_change,
                started("old", 0, Some("j1"), Some("RUNNING")),
                2,
                Step::Abort {
                    reason: AbortReason::SpecChanged,
                },
            ),
            (
                "suspend does not stop an active job",
                &suspended,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                2,
                Step::Poll { after: s.poll_min },
            ),
            (
                "active deadline aborts",
                &deadline,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                100,
                Step::Abort {
                    reason: AbortReason::DeadlineExceeded,
                },
            ),
            (
                "poll wakes up at the active deadline",
                &deadline,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                99,
                Step::Poll {
                    after: Duration::from_secs(1),
                },
            ),
            (
                "start deadline aborts a queued job",
                &start_deadline,
                started(WANT, 0, Some("j1"), Some("NOT_STARTED")),
                31,
                Step::Abort {
                    reason: AbortReason::DeadlineExceeded,
                },
            ),
            (
                "start deadline spares a running job",
                &start_deadline,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                31,
                Step::Poll {
                    after: Duration::from_millis(3875),
                },
            ),
            (
                "abort in progress is polled",
                &base,
                aborting,
                10,
                Step::Poll { after: s.abort_poll },
            ),
            (
                "a rejected definition is not started again",
                &base,
                rejected.clone(),
                50,
                Step::Done,
            ),
            (
                "a rejected definition with a new token starts",
                &base,
                rejected_old,
                50,
                Step::Start { attempt: 1 },
            ),
            (
                "a refused start waits for notBefore",
                &base,
                deferred.clone(),
                10,
                Step::RetryLater {
                    after: Duration::from_secs(20),
                },
            ),
            (
                "a refused start is retried after notBefore",
                &base,
                deferred,
                31,
                Step::Start { attempt: 1 },
            ),
            (
                "a job DSS no longer knows is settled",
                &base,
                lost,
                50,
                Step::Done,
            ),
            (
                "a refused retry keeps its attempt number",
                &retrying,
                refused_retry,
                31,
                Step::Start { attempt: 2 },
            ),
        ];
        for (name, spec, status, now, expected) in cases {
            assert_eq!(decide(spec, &status, now), expected, "{name}");
        }
    }

    #[test]
    fn start_requests_this_process_has_not_sent() {
        let s = Settings::default();
        let base = spec();
        let suspended = DatasetBuildSpec {
            suspend: Some(true),
            ..spec()
        };
        let recorded = started(WANT, 0, None, None);
        let mut retry = started(WANT, 0, None, None);
        if let Some(r) = retry.start_request.as_mut() {
            r.attempt = Some(2);
        }
        let cases: Vec<(&str, &DatasetBuildSpec, DatasetBuildStatus, Sending, i64, Step)> = vec![
            (
                "a queued start is sent however long it waited",
                &base,
                recorded.clone(),
                Sending::NotSent,
                300,
                Step::Send { attempt: 1 },
            ),
            (
                "a queued retry keeps its attempt",
                &base,
                retry,
                Sending::NotSent,
                5,
                Step::Send { attempt: 2 },
            ),
            (
                "a queued start of an older run request is withdrawn",
                &base,
                started("old", 0, None, None),
                Sending::NotSent,
                5,
                Step::Withdraw,
            ),
            (
                "a queued start of a suspended build is withdrawn",
                &suspended,
                recorded.clone(),
                Sending::NotSent,
                5,
                Step::Withdraw,
            ),
            (
                "the grace runs from when the request was sent",
                &base,
                recorded.clone(),
                Sending::MaybeSent { since: ts(100) },
                110,
                Step::WaitForStarter {
                    after: s.start_grace - Duration::from_secs(10),
                },
            ),
            (
                "and from when this process began to act",
                &base,
                recorded.clone(),
                Sending::MaybeSent { since: ts(30) },
                41,
                Step::WaitForStarter {
                    after: s.start_grace - Duration::from_secs(11),
                },
            ),
            (
                "a request sent long ago is searched for",
                &base,
                recorded,
                Sending::MaybeSent { since: ts(100) },
                140,
                Step::ResolveStart { since: ts(100) },
            ),
            (
                "a recorded job id makes the sending state irrelevant",
                &base,
                started(WANT, 0, Some("j1"), Some("RUNNING")),
                Sending::NotSent,
                2,
                Step::Poll { after: s.poll_min },
            ),
        ];
        for (name, spec, status, sending, now, expected) in cases {
            assert_eq!(decide_sending(spec, &status, sending, now), expected, "{name}");
        }
    }

    #[test]
    fn poll_interval_grows_with_age_within_bounds() {
        let s = Settings::default();
        assert_eq!(poll_interval(Duration::ZERO, &s), s.poll_min);
        assert_eq!(poll_interval(Duration::from_secs(40), &s), Duration::from_secs(5));
        assert_eq!(poll_interval(Duration::from_secs(4000), &s), s.poll_max);
    }
}
