//! Deletion's tables: the state at deletion, then the steps from each state.

use super::super::{
    cleanup::{self, Cleanup, Deleting, Forced, Learned},
    testing::*,
    *,
};
use crate::{controller::error::Category, crd::DeletionPolicy, dss};

/// A check of a step.
type Check = Box<dyn Fn(&Cleanup<String>) -> bool>;
/// (name, state, what was learned, overdue, now, the check of the step).
type Case<'a> = (&'a str, &'a Deleting<String>, Learned<String>, bool, i64, Check);

fn check(cases: Vec<Case>) {
    let settings = Settings::default();
    for (name, state, learned, overdue, now, check) in cases {
        let got = cleanup::next(state, learned, overdue, false, ts(now), &settings);
        assert!(check(&got), "{name}: {got:?}");
    }
}

fn active() -> Deleting<String> {
    Deleting::Active {
        handle: "j1".to_string(),
        name: "job j1".into(),
    }
}

fn failed(credentials: bool) -> Learned<String> {
    let trouble = Trouble {
        category: Category::Dss(dss::Category::Unreachable),
        message: "refused".into(),
        retry_after: None,
    };
    Learned::Failed { trouble, credentials }
}

/// A release; a forced one names its cause in its note, as in the metric.
fn released(warning: bool, forced: Option<Forced>) -> Check {
    Box::new(move |c| {
        matches!(c, Cleanup::Release { warning: w, forced: f, note }
            if *w == warning && *f == forced
                && forced.is_none_or(|r| note.as_deref().is_some_and(|n| n.contains(r.as_str()))))
    })
}

fn waits(record_abort: bool) -> Check {
    Box::new(move |c| matches!(c, Cleanup::Wait { record_abort: r, .. } if *r == record_abort))
}

#[test]
fn the_state_at_deletion() {
    let base = controls();
    let orphan = Controls {
        deletion_policy: DeletionPolicy::Orphan,
        ..controls()
    };
    let states: Vec<(&str, &Controls, S, Process, Deleting<String>)> = vec![
        (
            "never started",
            &base,
            S::default(),
            unknown_sending(),
            Deleting::NothingStarted,
        ),
        (
            "an ended run",
            &base,
            started(WANT, 0, Some("j1"), Some("DONE")),
            unknown_sending(),
            Deleting::Ended,
        ),
        (
            "an active run",
            &base,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            unknown_sending(),
            active(),
        ),
        (
            "an orphaned run",
            &orphan,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            unknown_sending(),
            Deleting::Orphan {
                what: "job j1 left running".into(),
            },
        ),
        (
            "an unsent start",
            &base,
            started(WANT, 0, None, None),
            process(Sending::NotSent),
            Deleting::Unsent,
        ),
        (
            "a start in flight",
            &base,
            started(WANT, 0, None, None),
            process(Sending::MaybeSent { since: ts(-5) }),
            Deleting::LostStart { since: ts(0) },
        ),
    ];
    for (name, c, s, p, expected) in states {
        assert_eq!(cleanup::deleting(c, &s, &p), expected, "{name}");
    }
}

#[test]
fn deleting_an_active_run_aborts_it_and_releases_once_it_ended_or_the_timeout_passed() {
    let active = active();
    check(vec![
        (
            "nothing started: released at once",
            &Deleting::NothingStarted,
            Learned::Nothing,
            false,
            0,
            Box::new(|c| matches!(c, Cleanup::Release { note: None, .. })),
        ),
        (
            "an active run is observed first",
            &active,
            Learned::Nothing,
            false,
            0,
            Box::new(|c| matches!(c, Cleanup::Observe(_))),
        ),
        (
            "an active run is aborted",
            &active,
            Learned::Running,
            false,
            0,
            Box::new(|c| *c == Cleanup::Abort),
        ),
        (
            "an abort is awaited",
            &active,
            Learned::AbortSent,
            false,
            0,
            waits(true),
        ),
        (
            "an abort unconfirmed past the timeout is released by force",
            &active,
            Learned::AbortSent,
            true,
            0,
            released(true, Some(Forced::AbortUnconfirmed)),
        ),
        (
            "an ended run is released",
            &active,
            Learned::Ended,
            false,
            0,
            released(false, None),
        ),
    ]);
}

#[test]
fn trouble_keeps_the_finalizer_until_the_timeout() {
    let (active, lost) = (active(), Deleting::<String>::LostStart { since: ts(0) });
    let backs_off = || -> Check { Box::new(|c| matches!(c, Cleanup::Backoff(_))) };
    check(vec![
        (
            "DSS trouble keeps the finalizer",
            &active,
            failed(false),
            false,
            0,
            backs_off(),
        ),
        (
            "DSS unreachable past the timeout is released by force",
            &active,
            failed(false),
            true,
            0,
            released(true, Some(Forced::DssUnreachable)),
        ),
        (
            "credentials gone past the timeout say so",
            &active,
            failed(true),
            true,
            0,
            released(true, Some(Forced::CredentialsUnavailable)),
        ),
        (
            "a search that fails keeps the finalizer",
            &lost,
            failed(false),
            false,
            41,
            backs_off(),
        ),
    ]);
}

#[test]
fn a_start_in_flight_is_waited_for_then_searched_for() {
    let lost = Deleting::<String>::LostStart { since: ts(0) };
    check(vec![
        (
            "a lost start waits for the grace",
            &lost,
            Learned::Nothing,
            false,
            10,
            waits(false),
        ),
        (
            "then searches",
            &lost,
            Learned::Nothing,
            false,
            41,
            Box::new(|c| matches!(c, Cleanup::Search { .. })),
        ),
        (
            "its one run is observed",
            &lost,
            Learned::Searched(Search::Found(vec![candidate("j7")])),
            false,
            41,
            Box::new(|c| matches!(c, Cleanup::Observe(Deleting::Active { .. }))),
        ),
        (
            "no run: released",
            &lost,
            Learned::Searched(Search::Found(vec![])),
            false,
            41,
            released(true, None),
        ),
    ]);
}

#[test]
fn the_abort_of_a_deleted_run_is_recorded_with_its_name() {
    let running = started(WANT, 0, Some("j1"), Some("RUNNING"));
    let (status, event) = cleanup::abort_recorded(running, &active(), ts(7));
    let request = status
        .abort_request
        .as_ref()
        .map(|a| (a.reason, a.requested_at.0));
    assert_eq!(request, Some((crate::crd::AbortReason::Deleted, ts(7))));
    assert_eq!(
        (event.warning, event.reason.as_str(), event.action.as_str()),
        (false, "AbortRequested", "AbortJob")
    );
    assert_eq!(event.note, "resource deleted: aborting job j1");
    // A run found by a search for a lost start is named as the search named it.
    let found = Deleting::Active {
        handle: "j7".to_string(),
        name: "job j7".into(),
    };
    let (_, event) = cleanup::abort_recorded(started(WANT, 0, None, None), &found, ts(7));
    assert_eq!(event.note, "resource deleted: aborting job j7");
}
