//! [`JobWaiter`]: polls a job until it reaches a terminal state, like dataikuapi's `DSSJobWaiter`, with
//! an overall timeout and a bounded tolerance for transient errors.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    DssClient, Error, JobStatus,
    poll::{Poll, PollEnd, Poller},
};

/// Polls a job's status with dataikuapi's backoff: the first poll at once, then sleeps of
/// `initial * factor^(n-1)` capped at `max_delay` (defaults 0.2 s, x1.1, 15 s).
///
/// Unlike the Python waiter it stops after `timeout` (when set) with [`Error::WaitTimeout`], and it
/// tolerates up to `max_transient_errors` consecutive retryable errors (5xx, 429, timeouts, transport);
/// a non-retryable error ends the wait at once.
#[derive(Clone, Debug, Default)]
pub struct JobWaiter {
    poller: Poller,
    timeout: Option<Duration>,
}

impl JobWaiter {
    /// A waiter with dataikuapi's backoff, no overall timeout, and up to 5 consecutive transient errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first sleep.
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.poller.initial_delay = delay;
        self
    }

    /// The growth of each sleep over the previous one (values below 1 are treated as 1).
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.poller.factor = Poller::sane_factor(factor);
        self
    }

    /// The longest sleep.
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.poller.max_delay = delay;
        self
    }

    /// Gives up after this long (`None`: wait forever, as dataikuapi does).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many retryable errors in a row are tolerated before the last one is returned.
    pub fn with_max_transient_errors(mut self, count: u32) -> Self {
        self.poller.max_transient_errors = count;
        self
    }

    /// The sleep before poll number `n + 1` (`n` starting at 1), without jitter.
    pub fn delay(&self, n: u32) -> Duration {
        self.poller.delay(n)
    }

    /// Polls until the job is `DONE`, `FAILED` or `ABORTED` and returns that status (a `FAILED` job is
    /// not an error here: look at [`JobStatus::state`]).
    #[tracing::instrument(name = "dss.wait", level = "debug", skip_all, fields(project = project_key, job_id))]
    pub async fn wait(
        &self,
        client: &DssClient,
        project_key: &str,
        job_id: &str,
    ) -> Result<JobStatus, Error> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let end = self
            .poller
            .until(deadline, |_| async move {
                let status = client.get_status(project_key, job_id).await?;
                if status.state.is_terminal() {
                    return Ok(Poll::Ready(status));
                }
                tracing::debug!(state = %status.state, "job not finished yet");
                Ok(Poll::Pending(status.state))
            })
            .await?;
        match end {
            PollEnd::Ready(status) => Ok(status),
            PollEnd::TimedOut(last_state) => Err(Error::WaitTimeout {
                job_id: job_id.to_owned(),
                last_state,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_dataikuapi() {
        let waiter = JobWaiter::new();
        assert_eq!(waiter.delay(1), Duration::from_millis(200));
        assert!((waiter.delay(2).as_secs_f64() - 0.22).abs() < 1e-9);
        assert!((waiter.delay(3).as_secs_f64() - 0.242).abs() < 1e-9);
        assert_eq!(waiter.delay(47), Duration::from_secs(15));
        assert!(waiter.delay(46) < Duration::from_secs(15));
        assert_eq!(waiter.delay(u32::MAX), Duration::from_secs(15));
        // About 25 polls in the first 20 s.
        let mut total = 0.0;
        let mut polls = 1;
        while total + waiter.delay(polls).as_secs_f64() <= 20.0 {
            total += waiter.delay(polls).as_secs_f64();
            polls += 1;
        }
        assert!((24..=26).contains(&polls), "{polls}");
        let flat = JobWaiter::new().with_factor(0.5);
        assert_eq!(flat.delay(10), Duration::from_millis(200));
    }
}
