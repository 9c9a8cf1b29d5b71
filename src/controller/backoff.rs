//! Per-object exponential backoff of failing reconciles (5 s doubling to 5 min, with jitter), reset
//! on success: kube-runtime has none built in.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use rand::Rng;

use crate::sync::lock;

/// The longest delay (before jitter).
const MAX_DELAY: Duration = Duration::from_secs(300);

/// An object whose last failure is older than this is no longer failing: it succeeded without
/// passing through a reset, or it is gone (a deleted object is never reconciled again, so nothing
/// else would remove it). A failing object fails again within the longest delay plus its
/// reconcile, well inside this; forgetting one early would only restart its backoff at 5 s.
const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Stale entries are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Failures in a row, by object uid.
pub(crate) struct ErrorBackoff {
    state: Mutex<State>,
}

struct State {
    /// Failures in a row and when the last one happened.
    failures: HashMap<String, (u32, Instant)>,
    swept: Instant,
}

impl Default for ErrorBackoff {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                failures: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

impl ErrorBackoff {
    /// The delay before the next try of `uid`, counting this failure.
    pub(crate) fn next(&self, uid: &str) -> Duration {
        let n = self.count(uid, Instant::now());
        let base = Duration::from_secs(5)
            .saturating_mul(1 << (n - 1).min(6))
            .min(MAX_DELAY);
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    /// Counts a failure of `uid` at `now`, and sweeps the entries of objects no longer failing.
    fn count(&self, uid: &str, now: Instant) -> u32 {
        let mut state = lock(&self.state);
        if now.saturating_duration_since(state.swept) >= SWEEP_EVERY {
            state
                .failures
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < STALE_AFTER);
            state.swept = now;
        }
        let entry = state.failures.entry(uid.to_string()).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= STALE_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    }

    /// Forgets the failures of `uid`.
    pub(crate) fn reset(&self, uid: &str) {
        lock(&self.state).failures.remove(uid);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state).failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets() {
        let b = ErrorBackoff::default();
        let first = b.next("u");
        assert!(first >= Duration::from_secs(4) && first <= Duration::from_secs(6));
        for _ in 0..10 {
            b.next("u");
        }
        assert!(b.next("u") <= Duration::from_secs(360));
        b.reset("u");
        assert!(b.next("u") <= Duration::from_secs(6));
    }

    #[test]
    fn objects_that_stopped_failing_are_forgotten() {
        let b = ErrorBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.count("gone", t0), 1);
        assert_eq!(b.count("gone", t0 + Duration::from_secs(5)), 2);
        // Another object keeps failing at its longest delay: it stays counted.
        let mut t = t0;
        for n in 1..=4 {
            assert_eq!(b.count("failing", t), n);
            t += MAX_DELAY + Duration::from_secs(60);
        }
        assert_eq!(b.len(), 1, "the object that stopped failing was swept");
        assert_eq!(b.count("failing", t), 5);
        // One failure after a long quiet spell starts again from the first delay.
        assert_eq!(b.count("failing", t + STALE_AFTER), 1);
    }
}
