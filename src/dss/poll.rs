//! The poll loop of the waiters ([`JobWaiter`](super::JobWaiter), [`ScenarioWaiter`](super::ScenarioWaiter)):
//! dataikuapi's backoff, a deadline that no poll or sleep outlives, and a bounded tolerance for
//! transient errors (a `Retry-After` lengthens the next sleep).

use std::{future::Future, time::Duration};

use tokio::time::Instant;

use super::Error;

/// What one poll saw: the awaited result, or something still in progress.
pub(crate) enum Poll<T, S> {
    Ready(T),
    Pending(S),
}

/// How polling ended without an error.
pub(crate) enum PollEnd<T, S> {
    Ready(T),
    /// The deadline passed; the last pending observation, if a poll succeeded.
    TimedOut(Option<S>),
}

/// The backoff and the error tolerance of a waiter.
#[derive(Clone, Debug)]
pub(crate) struct Poller {
    pub(crate) initial_delay: Duration,
    pub(crate) factor: f64,
    pub(crate) max_delay: Duration,
    pub(crate) max_transient_errors: u32,
}

impl Default for Poller {
    /// dataikuapi's `_ExponentialBackoff` (0.2 s, x1.1, 15 s) and up to 5 transient errors in a row.
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(200),
            factor: 1.1,
            max_delay: Duration::from_secs(15),
            max_transient_errors: 5,
        }
    }
}

impl Poller {
    /// A growth factor as given, or 1 when it is below 1 or not a number.
    pub(crate) fn sane_factor(factor: f64) -> f64 {
        if factor.is_finite() && factor >= 1.0 {
            factor
        } else {
            1.0
        }
    }

    /// The sleep before poll number `n + 1` (`n` starting at 1), without jitter.
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.factor.powi(exp);
        let max = self.max_delay.as_secs_f64();
        Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
    }

    /// Polls (the first time at once, `poll` gets the poll's number from 1) until it is ready, a
    /// non-retryable error or too many retryable ones in a row occur, or `deadline` passes.
    pub(crate) async fn until<T, S, F, Fut>(
        &self,
        deadline: Option<Instant>,
        mut poll: F,
    ) -> Result<PollEnd<T, S>, Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Poll<T, S>, Error>>,
    {
        let mut last: Option<S> = None;
        let mut errors = 0u32;
        let mut n = 0u32;
        loop {
            n = n.saturating_add(1);
            let result = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, poll(n)).await {
                    Ok(result) => result,
                    Err(_) => return Ok(PollEnd::TimedOut(last)),
                },
                None => poll(n).await,
            };
            let mut next_delay = self.delay(n);
            match result {
                Ok(Poll::Ready(value)) => return Ok(PollEnd::Ready(value)),
                Ok(Poll::Pending(seen)) => {
                    errors = 0;
                    last = Some(seen);
                }
                Err(err) if err.is_retryable() && errors < self.max_transient_errors => {
                    errors += 1;
                    tracing::debug!(error = %err, errors, "transient error while waiting");
                    if let Some(retry_after) = err.retry_after() {
                        next_delay = next_delay.max(retry_after);
                    }
                }
                Err(err) => return Err(err),
            }
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(PollEnd::TimedOut(last));
                }
                // Never sleep past the deadline: make one last poll at it instead.
                next_delay = next_delay.min(deadline - now);
            }
            tokio::time::sleep(next_delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dss::Operation;

    #[test]
    fn backoff_follows_dataikuapi() {
        let poller = Poller::default();
        assert_eq!(poller.delay(1), Duration::from_millis(200));
        assert!((poller.delay(2).as_secs_f64() - 0.22).abs() < 1e-9);
        assert_eq!(poller.delay(47), Duration::from_secs(15));
        assert_eq!(poller.delay(u32::MAX), Duration::from_secs(15));
        assert_eq!(Poller::sane_factor(0.5), 1.0);
        assert_eq!(Poller::sane_factor(f64::NAN), 1.0);
        assert_eq!(Poller::sane_factor(2.0), 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_tolerated_up_to_the_limit_and_reset_by_progress() {
        let poller = Poller {
            max_transient_errors: 2,
            ..Poller::default()
        };
        let transient = || Error::Timeout {
            operation: Operation::GetStatus,
        };
        // error, error, pending (resets), error, error, ready: tolerated.
        let script = std::sync::Mutex::new(vec![
            Err(transient()),
            Err(transient()),
            Ok(Poll::Pending(1)),
            Err(transient()),
            Err(transient()),
            Ok(Poll::Ready("done")),
        ]);
        let end = poller
            .until(None, |_| {
                let next = script.lock().unwrap().remove(0);
                async move { next }
            })
            .await
            .unwrap();
        assert!(matches!(end, PollEnd::Ready("done")));
        // Three in a row: the third is returned.
        let script = std::sync::Mutex::new(vec![Err(transient()), Err(transient()), Err(transient())]);
        let end = poller
            .until(None, |_| {
                let next: Result<Poll<(), ()>, Error> = script.lock().unwrap().remove(0);
                async move { next }
            })
            .await;
        assert!(matches!(end, Err(Error::Timeout { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_the_wait_with_the_last_observation() {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(3);
        let end = Poller::default()
            .until(Some(deadline), |n| async move {
                Ok::<_, Error>(Poll::<(), u32>::Pending(n))
            })
            .await
            .unwrap();
        let PollEnd::TimedOut(Some(last)) = end else {
            panic!("not a timeout")
        };
        assert!(last > 5, "{last}");
        assert!(Instant::now() - started <= Duration::from_secs(3) + Duration::from_millis(1));
    }
}
