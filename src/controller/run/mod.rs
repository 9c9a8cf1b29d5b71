//! The run core: every decision of run control, with no client, no clock and no IO, generic over the
//! kind of run (a DSS job for a `DatasetBuild`; the kind supplies its types and words through
//! [`Kind`]).
//!
//! One reconcile goes observe -> decide -> act -> record. The executor (`controller::execute`)
//! observes the run and performs the actions; between two of them it hands what it learned (a
//! [`Fact`]) to [`decide`], which returns the whole next status, the events and the next step:
//!
//! 1. the fact is folded into the status ([`fold`]: observations and outcomes; [`start`]: start
//!    outcomes; [`guard`]: the crash guard's search; aborts below);
//! 2. the planner ([`plan`]) picks the next step from the spec's controls and the status;
//! 3. the step becomes a status change and a [`Next`] for the executor.
//!
//! Deletion has its own match in [`cleanup`]; [`contract`] derives the phase and the conditions when
//! a status is written.

pub(crate) mod cleanup;
pub(crate) mod contract;
pub(crate) mod fold;
pub(crate) mod guard;
pub(crate) mod model;
pub(crate) mod plan;
pub(crate) mod start;
pub(crate) mod vocabulary;

#[cfg(test)]
pub(crate) mod testing;

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

pub(crate) use model::*;
use plan::Step;
use vocabulary::{EventAction, EventReason, WaitingReason};

use crate::{
    controller::error::Category,
    crd::{AbortReason, AbortRequest, Failure, FailureReason},
    dss,
};

/// A decision in the making: the status being changed, and what the decision says besides.
#[derive(Clone, Debug)]
pub(crate) struct Draft<K: Kind> {
    /// The status being changed.
    pub(crate) status: RunStatus<K>,
    /// What keeps the run waiting.
    pub(crate) blocker: Option<Blocker>,
    /// Events to publish.
    pub(crate) events: Vec<Event>,
    /// What to count.
    pub(crate) signals: Vec<Signal>,
}

impl<K: Kind> Draft<K> {
    fn new(status: RunStatus<K>) -> Self {
        Self {
            status,
            blocker: None,
            events: Vec::new(),
            signals: Vec::new(),
        }
    }

    pub(crate) fn block(&mut self, reason: WaitingReason, message: String, stalled: bool) {
        self.blocker = Some(Blocker {
            reason,
            message,
            stalled,
        });
    }

    pub(crate) fn fail(&mut self, reason: FailureReason, message: &str) {
        self.status.failure = Some(Failure {
            reason,
            message: Some(message.to_string()),
            activity: None,
            log_tail: None,
        });
    }

    pub(crate) fn normal(&mut self, reason: EventReason, action: EventAction, note: String) {
        self.events.push(Event {
            warning: false,
            reason,
            action,
            note,
        });
    }

    pub(crate) fn warn(&mut self, reason: EventReason, action: EventAction, note: String) {
        self.events.push(Event {
            warning: true,
            reason,
            action,
            note,
        });
    }

    pub(crate) fn signal(&mut self, signal: Signal) {
        self.signals.push(signal);
    }

    fn done(self, next: Next) -> Decision<K> {
        Decision {
            status: self.status,
            blocker: self.blocker,
            events: self.events,
            signals: self.signals,
            next,
        }
    }
}

/// The inputs of a decision besides the fact.
#[derive(Clone, Debug)]
pub(crate) struct Input<'a> {
    /// The spec's run controls.
    pub(crate) controls: &'a Controls,
    /// What this process knows.
    pub(crate) process: Process,
    /// Now, in whole seconds.
    pub(crate) now: Timestamp,
    /// The tunables.
    pub(crate) settings: &'a Settings,
}

/// Folds `fact` into `status` and decides the next step.
pub(crate) fn decide<K: Kind>(input: &Input<'_>, status: RunStatus<K>, fact: Fact<K>) -> Decision<K> {
    let (c, now, settings) = (input.controls, input.now, input.settings);
    let mut d = Draft::new(status);
    match fact {
        Fact::Nothing => {}
        Fact::Observed(obs) => fold::observed(c, &mut d, obs, now),
        Fact::Gone { message, first_seen } => {
            let waited = first_seen.map(|t| plan::elapsed(t, now)).unwrap_or_default();
            if first_seen.is_none() || waited < settings.gone_confirm {
                // Confirmed once more after a delay before the run fails.
                let after = settings.gone_confirm.saturating_sub(waited);
                let name = d.status.current.as_ref().map(|c| K::describe(&c.handle));
                let msg = format!(
                    "DSS says {} does not exist ({message}); asking again in {}s before failing",
                    name.unwrap_or_default(),
                    after.as_secs()
                );
                d.block(WaitingReason::RunNotFound, msg, false);
                return d.done(Next::Wait(Wake::After(after)));
            }
            fold::gone(&mut d, &message, now);
        }
        Fact::Unavailable(t) => {
            d.block(WaitingReason::Trouble(t.category), t.message, false);
            return d.done(Next::Wait(Wake::After(Duration::from_secs(30))));
        }
        Fact::Trouble(t) => {
            d.signal(Signal::Trouble(t.category));
            d.block(
                WaitingReason::Trouble(t.category),
                format!("waiting for DSS: {}", t.message),
                false,
            );
            return d.done(Next::Wait(Wake::Backoff {
                at_least: t.retry_after,
            }));
        }
        Fact::Retry { after } => return d.done(Next::Wait(Wake::After(after))),
        Fact::Queued | Fact::Superseded => {
            // The same status every time, so waiting writes nothing.
            d.block(
                WaitingReason::StartQueued,
                "the start request is recorded and waits for the DSS connection's request budget".to_string(),
                false,
            );
            let wake = if matches!(fact, Fact::Queued) {
                Wake::About(Duration::from_secs(1))
            } else {
                Wake::After(Duration::from_secs(1))
            };
            return d.done(Next::Wait(wake));
        }
        Fact::Started { outcome, sent_at } => {
            let next = start::sent(&mut d, outcome, sent_at, now, settings);
            return d.done(next);
        }
        Fact::Searched(search) => {
            let next = guard::searched(c, &mut d, search, now, settings);
            return d.done(next);
        }
        Fact::AbortSent(reason) => {
            let next = abort_sent(c, &mut d, reason, now, settings);
            return d.done(next);
        }
    }
    let next = plan_next(input, &mut d);
    d.done(next)
}

/// Plans from the status and turns the step into a status change and the executor's next step.
fn plan_next<K: Kind>(input: &Input<'_>, d: &mut Draft<K>) -> Next {
    let (c, now, settings) = (input.controls, input.now, input.settings);
    acknowledge_idle_abort(c, d);
    if plan::withdraws(c, &d.status, &input.process) {
        // Nothing was sent for the recorded request: drop it.
        d.status.start_request = None;
    }
    match plan::next_step(c, &d.status, &input.process, now, settings) {
        Step::Done | Step::Suspend => Next::Wait(Wake::OnChange),
        Step::Poll { after } => Next::Wait(Wake::About(after)),
        Step::WaitForStarter { after } => Next::Wait(Wake::After(after)),
        Step::ResolveStart { since } => Next::Search { since },
        Step::Abort { reason } => Next::Abort(reason),
        Step::Send { fresh: true, .. } => Next::Send,
        Step::Send {
            fresh: false,
            attempt,
        }
        | Step::Start { attempt } => {
            start::record(c, d, attempt, now, settings);
            Next::Start
        }
        Step::RetryLater { after } => {
            let attempt = plan::attempt(&d.status).unwrap_or(1);
            let msg = format!("the run failed; retry {attempt} is due in {}s", after.as_secs());
            d.block(WaitingReason::RetryScheduled, msg, false);
            Next::Wait(Wake::After(after))
        }
        Step::Deferred { after } => {
            let refusal = d.status.start_request.as_ref().and_then(|r| r.refused);
            let category = match refusal {
                Some(crate::crd::Refusal::Unauthorized) => dss::Category::Unauthorized,
                _ => dss::Category::RateLimited,
            };
            let msg = format!(
                "DSS refused the last start; the next one is due in {}s",
                after.as_secs()
            );
            d.block(WaitingReason::Trouble(Category::Dss(category)), msg, false);
            Next::Wait(Wake::After(after))
        }
    }
}

/// An abort annotation that arrives while no run is active (and none is being started) has nothing
/// to abort: it is recorded as handled, so it does not abort a later run.
fn acknowledge_idle_abort<K: Kind>(c: &Controls, d: &mut Draft<K>) {
    let fresh = c.abort_annotation.is_some() && c.abort_annotation != d.status.handled.abort_annotation;
    if fresh && plan::active(&d.status).is_none() && plan::in_flight(&d.status).is_none() {
        d.status.handled.abort_annotation = c.abort_annotation.clone();
    }
}

/// An abort was sent: record it and say why.
fn abort_sent<K: Kind>(
    c: &Controls,
    d: &mut Draft<K>,
    reason: AbortReason,
    now: Timestamp,
    settings: &Settings,
) -> Next {
    d.status.abort_request = Some(AbortRequest {
        reason,
        requested_at: Time(now),
    });
    let name = d
        .status
        .current
        .as_ref()
        .map_or_else(|| "the run".to_string(), |r| K::describe(&r.handle));
    if reason == AbortReason::Requested {
        d.status.handled.abort_annotation = c.abort_annotation.clone();
    }
    let (event, note) = announce_abort(reason, &name);
    d.normal(event, K::WORDS.abort, note);
    Next::Wait(Wake::After(settings.abort_poll))
}

/// The event reason and note of an abort of the run `name`.
pub(crate) fn announce_abort(reason: AbortReason, name: &str) -> (EventReason, String) {
    match reason {
        AbortReason::DeadlineExceeded => (
            EventReason::DeadlineExceeded,
            format!("deadline passed: aborting {name}"),
        ),
        AbortReason::SpecChanged => (
            EventReason::SpecChanged,
            format!("a new run request arrived and spec.onSpecChange is Abort: aborting {name}"),
        ),
        AbortReason::Requested => (
            EventReason::AbortRequested,
            format!("the kube-dss.dev/abort annotation asks to abort {name}"),
        ),
        AbortReason::Deleted => (
            EventReason::AbortRequested,
            format!("resource deleted: aborting {name}"),
        ),
    }
}

#[cfg(test)]
mod tests {

    use super::{testing::*, vocabulary::WaitingReason, *};
    use crate::crd::AbortReason;

    #[test]
    fn a_watched_run_waits_for_its_watch_and_still_wakes_at_its_deadline() {
        let s = Settings::default();
        let base = controls();
        let deadline = Controls {
            active_deadline: Some(Duration::from_secs(10)),
            ..controls()
        };
        let running = started(WANT, 0, Some("j1"), Some("RUNNING"));
        let cases: Vec<(&str, &Controls, bool, i64, Next)> = vec![
            (
                "a watched running run is looked at slowly, its watch wakes it on a change",
                &base,
                true,
                2,
                Next::Wait(Wake::About(s.watched_poll)),
            ),
            (
                "an unwatched young run is polled fast",
                &base,
                false,
                2,
                Next::Wait(Wake::About(s.poll_min)),
            ),
            (
                "a watched run still wakes at its active deadline",
                &deadline,
                true,
                4,
                Next::Wait(Wake::About(Duration::from_secs(6))),
            ),
            (
                "a watched run past its deadline is aborted",
                &deadline,
                true,
                10,
                Next::Abort(AbortReason::DeadlineExceeded),
            ),
        ];
        for (name, c, watched, now, want) in cases {
            let mut input = input(c, &s, now);
            input.process.watched = watched;
            let d = decide(&input, running.clone(), Fact::Nothing);
            assert_eq!(d.next, want, "{name}");
            assert_eq!(d.status, running, "{name}: nothing new, nothing written");
        }
    }

    #[test]
    fn dss_saying_a_run_is_gone_is_confirmed_after_a_delay_before_the_run_fails() {
        let s = Settings::default();
        let c = controls();
        let running = started(WANT, 0, Some("j1"), Some("RUNNING"));
        let gone = |first_seen: Option<i64>| Fact::Gone {
            message: "Job does not exist".into(),
            first_seen: first_seen.map(ts),
        };
        let cases: Vec<(&str, Option<i64>, i64, Option<Next>)> = vec![
            (
                "the first answer is only noted",
                None,
                20,
                Some(Next::Wait(Wake::After(s.gone_confirm))),
            ),
            (
                "an answer before the delay is over waits for the rest of it",
                Some(16),
                20,
                Some(Next::Wait(Wake::After(s.gone_confirm - Duration::from_secs(4)))),
            ),
            (
                "the same answer after the delay fails the run",
                Some(10),
                20,
                None,
            ),
        ];
        for (name, first_seen, now, waits) in cases {
            let d = decide(&input(&c, &s, now), running.clone(), gone(first_seen));
            match waits {
                Some(next) => {
                    assert_eq!(d.next, next, "{name}");
                    assert_eq!(d.status, running, "{name}: the run stands");
                    assert_eq!(
                        d.blocker.as_ref().map(|b| (b.reason, b.stalled)),
                        Some((WaitingReason::RunNotFound, false)),
                        "{name}"
                    );
                }
                None => {
                    let failure = d.status.failure.as_ref().map(|f| f.reason);
                    assert_eq!(failure, Some(crate::crd::FailureReason::JobNotFound), "{name}");
                }
            }
        }
    }

    #[test]
    fn trouble_and_queues_wait_without_changing_the_run() {
        let settings = Settings::default();
        let c = controls();
        let running = started(WANT, 0, Some("j1"), Some("RUNNING"));
        let trouble = Trouble {
            category: Category::Dss(dss::Category::Unreachable),
            message: "connection refused".into(),
            retry_after: None,
        };
        let d = decide(&input(&c, &settings, 5), running.clone(), Fact::Trouble(trouble));
        assert_eq!(d.status, running);
        assert_eq!(d.next, Next::Wait(Wake::Backoff { at_least: None }));
        assert_eq!(
            d.blocker.as_ref().map(|b| b.reason.as_str()),
            Some("DssUnreachable")
        );
        let queued = started(WANT, 0, None, None);
        let d = decide(&input(&c, &settings, 5), queued.clone(), Fact::Queued);
        assert_eq!(
            (d.status, d.blocker.map(|b| b.reason)),
            (queued, Some(WaitingReason::StartQueued))
        );
    }

    #[test]
    fn the_abort_annotation_is_handled_once() {
        let settings = Settings::default();
        let asked = Controls {
            abort_annotation: Some("a1".into()),
            ..controls()
        };
        let d = decide(
            &input(&asked, &settings, 5),
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            Fact::AbortSent(AbortReason::Requested),
        );
        assert_eq!(d.status.handled.abort_annotation.as_deref(), Some("a1"));
        assert_eq!(reasons(&d), vec![(false, "AbortRequested")]);
        // With no active run, the annotation is only acknowledged.
        let d = decide(
            &input(&asked, &settings, 60),
            started(WANT, 0, Some("j1"), Some("DONE")),
            Fact::Nothing,
        );
        assert_eq!(
            (d.status.handled.abort_annotation.as_deref(), d.next),
            (Some("a1"), Next::Wait(Wake::OnChange))
        );
    }
}
