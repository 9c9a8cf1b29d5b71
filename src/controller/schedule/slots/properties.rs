//! Property tests of the slot computation: for any schedule, zone and instants, nothing panics,
//! slots strictly increase, and a slot is never due twice.

use proptest::prelude::*;

use super::{
    tests::{backward, forward},
    *,
};

/// Zones with daylight saving (some with 30-minute or negative shifts) and odd offsets.
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/St_Johns",
    "Africa/Casablanca",
    "Europe/Dublin",
    "Asia/Kathmandu",
    "America/Santiago",
];

fn field(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(options)
}

fn cron_expr() -> impl Strategy<Value = String> {
    let five = (
        field(&["*", "0", "30", "*/5", "0,30", "15-45", "*/7", "59"]),
        field(&["*", "0", "2", "1-3", "*/6", "0,12", "2,3", "23"]),
        field(&["*", "1", "15", "L", "1-7", "?", "15W", "31", "29"]),
        field(&["*", "3", "10,11", "*/2", "JAN-MAR", "11"]),
        field(&["*", "0", "1-5", "SUN", "5#2", "5L", "?", "MON,WED"]),
    );
    let seconds = field(&["", "0 ", "*/15 ", "* ", "5,35 ", "0-30/10 "]);
    prop_oneof![
        (seconds, five).prop_map(|(s, (m, h, dom, mon, dow))| format!("{s}{m} {h} {dom} {mon} {dow}")),
        field(&["@hourly", "@daily", "@weekly", "@monthly", "@yearly"]).prop_map(String::from),
    ]
}

/// Instants from 1990 to 2060, often near a DST change (the US spring-forward week of March 8
/// to 14, late March, late October, early November, early April), where the searches are most
/// delicate. Each date starts three days of instants.
fn instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (631_152_000i64..2_840_140_800).prop_map(|s| Timestamp::from_second(s).unwrap()),
        (
            1990i16..2060,
            field(&[
                "03-08", "03-11", "03-25", "03-31", "10-25", "10-29", "11-03", "04-05", "09-28"
            ]),
            0i64..259_200
        )
            .prop_map(|(y, md, offset)| {
                let day: Timestamp = format!("{y}-{md}T00:00:00Z").parse().unwrap();
                day.checked_add(SignedDuration::from_secs(offset)).unwrap()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_never_panics(text in "\\PC{0,40}", zone in "\\PC{0,20}") {
        let _ = Schedule::parse(&text, Some(&zone));
    }

    #[test]
    fn searches_never_fail_and_strictly_increase(
        expr in cron_expr(),
        zone in proptest::sample::select(ZONES),
        start in instant(),
    ) {
        let s = Schedule::parse(&expr, Some(zone)).unwrap();
        let mut last = start;
        for _ in 0..12 {
            // An error here would be a caught panic or a search that did not move.
            match s.after(last).unwrap() {
                Some(slot) => {
                    prop_assert!(slot > last, "{expr} in {zone}: {slot} after {last}");
                    last = slot;
                }
                None => break,
            }
        }
    }

    #[test]
    fn walking_back_finds_exactly_the_slots_walking_forward_finds(
        expr in cron_expr(),
        zone in proptest::sample::select(ZONES),
        start in instant(),
        hours in 1i64..72,
    ) {
        let s = Schedule::parse(&expr, Some(zone)).unwrap();
        let end = start.checked_add(SignedDuration::from_hours(hours)).unwrap();
        let fwd = forward(&s, start, end);
        prop_assume!(fwd.len() <= 5_000);
        prop_assert_eq!(backward(&s, start, end), fwd, "{} in {}", expr, zone);
    }

    /// Reconciles at random moments, recording what each decides as the reconciler does: every
    /// slot gets at most one build (one name), and with `All` and no deadline every slot gets one.
    #[test]
    fn reconciling_in_steps_runs_each_slot_once(
        expr in cron_expr(),
        zone in proptest::sample::select(ZONES),
        start in instant(),
        steps in proptest::collection::vec(1i64..20_000, 1..12),
        all in any::<bool>(),
        deadline in proptest::option::of(60u64..7_200),
    ) {
        let s = Schedule::parse(&expr, Some(zone)).unwrap();
        let catch_up = if all { CatchUp::All } else { CatchUp::Latest };
        let mut handled = start;
        let mut now = start;
        let mut created = Vec::new();
        for step in steps {
            now = now.checked_add(SignedDuration::from_secs(step * 7)).unwrap();
            let w = Window { after: handled, now, starting_deadline: deadline.map(Duration::from_secs), catch_up, max_catch_up_runs: 100_000 };
            let due = slots_due(&s, &w, &BTreeSet::new()).unwrap();
            for slot in &due.runnable {
                prop_assert!(*slot > handled && *slot <= now);
            }
            created.extend(due.runnable.iter().copied());
            handled = handled.max(due.decided_through.unwrap_or(handled)).max(due.runnable.last().copied().unwrap_or(handled));
        }
        let mut names: Vec<i64> = created.iter().map(|c| slot_number(*c, s.unit())).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        prop_assert_eq!(names.len(), before, "two builds for one slot: {} in {}", expr, zone);
        let all_slots = forward(&s, start, now);
        for c in &created {
            prop_assert!(all_slots.contains(c), "{c} is not a slot of {expr} in {zone}");
        }
        if all && deadline.is_none() {
            prop_assert_eq!(created, all_slots);
        }
    }
}
