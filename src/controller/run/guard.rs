//! The crash guard's verdict on a search for the run of a lost start: adopt the one match, start
//! again when there is none, stop and ask a human when there are several.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    Draft,
    model::{Candidate, Controls, Current, Kind, Next, Search, Settings, Signal, Wake},
    start,
    vocabulary::{EventReason, WaitingReason},
};

use crate::crd::ADOPT_ANNOTATION as ADOPT;

/// What a search makes of the status, and the next step.
pub(crate) fn searched<K: Kind>(
    c: &Controls,
    d: &mut Draft<K>,
    search: Search<K::Handle>,
    now: Timestamp,
    settings: &Settings,
) -> Next {
    let found = match search {
        // The one match was given to another build of this process this instant: search again.
        Search::Raced => return Next::Wait(Wake::After(Duration::from_secs(1))),
        Search::Found(found) => found,
    };
    match found.as_slice() {
        [one] => adopt(d, one.clone()),
        [] if c.adopt.is_some() => {
            let msg = format!(
                "annotation {ADOPT} names {} but DSS has no such run for this request",
                c.adopt.as_deref().unwrap_or_default()
            );
            d.block(WaitingReason::StartOutcomeUnknown, msg, true);
            Next::Wait(Wake::OnChange)
        }
        [] if c.suspend => {
            // No run exists and the user suspended meanwhile: start nothing.
            d.status.start_request = None;
            Next::Wait(Wake::OnChange)
        }
        [] => {
            // No run exists for the request: starting is safe. A fresh start request is recorded first
            // (with the precondition), so two resolvers cannot both start.
            let attempt = d
                .status
                .start_request
                .as_ref()
                .and_then(|r| r.attempt)
                .unwrap_or(1);
            start::record(c, d, attempt, now, settings);
            Next::Start
        }
        many => unknown(d, many),
    }
}

/// Adopts the one run that matches.
fn adopt<K: Kind>(d: &mut Draft<K>, found: Candidate<K::Handle>) -> Next {
    // The run's age counts from when DSS got the request, not from when it was recorded (it may
    // have waited for its turn first).
    if let (Some(r), Some(t)) = (d.status.start_request.as_mut(), found.initiated) {
        let t = super::fold::whole_seconds(t);
        if t > r.requested_at.0 {
            r.requested_at = Time(t);
        }
    }
    // The next reconcile observes the run like any other, ended or not.
    d.status.current = Some(Current {
        handle: found.handle,
        state: None,
        start_time: None,
        completion_time: None,
        warnings: None,
        details: K::Details::default(),
    });
    let note = format!("adopted {} whose start response was not recorded", found.name);
    d.normal(K::WORDS.adopted, K::WORDS.adopt, note);
    d.signal(Signal::Adopted);
    Next::Wait(Wake::After(Duration::ZERO))
}

/// Several runs match: only a human can tell which is ours.
fn unknown<K: Kind>(d: &mut Draft<K>, many: &[Candidate<K::Handle>]) -> Next {
    let names: Vec<&str> = many.iter().map(|j| j.name.as_str()).collect();
    let already = d
        .status
        .conditions
        .iter()
        .any(|c| c.reason == WaitingReason::StartOutcomeUnknown.as_str());
    if !already {
        d.signal(Signal::OutcomeUnknown);
        d.warn(
            EventReason::StartOutcomeUnknown,
            K::WORDS.adopt,
            format!("several runs match the lost start: {}", names.join(", ")),
        );
    }
    let msg = format!(
        "several runs match the start request whose response was lost ({}): set annotation {ADOPT}=<id> to adopt \
         one (and abort the others if needed)",
        names.join(", ")
    );
    d.block(WaitingReason::StartOutcomeUnknown, msg, true);
    Next::Wait(Wake::OnChange)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{contract, testing::*, *};
    use crate::crd::Phase;

    /// (name, controls, what the search found, next, phase, the blocker's reason and stalledness)
    type Case<'a> = (
        &'a str,
        &'a Controls,
        Search<String>,
        Next,
        Phase,
        Option<(&'a str, bool)>,
    );

    fn check(cases: Vec<Case>) {
        let settings = Settings::default();
        for (name, c, search, next, phase, blocker) in cases {
            let d = decide(
                &input(c, &settings, 50),
                started(WANT, 0, None, None),
                Fact::Searched(search),
            );
            assert_eq!(d.next, next, "{name}: next");
            assert_eq!(contract::phase(c, &d.status), phase, "{name}: phase");
            assert_eq!(
                d.blocker.as_ref().map(|b| (b.reason.as_str(), b.stalled)),
                blocker,
                "{name}: blocker"
            );
        }
    }

    #[test]
    fn the_crash_guard_adopts_one_match_or_starts_again() {
        let base = controls();
        let suspended = Controls {
            suspend: true,
            ..controls()
        };
        check(vec![
            (
                "one match is adopted",
                &base,
                Search::Found(vec![candidate("j1")]),
                Next::Wait(Wake::After(Duration::ZERO)),
                Phase::Queued,
                None,
            ),
            (
                "no match starts again",
                &base,
                Search::Found(vec![]),
                Next::Start,
                Phase::Starting,
                None,
            ),
            (
                "no match while suspended starts nothing",
                &suspended,
                Search::Found(vec![]),
                Next::Wait(Wake::OnChange),
                Phase::Suspended,
                None,
            ),
            (
                "a raced match is searched again",
                &base,
                Search::Raced,
                Next::Wait(Wake::After(Duration::from_secs(1))),
                Phase::Starting,
                None,
            ),
        ]);
    }

    #[test]
    fn the_crash_guard_asks_a_human_when_it_cannot_tell() {
        let settings = Settings::default();
        let base = controls();
        let named = Controls {
            adopt: Some("j9".into()),
            ..controls()
        };
        check(vec![
            (
                "no match for a named run asks a human",
                &named,
                Search::Found(vec![]),
                Next::Wait(Wake::OnChange),
                Phase::Starting,
                Some(("StartOutcomeUnknown", true)),
            ),
            (
                "several matches ask a human",
                &base,
                Search::Found(vec![candidate("j1"), candidate("j2")]),
                Next::Wait(Wake::OnChange),
                Phase::Starting,
                Some(("StartOutcomeUnknown", true)),
            ),
        ]);
        // The outcome-unknown event is published once, not at every look.
        let mut already = started(WANT, 0, None, None);
        contract::set_condition(
            &mut already.conditions,
            contract::STALLED,
            "True",
            "StartOutcomeUnknown",
            "m",
            None,
            ts(0),
        );
        let many = Search::Found(vec![candidate("j1"), candidate("j2")]);
        assert!(
            decide(&input(&base, &settings, 50), already, Fact::Searched(many))
                .events
                .is_empty()
        );
    }
}
