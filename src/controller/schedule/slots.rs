//! Slots: which cron slots of a schedule are due between two instants, and the catch-up decision.
//! Pure (no IO, no clock): the reconciler passes `now` and the last handled slot in.
//!
//! The cron expression is parsed and evaluated by `croner` on jiff's zoned times, in the schedule's
//! IANA time zone (from the database built into the binary). Daylight saving time, as the library
//! defines it and the table tests below pin down:
//! - spring-forward gap: a fixed-time slot inside the gap (e.g. `30 2 * * *` on the night the clock
//!   jumps from 02:00 to 03:00) runs once, at the first valid instant after the gap (03:00); the
//!   slots of an interval schedule (`0 * * * *`) inside the gap do not exist, so its first slot after
//!   the gap stands for them;
//! - fall-back fold: a fixed-time slot in the repeated hour runs once, at its first occurrence; an
//!   interval schedule follows real time (`*/30 * * * *` has four slots in the two passes of 02:xx).
//!
//! Every search goes through [`Schedule::search`], which catches a panic of the library (older
//! croner releases panicked on a slot in a DST gap, croner-rust#16) and checks that each answer
//! moves in the searched direction, so a library fault becomes an error, never a crashed operator
//! or a loop.

use std::{
    collections::BTreeSet,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::OnceLock,
    time::Duration,
};

use croner::{
    Cron,
    errors::CronError,
    parser::{CronParser, Seconds, Year},
};
use jiff::{
    SignedDuration, Timestamp,
    tz::{TimeZone, TimeZoneDatabase},
};

use crate::crd::CatchUp;

/// Missed and skipped slots counted in one decision at most: past it, counting stops (the slots
/// are still decided, and the counts are lower bounds). Bounds the work after a long downtime of a
/// schedule of a few seconds.
pub(crate) const COUNT_LIMIT: u64 = 10_000;

/// The unit of a slot in the names of builds: minutes, or seconds for a 6-field schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotUnit {
    /// 5 fields or a macro: at most one slot per minute.
    Minute,
    /// 6 fields (a leading seconds field): up to one slot per second.
    Second,
}

/// Why a schedule cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidSchedule {
    /// The cron expression does not parse.
    #[error("spec.schedule {schedule:?} is not a valid cron expression: {reason}")]
    Cron {
        /// The expression.
        schedule: String,
        /// What is wrong.
        reason: String,
    },
    /// The time zone is not in the IANA database.
    #[error("spec.timeZone {0:?} is not a time zone of the IANA database (e.g. Europe/Paris, UTC)")]
    TimeZone(String),
    /// The expression has no slot after a given time (e.g. `0 0 30 2 *`).
    #[error("spec.schedule {0:?} has no slot in the future (a date that never comes, such as February 30?)")]
    NeverDue(String),
    /// The library failed while searching slots.
    #[error("spec.schedule {schedule:?} cannot be evaluated near {at}")]
    Search {
        /// The expression.
        schedule: String,
        /// Where the search started.
        at: Timestamp,
    },
}

impl InvalidSchedule {
    /// The PascalCase condition reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Cron { .. } | Self::NeverDue(_) | Self::Search { .. } => "InvalidSchedule",
            Self::TimeZone(_) => "InvalidTimeZone",
        }
    }
}

/// A parsed schedule: the cron expression and its time zone.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    text: String,
    cron: Cron,
    tz: TimeZone,
    unit: SlotUnit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Forward,
    Backward,
}

/// The IANA database the binary carries (the same rules on every replica and in every test).
fn zones() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// The time zone of a schedule: `None` is UTC.
pub(crate) fn time_zone(name: Option<&str>) -> Result<TimeZone, InvalidSchedule> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(name) => zones()
            .get(name)
            .map_err(|_| InvalidSchedule::TimeZone(name.to_string())),
    }
}

impl Schedule {
    /// Parses a cron expression (5 fields, 6 with leading seconds, or a macro) in a time zone.
    pub(crate) fn parse(schedule: &str, zone: Option<&str>) -> Result<Schedule, InvalidSchedule> {
        let text = schedule.trim();
        let invalid = |reason: String| InvalidSchedule::Cron {
            schedule: schedule.to_string(),
            reason,
        };
        let fields = text.split_whitespace().count();
        let unit = match (text.starts_with('@'), fields) {
            (true, 1) | (false, 5) => SlotUnit::Minute,
            (false, 6) => SlotUnit::Second,
            (true, _) => return Err(invalid("a macro such as @daily stands alone".into())),
            (false, n) => return Err(invalid(format!("expected 5 or 6 fields, found {n}"))),
        };
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = catch_unwind(AssertUnwindSafe(|| parser.parse(text)))
            .map_err(|_| invalid("the cron library failed on it".into()))?
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Schedule {
            text: text.to_string(),
            cron,
            tz: time_zone(zone)?,
            unit,
        })
    }

    /// The unit of a slot in build names.
    pub(crate) fn unit(&self) -> SlotUnit {
        self.unit
    }

    /// The time zone.
    pub(crate) fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The first slot after `t`.
    pub(crate) fn after(&self, t: Timestamp) -> Result<Option<Timestamp>, InvalidSchedule> {
        self.search(t, false, Direction::Forward)
    }

    /// The last slot at or before `t`.
    pub(crate) fn at_or_before(&self, t: Timestamp) -> Result<Option<Timestamp>, InvalidSchedule> {
        self.search(t, true, Direction::Backward)
    }

    /// The last slot before `t`.
    pub(crate) fn before(&self, t: Timestamp) -> Result<Option<Timestamp>, InvalidSchedule> {
        self.search(t, false, Direction::Backward)
    }

    /// One guarded search from `t` (taken to the whole second below: slots are whole seconds).
    fn search(
        &self,
        t: Timestamp,
        inclusive: bool,
        dir: Direction,
    ) -> Result<Option<Timestamp>, InvalidSchedule> {
        let failed = || InvalidSchedule::Search {
            schedule: self.text.clone(),
            at: t,
        };
        let from = Timestamp::from_second(t.as_second()).map_err(|_| failed())?;
        // A backward search from a fractional instant includes its whole second, which is earlier.
        let inclusive = inclusive || (dir == Direction::Backward && from < t);
        let zoned = from.to_zoned(self.tz.clone());
        let found = catch_unwind(AssertUnwindSafe(|| match dir {
            Direction::Forward => self.cron.find_next_occurrence(&zoned, inclusive),
            Direction::Backward => self.cron.find_previous_occurrence(&zoned, inclusive),
        }))
        .map_err(|_| failed())?;
        let slot = match found {
            Ok(z) => z.timestamp(),
            Err(CronError::TimeSearchLimitExceeded) => return Ok(None),
            Err(_) => return Err(failed()),
        };
        let moved = match (dir, inclusive) {
            (Direction::Forward, _) => slot > t,
            (Direction::Backward, true) => slot <= t,
            (Direction::Backward, false) => slot < t,
        };
        if moved { Ok(Some(slot)) } else { Err(failed()) }
    }
}

/// Why missed slots were not run (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MissedSlots {
    /// `catchUp: Latest` runs only the newest missed slot.
    CatchUpLatest,
    /// `catchUp: All` runs at most `maxCatchUpRuns`.
    MaxCatchUpRuns,
}

impl MissedSlots {
    /// Every reason, for metric pre-registration.
    pub(crate) const ALL: [MissedSlots; 2] = [Self::CatchUpLatest, Self::MaxCatchUpRuns];

    /// The PascalCase label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::CatchUpLatest => "CatchUpLatest",
            Self::MaxCatchUpRuns => "MaxCatchUpRuns",
        }
    }
}

/// The slots to decide on in one reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The last handled slot: only later slots are due.
    pub(crate) after: Timestamp,
    /// Now: slots up to and including it are due.
    pub(crate) now: Timestamp,
    /// `startingDeadlineSeconds`: a slot later than this is skipped.
    pub(crate) starting_deadline: Option<Duration>,
    /// Which missed slots run.
    pub(crate) catch_up: CatchUp,
    /// With `All`, how many missed slots run at most (the newest).
    pub(crate) max_catch_up_runs: usize,
}

/// The decision on the slots of a window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// Slots to start, oldest first: the newest one (`Latest`) or up to `maxCatchUpRuns` (`All`).
    pub(crate) runnable: Vec<Timestamp>,
    /// Slots within the deadline that the catch-up policy does not run.
    pub(crate) missed: u64,
    /// Slots older than the starting deadline.
    pub(crate) skipped: u64,
    /// The newest skipped slot.
    pub(crate) newest_skipped: Option<Timestamp>,
    /// The newest missed or skipped slot: every slot up to it is decided, whatever happens to the
    /// runnable ones.
    pub(crate) decided_through: Option<Timestamp>,
    /// Counting stopped at [`COUNT_LIMIT`]: `missed` and `skipped` are lower bounds.
    pub(crate) counts_capped: bool,
    /// The first slot after `now`.
    pub(crate) next: Option<Timestamp>,
}

/// Decides on the slots in `(window.after, window.now]`: which run, which are missed (beyond the
/// catch-up policy) and which are skipped (older than the starting deadline). Walks back from `now`,
/// so the work is bounded by the runs and [`COUNT_LIMIT`], not by the length of a downtime.
///
/// A slot in `built` already has its build (created by a reconcile whose status write was refused,
/// or by `schedules run`): it is decided, but never counted as missed or skipped.
pub(crate) fn slots_due(
    schedule: &Schedule,
    w: &Window,
    built: &BTreeSet<Timestamp>,
) -> Result<Due, InvalidSchedule> {
    let mut due = Due {
        next: schedule.after(w.now)?,
        ..Due::default()
    };
    if w.now <= w.after {
        return Ok(due);
    }
    let edge = w
        .starting_deadline
        .and_then(|d| SignedDuration::try_from(d).ok())
        .and_then(|d| w.now.checked_sub(d).ok());
    let runs = match w.catch_up {
        CatchUp::Latest => 1,
        CatchUp::All => w.max_catch_up_runs.max(1),
    };
    let mut newest_first = Vec::new();
    let mut cursor = schedule.at_or_before(w.now)?;
    while let Some(slot) = cursor {
        if slot <= w.after || edge.is_some_and(|e| slot < e) {
            break;
        }
        if newest_first.len() < runs {
            newest_first.push(slot);
        } else {
            due.decided_through.get_or_insert(slot);
            if !built.contains(&slot) {
                due.missed += 1;
                if due.missed >= COUNT_LIMIT {
                    // Every older slot is decided by `decided_through` too; stop counting.
                    due.counts_capped = true;
                    break;
                }
            }
        }
        cursor = schedule.before(slot)?;
    }
    if let Some(edge) = edge.filter(|e| *e > w.after && !due.counts_capped) {
        let mut cursor = schedule.before(edge)?;
        while let Some(slot) = cursor {
            if slot <= w.after {
                break;
            }
            due.decided_through.get_or_insert(slot);
            if !built.contains(&slot) {
                due.newest_skipped.get_or_insert(slot);
                due.skipped += 1;
                if due.skipped >= COUNT_LIMIT {
                    due.counts_capped = true;
                    break;
                }
            }
            cursor = schedule.before(slot)?;
        }
    }
    newest_first.reverse();
    due.runnable = newest_first;
    Ok(due)
}

/// The slot of a build name: `slot` in the schedule's naming unit (Unix minutes or seconds).
pub(crate) fn slot_number(slot: Timestamp, unit: SlotUnit) -> i64 {
    match unit {
        SlotUnit::Minute => slot.as_second().div_euclid(60),
        SlotUnit::Second => slot.as_second(),
    }
}

/// `t` rounded down to the schedule's naming unit (a slot given by hand names the same build as the
/// cron slot of that minute or second).
pub(crate) fn truncate(t: Timestamp, unit: SlotUnit) -> Timestamp {
    let seconds = match unit {
        SlotUnit::Minute => t.as_second().div_euclid(60) * 60,
        SlotUnit::Second => t.as_second(),
    };
    Timestamp::from_second(seconds).unwrap_or(t)
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
