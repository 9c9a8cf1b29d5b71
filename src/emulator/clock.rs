//! Emulator time: a monotonic clock in microseconds since start, mapped to epoch milliseconds for
//! answers, the `timeScale` arithmetic, and DSS's log line format. A leaf module shared by the job
//! and scenario simulations.

use std::time::Instant;

use chrono::{DateTime, Utc};

/// Maps the monotonic emulator time to epoch milliseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
    origin_epoch_ms: i64,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            origin_epoch_ms: Utc::now().timestamp_millis(),
        }
    }

    /// Microseconds since the emulator started.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The instant of an emulator time, for timers.
    pub(crate) fn instant(&self, t_us: u64) -> Instant {
        self.origin + std::time::Duration::from_micros(t_us)
    }

    /// Epoch milliseconds of an emulator time.
    pub(crate) fn epoch_ms(&self, t_us: u64) -> i64 {
        self.origin_epoch_ms
            .saturating_add(i64::try_from(t_us / 1000).unwrap_or(i64::MAX))
    }

    pub(crate) fn opt_ms(&self, t: Option<u64>) -> i64 {
        t.map_or(0, |t| self.epoch_ms(t))
    }
}

/// Formats epoch milliseconds with a pattern, in UTC.
pub(crate) fn fmt_ms(ms: i64, pattern: &str) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format(pattern)
        .to_string()
}

/// A configured duration in milliseconds, divided by the time scale, in microseconds.
pub(crate) fn scaled_us(ms: u64, time_scale: f64) -> u64 {
    let us = ms as f64 * 1000.0 / time_scale;
    if us.is_finite() && us >= 0.0 {
        us.min(u64::MAX as f64 / 4.0) as u64
    } else {
        0
    }
}

/// Appends one line in DSS's log format: `[YYYY/MM/DD-HH:MM:SS.mmm] [thread] [LEVEL] [logger] - msg`.
pub(crate) fn log_line(out: &mut String, epoch_ms: i64, thread: &str, level: &str, logger: &str, msg: &str) {
    out.push_str(&format!(
        "[{}] [{thread}] [{level}] [{logger}] - {msg}\n",
        fmt_ms(epoch_ms, "%Y/%m/%d-%H:%M:%S%.3f")
    ));
}
