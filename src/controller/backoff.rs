//! Per-object exponential backoff of failing reconciles (5 s doubling to 5 min, with jitter), reset
//! on success: kube-runtime has none built in.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use rand::Rng;

use crate::sync::lock;

/// Failures in a row, by object uid.
#[derive(Default)]
pub(crate) struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// The delay before the next try of `uid`, counting this failure.
    pub(crate) fn next(&self, uid: &str) -> Duration {
        let n = {
            let mut f = lock(&self.failures);
            let n = f.entry(uid.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let base = Duration::from_secs(5)
            .saturating_mul(1 << (n - 1).min(6))
            .min(Duration::from_secs(300));
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    /// Forgets the failures of `uid`.
    pub(crate) fn reset(&self, uid: &str) {
        lock(&self.failures).remove(uid);
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
}
