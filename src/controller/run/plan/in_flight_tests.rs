//! Start requests without a run: the ones this process queued and has not sent, and the ones that may
//! have been sent (the crash guard).

use std::time::Duration;

use super::super::{
    plan::{self, Step},
    testing::*,
    *,
};

/// (name, controls, status, what this process knows, now, the expected step).
type Case<'a> = (&'a str, &'a Controls, S, Process, i64, Step);

fn check(cases: Vec<Case>) {
    for (name, c, status, p, now, expected) in cases {
        assert_eq!(step(c, &status, p, now), expected, "{name}");
    }
}

fn suspended() -> Controls {
    Controls {
        suspend: true,
        ..controls()
    }
}

fn not_sent(lease: Lease) -> Process {
    Process {
        lease,
        ..process(Sending::NotSent)
    }
}

#[test]
fn queued_starts_are_sent_as_recorded_or_recorded_again() {
    let (base, suspended) = (controls(), suspended());
    let recorded = started(WANT, 0, None, None);
    let mut retry = started(WANT, 0, None, None);
    if let Some(r) = retry.start_request.as_mut() {
        r.attempt = Some(2);
    }
    let send = |fresh, attempt| Step::Send { fresh, attempt };
    check(vec![
        (
            "a queued start is sent as recorded while the lease is held, however long it waited",
            &base,
            recorded.clone(),
            not_sent(Lease::Held),
            300,
            send(true, 1),
        ),
        (
            "without leader election a queued start is sent as recorded only while recent",
            &base,
            recorded.clone(),
            process(Sending::NotSent),
            5,
            send(true, 1),
        ),
        (
            "without leader election an older queued start is recorded again first",
            &base,
            recorded.clone(),
            process(Sending::NotSent),
            6,
            send(false, 1),
        ),
        (
            "when the lease may have passed a queued start is recorded again first",
            &base,
            recorded.clone(),
            not_sent(Lease::Unsure),
            1,
            send(false, 1),
        ),
        (
            "a queued retry keeps its attempt",
            &base,
            retry,
            not_sent(Lease::Held),
            5,
            send(true, 2),
        ),
        (
            "a queued start of an older run request is withdrawn for the new one",
            &base,
            started("old", 0, None, None),
            process(Sending::NotSent),
            5,
            Step::Start { attempt: 1 },
        ),
        (
            "a queued start of a suspended build is withdrawn",
            &suspended,
            recorded,
            process(Sending::NotSent),
            5,
            Step::Suspend,
        ),
        (
            "a recorded run makes the sending state irrelevant",
            &base,
            started(WANT, 0, Some("j1"), Some("RUNNING")),
            process(Sending::NotSent),
            2,
            Step::Poll {
                after: Settings::default().poll_min,
            },
        ),
    ]);
}

#[test]
fn starts_that_may_have_been_sent_wait_for_the_grace_then_are_searched_for() {
    let s = Settings::default();
    let base = controls();
    let recorded = started(WANT, 0, None, None);
    let alike = Process {
        alike_in_flight: true,
        ..process(Sending::MaybeSent { since: ts(0) })
    };
    let sent_at = |t| process(Sending::MaybeSent { since: ts(t) });
    check(vec![
        (
            "recent start request without run waits for its starter",
            &base,
            recorded.clone(),
            unknown_sending(),
            10,
            Step::WaitForStarter {
                after: s.start_grace - Duration::from_secs(10),
            },
        ),
        (
            "old start request without run searches DSS",
            &base,
            recorded.clone(),
            unknown_sending(),
            41,
            Step::ResolveStart { since: ts(0) },
        ),
        (
            "the grace runs from when the request was sent",
            &base,
            recorded.clone(),
            sent_at(100),
            110,
            Step::WaitForStarter {
                after: s.start_grace - Duration::from_secs(10),
            },
        ),
        (
            "and from when this process began to act",
            &base,
            recorded.clone(),
            sent_at(30),
            41,
            Step::WaitForStarter {
                after: s.start_grace - Duration::from_secs(11),
            },
        ),
        (
            "a request sent long ago is searched for",
            &base,
            recorded.clone(),
            sent_at(100),
            140,
            Step::ResolveStart { since: ts(100) },
        ),
        (
            "a search waits while a start of the same definition is in flight here",
            &base,
            recorded,
            alike,
            140,
            Step::WaitForStarter {
                after: Duration::from_secs(2),
            },
        ),
    ]);
}

#[test]
fn only_unsent_requests_that_no_longer_stand_are_withdrawn() {
    let (base, suspended) = (controls(), suspended());
    let not_sent = process(Sending::NotSent);
    assert!(
        plan::withdraws(&base, &started("old", 0, None, None), &not_sent),
        "a superseded queued start is dropped"
    );
    assert!(
        plan::withdraws(&suspended, &started(WANT, 0, None, None), &not_sent),
        "so is a suspended one"
    );
    assert!(
        !plan::withdraws(&base, &started(WANT, 0, None, None), &not_sent),
        "a standing one is kept"
    );
    let maybe_sent = process(Sending::MaybeSent { since: ts(0) });
    assert!(
        !plan::withdraws(&base, &started("old", 0, None, None), &maybe_sent),
        "a maybe-sent one is searched for"
    );
}
