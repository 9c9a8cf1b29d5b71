//! Starts: recording a start request before it is sent, what a failed send means ([`classify`], by
//! the DSS error's own classification), and what each outcome makes of the status (accepted, retry
//! later, rejected, outcome unknown).

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    Draft,
    fold::whole_seconds,
    model::{Controls, Current, Kind, Next, Past, Settings, Signal, StartOutcome, Wake},
    plan::later,
    vocabulary::{EventReason, WaitingReason},
};
use crate::{
    controller::error::Category,
    crd::{FailureReason, Refusal, StartRequest},
    dss,
};

/// Records a new start request for the wanted run request (the executor writes it, with the
/// resourceVersion precondition, before anything is sent). The current run goes to the history.
pub(crate) fn record<K: Kind>(
    c: &Controls,
    d: &mut Draft<K>,
    attempt: i32,
    now: Timestamp,
    settings: &Settings,
) {
    let s = &mut d.status;
    if let Some(current) = s.current.take() {
        s.history.insert(
            0,
            Past {
                handle: current.handle,
                state: current.state,
                start_time: current.start_time,
                completion_time: current.completion_time,
                details: current.details,
            },
        );
        s.history.truncate(settings.history_limit);
    }
    s.failure = None;
    s.abort_request = None;
    s.not_before = None;
    s.handled.rerun_token = c.rerun_token.clone();
    s.handled.rerun_annotation = c.rerun_annotation.clone();
    s.start_request = Some(StartRequest {
        requested_at: Time(now),
        fingerprint: c.want.clone(),
        attempt: Some(attempt),
        definition_hash: Some(c.definition_hash.clone()),
        refused: None,
    });
    d.blocker = None;
}

/// What a failed start means, by the error's own classification: refused before anything was
/// created (try again later), rejected (only a new run request helps), or unknown (the run may
/// exist: the crash guard finds out).
pub(crate) fn classify<H>(e: &dss::Error) -> StartOutcome<H> {
    let message = e.to_string();
    let refusal = if e.is_rate_limited() {
        Some(Refusal::RateLimited)
    } else if e.is_unauthorized() {
        Some(Refusal::Unauthorized)
    } else {
        None
    };
    if let Some(refusal) = refusal {
        return StartOutcome::RetryLater {
            refusal,
            after: e.retry_after().unwrap_or(REFUSED_RETRY),
            message,
            category: e.class(),
        };
    }
    if e.is_rejection() {
        StartOutcome::Rejected { message }
    } else {
        StartOutcome::Unknown { message }
    }
}

/// How long a refused start waits when DSS did not say.
const REFUSED_RETRY: Duration = Duration::from_secs(15);

/// What the answer to a start request makes of the status, and the next step.
pub(crate) fn sent<K: Kind>(
    d: &mut Draft<K>,
    outcome: StartOutcome<K::Handle>,
    sent_at: Timestamp,
    now: Timestamp,
    settings: &Settings,
) -> Next {
    match outcome {
        StartOutcome::Accepted(handle) => {
            let name = K::describe(&handle);
            // From here on the request's time is the run's age (polling pace, deadlines): the time it
            // was sent, not the time it was recorded while waiting for its turn.
            let attempt = d.status.start_request.as_mut().map_or(1, |r| {
                r.requested_at = Time(whole_seconds(sent_at));
                r.attempt.unwrap_or(1)
            });
            // A run DSS just accepted has not started and has no warnings: recording that now saves
            // a status write at the first observation.
            d.status.current = Some(Current {
                handle,
                state: Some(K::accepted_state()),
                start_time: None,
                completion_time: None,
                warnings: Some(0),
                details: K::Details::default(),
            });
            let note = match attempt {
                1 => format!("started {name}"),
                n => format!("started {name} (attempt {n})"),
            };
            d.normal(K::WORDS.started, K::WORDS.start, note);
            d.signal(Signal::Started);
            Next::Wait(Wake::After(settings.poll_min))
        }
        StartOutcome::RetryLater {
            refusal,
            after,
            message,
            category,
        } => {
            // DSS refused before creating anything: starting again later is safe.
            let after = after.max(Duration::from_secs(1));
            if let Some(r) = d.status.start_request.as_mut() {
                r.refused = Some(refusal);
            }
            d.status.not_before = Some(Time(whole_seconds(later(now, after))));
            d.block(
                WaitingReason::Trouble(Category::Dss(category)),
                format!("DSS refused to start the run: {message}"),
                false,
            );
            Next::Wait(Wake::After(after))
        }
        StartOutcome::Rejected { message } => {
            // DSS rejected the definition: only a new run request can help.
            if let Some(r) = d.status.start_request.as_mut() {
                r.refused = Some(Refusal::Rejected);
            }
            let msg = format!("DSS rejected {}: {message}", K::WORDS.request);
            d.fail(FailureReason::StartRejected, &msg);
            d.warn(EventReason::StartRejected, K::WORDS.start, msg);
            Next::Wait(Wake::OnChange)
        }
        StartOutcome::Unknown { message } => {
            // 5xx, timeout, reset: the run may or may not exist. Keep the start request; the crash
            // guard searches DSS once the grace period is over.
            d.block(
                WaitingReason::StartPending,
                format!("the start request's outcome is unknown ({message}); looking for the run in DSS"),
                false,
            );
            Next::Wait(Wake::After(settings.start_grace))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{
        contract,
        plan::{self, Step},
        start,
        testing::*,
        *,
    };
    use crate::{
        crd::{Phase, Refusal},
        dss::{self, Operation},
    };

    fn sent(outcome: StartOutcome<String>) -> Decision<TestKind> {
        let (c, settings) = (controls(), Settings::default());
        let fact = Fact::Started {
            outcome,
            sent_at: ts(2),
        };
        decide(&input(&c, &settings, 3), started(WANT, 0, None, None), fact)
    }

    fn rate_limited(after: u64) -> StartOutcome<String> {
        StartOutcome::RetryLater {
            refusal: Refusal::RateLimited,
            after: Duration::from_secs(after),
            message: "429".into(),
            category: dss::Category::RateLimited,
        }
    }

    #[test]
    fn start_outcomes() {
        let (c, settings) = (controls(), Settings::default());
        type Case<'a> = (&'a str, StartOutcome<String>, Phase, Next, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "accepted",
                StartOutcome::Accepted("j1".into()),
                Phase::Queued,
                Next::Wait(Wake::After(settings.poll_min)),
                None,
            ),
            (
                "rate limited: same attempt after notBefore",
                rate_limited(15),
                Phase::Pending,
                Next::Wait(Wake::After(Duration::from_secs(15))),
                Some("DssRateLimited"),
            ),
            (
                "rejected: not sent again",
                StartOutcome::Rejected {
                    message: "unknown dataset".into(),
                },
                Phase::Failed,
                Next::Wait(Wake::OnChange),
                None,
            ),
            (
                "unknown: the crash guard finds out",
                StartOutcome::Unknown {
                    message: "502".into(),
                },
                Phase::Starting,
                Next::Wait(Wake::After(settings.start_grace)),
                Some("StartPending"),
            ),
        ];
        for (name, outcome, phase, next, blocker) in cases {
            let d = sent(outcome);
            assert_eq!(contract::phase(&c, &d.status), phase, "{name}: phase");
            assert_eq!(d.next, next, "{name}: next");
            assert_eq!(
                d.blocker.as_ref().map(|b| b.reason.as_str()),
                blocker,
                "{name}: blocker"
            );
        }
    }

    #[test]
    fn an_accepted_start_counts_its_age_from_when_it_was_sent() {
        let d = sent(StartOutcome::Accepted("j1".into()));
        assert_eq!(
            d.status.start_request.as_ref().map(|r| r.requested_at.0),
            Some(ts(2))
        );
        assert_eq!(reasons(&d), vec![(false, "JobStarted")]);
    }

    #[test]
    fn a_refused_start_is_sent_again_as_the_same_attempt_after_not_before() {
        let refused = sent(rate_limited(10));
        assert_eq!(
            plan::in_flight(&refused.status),
            None,
            "a refused request is not in flight"
        );
        assert_eq!(
            step(&controls(), &refused.status, unknown_sending(), 14),
            Step::Start { attempt: 1 }
        );
    }

    /// What a failed start should mean.
    #[derive(Debug, PartialEq)]
    enum Means {
        /// Refused before anything was created: the same attempt after this many seconds.
        Retry(Refusal, u64, dss::Category),
        /// Only a new run request helps.
        Rejected,
        /// The run may exist.
        Unknown,
    }

    /// An error status; with `error_type`, DSS's own JSON error.
    fn api(status: u16, error_type: Option<&str>, message: &str, retry_after: Option<u64>) -> dss::Error {
        dss::Error::Api {
            operation: Operation::StartJob,
            status,
            error_type: error_type.map(String::from),
            message: Some(message.to_string()).filter(|_| error_type.is_some()),
            detailed_message: None,
            body_excerpt: if error_type.is_some() {
                String::new()
            } else {
                message.to_string()
            },
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    const UNAUTHORIZED: Option<&str> = Some("com.dataiku.dip.exceptions.UnauthorizedException");
    const BAD_REQUEST: Option<&str> = Some("java.lang.IllegalArgumentException");
    const NOT_FOUND: Option<&str> = Some("com.dataiku.dip.server.controllers.NotFoundException");
    const SERVER: Option<&str> = Some("java.lang.IllegalStateException");

    fn check(cases: Vec<(&str, dss::Error, Means)>) {
        for (name, error, means) in cases {
            let got = match start::classify::<String>(&error) {
                StartOutcome::RetryLater {
                    refusal,
                    after,
                    message,
                    category,
                } => {
                    assert_eq!(message, error.to_string(), "{name}: message");
                    Means::Retry(refusal, after.as_secs(), category)
                }
                StartOutcome::Rejected { .. } => Means::Rejected,
                StartOutcome::Unknown { .. } => Means::Unknown,
                StartOutcome::Accepted(_) => panic!("{name}: a failed start is never accepted"),
            };
            assert_eq!(got, means, "{name}");
        }
    }

    #[test]
    fn a_start_refused_before_anything_was_created_is_sent_again_later() {
        use dss::Category as C;
        check(vec![
            (
                "DSS's 429 waits as long as DSS asks",
                api(429, SERVER, "slow down", Some(20)),
                Means::Retry(Refusal::RateLimited, 20, C::RateLimited),
            ),
            (
                "a gateway's 429 page is rate limiting too",
                api(429, None, "<html>Too Many Requests</html>", None),
                Means::Retry(Refusal::RateLimited, 15, C::RateLimited),
            ),
            (
                "the connection's own budget refused to wait",
                dss::Error::Throttled {
                    operation: Operation::StartJob,
                    retry_after: Duration::from_secs(3),
                },
                Means::Retry(Refusal::RateLimited, 3, C::Throttled),
            ),
            (
                "DSS refusing the key waits for a new one",
                api(401, UNAUTHORIZED, "invalid key", None),
                Means::Retry(Refusal::Unauthorized, 15, C::Unauthorized),
            ),
            (
                "DSS refusing the key's privileges too",
                api(403, UNAUTHORIZED, "no RUN_JOBS", None),
                Means::Retry(Refusal::Unauthorized, 15, C::Unauthorized),
            ),
        ]);
    }

    #[test]
    fn a_start_is_rejected_only_on_dss_own_word_and_otherwise_unknown() {
        // A request that never left the client: building it failed.
        let unsent = reqwest::Client::new().get("not a url").build().unwrap_err();
        let op = Operation::StartJob;
        check(vec![
            (
                "DSS rejecting the definition",
                api(400, BAD_REQUEST, "unknown dataset", None),
                Means::Rejected,
            ),
            (
                "DSS saying the project does not exist",
                api(404, NOT_FOUND, "Project P does not exist", None),
                Means::Rejected,
            ),
            (
                "an argument refused before anything was sent",
                dss::Error::InvalidArgument {
                    operation: op,
                    detail: "no outputs".into(),
                },
                Means::Rejected,
            ),
            (
                "a proxy's 401 page says nothing of the run",
                api(401, None, "<html>Sign in</html>", None),
                Means::Unknown,
            ),
            ("DSS's own 500", api(500, SERVER, "boom", None), Means::Unknown),
            (
                "a gateway's 502 page",
                api(502, None, "<html>Bad Gateway</html>", None),
                Means::Unknown,
            ),
            ("a timeout", dss::Error::Timeout { operation: op }, Means::Unknown),
            (
                "a transport failure",
                dss::Error::Transport {
                    operation: op,
                    source: unsent,
                },
                Means::Unknown,
            ),
        ]);
    }
}
