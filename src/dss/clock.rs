//! How far DSS's clock is from ours, learned from the `Date` header of its answers.
//!
//! An answer's `Date` (whole seconds) was written by DSS at some moment between the moment the
//! request was sent and the moment the answer arrived, both on our clock. So each answer bounds
//! `DSS time − our time` to `[date − received, date + 1 s − sent]`; answers together narrow the
//! bounds to about a second. Callers that compare a time DSS recorded (a job's initiation) with one
//! of ours (when a start request was recorded) use the bounds instead of a fixed tolerance.
//!
//! Clocks drift and may be stepped: the bounds widen by [`DRIFT_PER_HOUR`] as they age, and a sample
//! that contradicts them (a stepped clock) replaces them.

use std::{
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::sync::lock;

/// How much two clocks may drift apart in an hour without either being stepped.
pub const DRIFT_PER_HOUR: Duration = Duration::from_millis(500);

/// Bounds of `DSS time − our time`, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    /// The least it can be.
    pub min_ms: i64,
    /// The most it can be.
    pub max_ms: i64,
}

/// The running estimate.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    estimate: Mutex<Option<(ClockOffset, Instant)>>,
}

impl Clock {
    /// Learns from one answer: its `Date` header's value (seconds since the epoch), and when the
    /// request was sent and the answer received, on our wall clock.
    pub(crate) fn observe(&self, date_s: i64, sent: SystemTime, received: SystemTime) {
        let (Some(sent), Some(received)) = (epoch_ms(sent), epoch_ms(received)) else {
            return;
        };
        let date = date_s.saturating_mul(1000);
        let sample = ClockOffset {
            min_ms: date - received,
            max_ms: date + 1000 - sent,
        };
        let mut estimate = lock(&self.estimate);
        let merged = match estimate.as_ref() {
            Some((old, at)) => {
                let old = widened(*old, at.elapsed());
                let both = ClockOffset {
                    min_ms: old.min_ms.max(sample.min_ms),
                    max_ms: old.max_ms.min(sample.max_ms),
                };
                // Disjoint bounds: a clock was stepped. The newest answer is the truth now.
                if both.min_ms <= both.max_ms { both } else { sample }
            }
            None => sample,
        };
        *estimate = Some((merged, Instant::now()));
    }

    /// The bounds now, when an answer carried a `Date`.
    pub(crate) fn offset(&self) -> Option<ClockOffset> {
        lock(&self.estimate)
            .as_ref()
            .map(|(o, at)| widened(*o, at.elapsed()))
    }
}

/// `o` widened by the drift possible over `age`.
fn widened(o: ClockOffset, age: Duration) -> ClockOffset {
    let drift = i64::try_from(age.as_millis() * DRIFT_PER_HOUR.as_millis() / 3_600_000).unwrap_or(i64::MAX);
    ClockOffset {
        min_ms: o.min_ms.saturating_sub(drift),
        max_ms: o.max_ms.saturating_add(drift),
    }
}

fn epoch_ms(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn answers_narrow_the_offset_and_a_stepped_clock_starts_over() {
        let clock = Clock::default();
        assert_eq!(clock.offset(), None, "no answer yet");
        // DSS is 5 s ahead. Sent at 1000.200 s, answered at 1000.300 s, stamped 1005 s.
        clock.observe(1005, at(1_000_200), at(1_000_300));
        assert_eq!(
            clock.offset(),
            Some(ClockOffset {
                min_ms: 4_700,
                max_ms: 5_800
            })
        );
        // A later answer stamped just after its second began narrows the top.
        clock.observe(1011, at(1_005_950), at(1_006_050));
        assert_eq!(
            clock.offset(),
            Some(ClockOffset {
                min_ms: 4_950,
                max_ms: 5_800
            })
        );
        // DSS's clock was stepped back an hour: the old bounds are dropped.
        clock.observe(3_412, at(7_000_000), at(7_000_100));
        let o = clock.offset().unwrap();
        assert_eq!((o.min_ms, o.max_ms), (-3_588_100, -3_587_000));
    }

    #[test]
    fn bounds_widen_as_they_age() {
        let o = ClockOffset {
            min_ms: 0,
            max_ms: 1000,
        };
        let w = widened(o, Duration::from_secs(7200));
        assert_eq!((w.min_ms, w.max_ms), (-1000, 2000));
    }
}
