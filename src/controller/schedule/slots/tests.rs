use super::*;

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn sched(expr: &str, zone: &str) -> Schedule {
    Schedule::parse(expr, Some(zone)).unwrap()
}

/// Every slot in `(from, to]`, walking forward.
pub(super) fn forward(s: &Schedule, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
    let mut out = Vec::new();
    let mut cursor = s.after(from).unwrap();
    while let Some(slot) = cursor.filter(|slot| *slot <= to) {
        out.push(slot);
        cursor = s.after(slot).unwrap();
    }
    out
}

/// Every slot in `(from, to]` as `slots_due` finds them (walking back), with room for all.
pub(super) fn backward(s: &Schedule, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
    let w = Window {
        after: from,
        now: to,
        starting_deadline: None,
        catch_up: CatchUp::All,
        max_catch_up_runs: 100_000,
    };
    slots_due(s, &w, &BTreeSet::new()).unwrap().runnable
}

/// A table row: (what, schedule, zone, from, to, the slots in (from, to] in UTC).
type SlotCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// Each row's slots, found walking forward and walking back.
fn check_slots(cases: &[SlotCase]) {
    for (name, expr, zone, from, to, want) in cases {
        let s = sched(expr, zone);
        let want: Vec<Timestamp> = want.iter().map(|w| t(w)).collect();
        assert_eq!(forward(&s, t(from), t(to)), want, "{name} (walking forward)");
        assert_eq!(backward(&s, t(from), t(to)), want, "{name} (walking back)");
    }
}

/// A slot inside the gap runs once, at the first valid instant after it.
#[test]
fn slots_when_the_clocks_spring_forward() {
    check_slots(&[
        (
            "Paris spring forward: a 02:30 slot runs once, at the first instant after the gap (03:00 CEST)",
            "30 2 * * *",
            "Europe/Paris",
            "2024-03-29T12:00:00Z",
            "2024-04-01T12:00:00Z",
            &[
                "2024-03-30T01:30:00Z",
                "2024-03-31T01:00:00Z",
                "2024-04-01T00:30:00Z",
            ],
        ),
        (
            "Paris spring forward: a 02:00 slot runs at 03:00 CEST",
            "0 2 * * *",
            "Europe/Paris",
            "2024-03-29T12:00:00Z",
            "2024-04-01T12:00:00Z",
            &[
                "2024-03-30T01:00:00Z",
                "2024-03-31T01:00:00Z",
                "2024-04-01T00:00:00Z",
            ],
        ),
        (
            "Paris spring forward: an hourly schedule has no slot in the missing hour",
            "0 * * * *",
            "Europe/Paris",
            "2024-03-30T23:30:00Z",
            "2024-03-31T02:30:00Z",
            &[
                "2024-03-31T00:00:00Z",
                "2024-03-31T01:00:00Z",
                "2024-03-31T02:00:00Z",
            ],
        ),
        (
            "New York spring forward: a 02:30 slot runs at 03:00 EDT",
            "30 2 * * *",
            "America/New_York",
            "2024-03-09T12:00:00Z",
            "2024-03-11T12:00:00Z",
            &["2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"],
        ),
    ]);
}

/// A slot in the repeated hour runs once; interval schedules follow real time.
#[test]
fn slots_when_the_clocks_fall_back() {
    check_slots(&[
        (
            "Paris fall back: a 02:30 slot runs once, in the first pass of the repeated hour",
            "30 2 * * *",
            "Europe/Paris",
            "2024-10-26T12:00:00Z",
            "2024-10-28T12:00:00Z",
            &["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"],
        ),
        (
            "Paris fall back: an interval schedule follows real time through both passes",
            "*/30 * * * *",
            "Europe/Paris",
            "2024-10-26T23:45:00Z",
            "2024-10-27T02:15:00Z",
            &[
                "2024-10-27T00:00:00Z",
                "2024-10-27T00:30:00Z",
                "2024-10-27T01:00:00Z",
                "2024-10-27T01:30:00Z",
                "2024-10-27T02:00:00Z",
            ],
        ),
        (
            "New York fall back: a 01:30 slot runs once, at 01:30 EDT",
            "30 1 * * *",
            "America/New_York",
            "2024-11-02T12:00:00Z",
            "2024-11-04T12:00:00Z",
            &["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"],
        ),
    ]);
}

/// Macros are local times; a sixth, leading field is seconds.
#[test]
fn slots_of_macros_and_six_field_schedules() {
    check_slots(&[
        (
            "@daily is local midnight",
            "@daily",
            "Europe/Paris",
            "2024-06-01T00:00:00Z",
            "2024-06-03T00:00:00Z",
            &["2024-06-01T22:00:00Z", "2024-06-02T22:00:00Z"],
        ),
        (
            "six fields: a leading seconds field",
            "*/20 * * * * *",
            "UTC",
            "2024-06-01T00:00:00Z",
            "2024-06-01T00:01:00Z",
            &[
                "2024-06-01T00:00:20Z",
                "2024-06-01T00:00:40Z",
                "2024-06-01T00:01:00Z",
            ],
        ),
    ]);
}

/// croner-rust#16: `0 2 * * *` in New York searched from 01:30 local on the night of the 2025
/// spring forward (02:00 EST becomes 03:00 EDT) panicked in the library. The slot is the first
/// valid instant after the gap, found from before, inside and after the gap, both ways.
#[test]
fn the_spring_forward_slot_of_croner_issue_16_is_found_not_a_panic() {
    let s = sched("0 2 * * *", "America/New_York");
    let from = jiff::civil::datetime(2025, 3, 9, 1, 30, 0, 0)
        .to_zoned(TimeZone::get("America/New_York").unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(from, t("2025-03-09T06:30:00Z"), "01:30 EST");
    let gap = t("2025-03-09T07:00:00Z");
    assert_eq!(s.after(from).unwrap(), Some(gap), "03:00 EDT");
    assert_eq!(
        s.after(gap).unwrap(),
        Some(t("2025-03-10T06:00:00Z")),
        "02:00 EDT the next day"
    );
    assert_eq!(s.before(from).unwrap(), Some(t("2025-03-08T07:00:00Z")));
    assert_eq!(s.at_or_before(gap).unwrap(), Some(gap));
    assert_eq!(
        s.before(t("2025-03-09T12:00:00Z")).unwrap(),
        Some(gap),
        "walking back from the afternoon"
    );
    let w = Window {
        after: from,
        now: t("2025-03-09T07:00:30Z"),
        starting_deadline: Some(Duration::from_secs(60)),
        catch_up: CatchUp::Latest,
        max_catch_up_runs: 31,
    };
    assert_eq!(
        slots_due(&s, &w, &BTreeSet::new()).unwrap().runnable,
        vec![gap],
        "due once"
    );
}

#[test]
fn parsing_accepts_five_or_six_fields_and_macros() {
    for ok in [
        "0 2 * * *",
        "*/5 * * * * *",
        "@hourly",
        "@DAILY",
        "@weekly",
        "@monthly",
        "@yearly",
        "0 9 * * MON-FRI",
        "0 0 L * *",
    ] {
        assert!(Schedule::parse(ok, None).is_ok(), "{ok}");
    }
    assert_eq!(
        Schedule::parse("0 2 * * *", None).unwrap().unit(),
        SlotUnit::Minute
    );
    assert_eq!(Schedule::parse("@daily", None).unwrap().unit(), SlotUnit::Minute);
    assert_eq!(
        Schedule::parse("0 0 2 * * *", None).unwrap().unit(),
        SlotUnit::Second
    );
    for (bad, says) in [
        ("* * * *", "expected 5 or 6 fields, found 4"),
        ("0 0 0 1 1 * 2030", "expected 5 or 6 fields, found 7"),
        ("@reboot", "not a valid cron expression"),
        ("@daily *", "stands alone"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
    ] {
        let err = Schedule::parse(bad, None).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let err = Schedule::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err();
    assert_eq!(err.reason(), "InvalidTimeZone");
}

#[test]
fn a_schedule_that_never_comes_has_no_next_slot() {
    let s = sched("0 0 30 2 *", "UTC");
    assert_eq!(s.after(t("2024-01-01T00:00:00Z")).unwrap(), None);
}

fn hourly_window(
    after: &str,
    now: &str,
    deadline_min: Option<u64>,
    catch_up: CatchUp,
    runs: usize,
) -> Window {
    Window {
        after: t(after),
        now: t(now),
        starting_deadline: deadline_min.map(|m| Duration::from_secs(m * 60)),
        catch_up,
        max_catch_up_runs: runs,
    }
}

/// Hour `hour` of the test day.
fn h(hour: u32) -> Timestamp {
    t(&format!("2024-06-01T{hour:02}:00:00Z"))
}

/// Those hours of the test day.
fn hours(list: &[u32]) -> Vec<Timestamp> {
    list.iter().map(|&x| h(x)).collect()
}

/// Each row's decision for an hourly schedule (the next slot is filled in from the window).
fn check_due(cases: Vec<(&str, Window, Due)>) {
    let s = sched("0 * * * *", "UTC");
    for (name, window, mut want) in cases {
        want.next = s.after(window.now).unwrap();
        assert_eq!(slots_due(&s, &window, &BTreeSet::new()).unwrap(), want, "{name}");
    }
}

/// catchUp: Latest runs the newest missed slot, All every one, oldest first, up to maxCatchUpRuns.
#[test]
fn catch_up_runs_the_newest_slot_or_every_slot_up_to_the_cap() {
    let (d0, d530) = ("2024-06-01T00:00:00Z", "2024-06-01T05:30:00Z");
    check_due(vec![
        (
            "Latest runs only the newest missed slot",
            hourly_window(d0, d530, None, CatchUp::Latest, 31),
            Due {
                runnable: hours(&[5]),
                missed: 4,
                decided_through: Some(h(4)),
                ..Due::default()
            },
        ),
        (
            "All runs every missed slot, oldest first",
            hourly_window(d0, d530, None, CatchUp::All, 31),
            Due {
                runnable: hours(&[1, 2, 3, 4, 5]),
                ..Due::default()
            },
        ),
        (
            "All beyond maxCatchUpRuns runs the newest N and counts the rest as missed",
            hourly_window(d0, d530, None, CatchUp::All, 2),
            Due {
                runnable: hours(&[4, 5]),
                missed: 3,
                decided_through: Some(h(3)),
                ..Due::default()
            },
        ),
    ]);
}

/// A slot later than startingDeadlineSeconds is skipped (counted), never run.
#[test]
fn the_starting_deadline_skips_slots_too_late_to_run() {
    let (d0, d530) = ("2024-06-01T00:00:00Z", "2024-06-01T05:30:00Z");
    check_due(vec![
        (
            "Latest with a deadline: older slots are skipped, the ones within are missed",
            hourly_window(d0, d530, Some(120), CatchUp::Latest, 31),
            Due {
                runnable: hours(&[5]),
                missed: 1,
                skipped: 3,
                newest_skipped: Some(h(3)),
                decided_through: Some(h(4)),
                ..Due::default()
            },
        ),
        (
            "All with a deadline runs the slots within it",
            hourly_window(d0, d530, Some(120), CatchUp::All, 31),
            Due {
                runnable: hours(&[4, 5]),
                skipped: 3,
                newest_skipped: Some(h(3)),
                decided_through: Some(h(3)),
                ..Due::default()
            },
        ),
        (
            "a deadline shorter than the lateness skips every slot",
            hourly_window(d0, d530, Some(10), CatchUp::All, 31),
            Due {
                skipped: 5,
                newest_skipped: Some(h(5)),
                decided_through: Some(h(5)),
                ..Due::default()
            },
        ),
        (
            "a slot late by exactly the deadline still runs",
            hourly_window("2024-06-01T04:30:00Z", d530, Some(30), CatchUp::Latest, 31),
            Due {
                runnable: hours(&[5]),
                ..Due::default()
            },
        ),
    ]);
}

/// Slots at the window's edges, and a clock that went back.
#[test]
fn edges_of_the_window() {
    let d530 = "2024-06-01T05:30:00Z";
    check_due(vec![
        (
            "a slot at now is due",
            hourly_window(
                "2024-06-01T04:30:00Z",
                "2024-06-01T05:00:00Z",
                None,
                CatchUp::Latest,
                31,
            ),
            Due {
                runnable: hours(&[5]),
                ..Due::default()
            },
        ),
        (
            "nothing is due after the last handled slot",
            hourly_window("2024-06-01T05:00:00Z", d530, None, CatchUp::All, 31),
            Due::default(),
        ),
        (
            "a clock behind the last handled slot decides nothing",
            hourly_window("2024-06-01T06:00:00Z", d530, None, CatchUp::All, 31),
            Due::default(),
        ),
    ]);
}

#[test]
fn a_slot_that_has_its_build_is_never_counted_missed_or_skipped() {
    // A reconcile created the builds of 01:00 and 04:00, but its status write was refused: the last
    // handled slot is still 00:00. Those slots are decided again; they were built, not missed.
    let s = sched("0 * * * *", "UTC");
    let built = BTreeSet::from([h(1), h(4)]);
    let d0 = "2024-06-01T00:00:00Z";
    let late = hourly_window(d0, "2024-06-01T05:30:00Z", Some(120), CatchUp::Latest, 31);
    let due = slots_due(&s, &late, &built).unwrap();
    assert_eq!(due.runnable, vec![h(5)]);
    assert_eq!(
        (due.missed, due.skipped),
        (0, 2),
        "04:00 is not missed, 01:00 not skipped"
    );
    assert_eq!(due.newest_skipped, Some(h(3)));
    assert_eq!(due.decided_through, Some(h(4)));
    // Built slots alone are still decided (the next decision starts after them), with no count.
    let only_built = hourly_window(d0, "2024-06-01T06:30:00Z", Some(60), CatchUp::Latest, 31);
    let built = BTreeSet::from([h(1), h(2), h(3), h(4), h(5)]);
    let due = slots_due(&s, &only_built, &built).unwrap();
    assert_eq!((due.runnable, due.missed, due.skipped), (vec![h(6)], 0, 0));
    assert_eq!((due.newest_skipped, due.decided_through), (None, Some(h(5))));
    // A runnable slot that has its build stays runnable: creating it again finds it, which is done.
    let all = hourly_window(d0, "2024-06-01T02:30:00Z", None, CatchUp::All, 31);
    let due = slots_due(&s, &all, &BTreeSet::from([h(1)])).unwrap();
    assert_eq!(due.runnable, vec![h(1), h(2)]);
}

#[test]
fn counting_stops_at_the_limit_after_a_long_downtime() {
    let s = sched("* * * * * *", "UTC");
    let now = t("2024-06-02T00:00:00Z");
    let w = Window {
        after: t("2024-06-01T00:00:00Z"),
        now,
        starting_deadline: None,
        catch_up: CatchUp::Latest,
        max_catch_up_runs: 31,
    };
    let due = slots_due(&s, &w, &BTreeSet::new()).unwrap();
    assert_eq!(due.runnable, vec![now]);
    assert_eq!(due.missed, COUNT_LIMIT);
    assert!(due.counts_capped);
    // Every older slot is decided: the next decision starts after the newest missed one.
    assert_eq!(due.decided_through, Some(t("2024-06-01T23:59:59Z")));
}

#[test]
fn slot_numbers_and_truncation() {
    let slot = t("2024-06-01T02:00:00Z");
    assert_eq!(slot_number(slot, SlotUnit::Minute), slot.as_second() / 60);
    assert_eq!(slot_number(slot, SlotUnit::Second), slot.as_second());
    assert_eq!(truncate(t("2024-06-01T02:00:59.9Z"), SlotUnit::Minute), slot);
    assert_eq!(
        truncate(t("2024-06-01T02:00:07.5Z"), SlotUnit::Second),
        t("2024-06-01T02:00:07Z")
    );
}
