//! [`ScenarioWaiter`]: waits for the run of a trigger fire, then for that run to finish, as
//! dataikuapi's `run_and_wait` does (`wait_for_scenario_run`, then `DSSScenarioRunWaiter`), with an
//! overall timeout and a bounded tolerance for transient errors.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    DssClient, Error, ScenarioRun, ScenarioRunDetails, TriggerFire,
    poll::{Poll, PollEnd, Poller},
};

/// How a wait ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ScenarioWait {
    /// The run finished, whatever its outcome: look at the run's `outcome`.
    Finished(ScenarioRunDetails),
    /// DSS cancelled the trigger fire (the scenario was already running, or another trigger fired):
    /// it will never have a run.
    Cancelled(TriggerFire),
    /// The timeout passed first; the run as last seen, if it had started.
    TimedOut(Option<ScenarioRun>),
}

/// Waits with dataikuapi's backoff (the first poll at once, then 0.2 s growing x1.1 up to 15 s).
///
/// While a fire has no run yet, it re-reads the fire every `fire_refresh_every` polls (10, as the
/// Python client does) to notice a cancellation. Unlike the Python client it gives up after
/// `timeout` (when set), and tolerates up to `max_transient_errors` retryable errors in a row.
#[derive(Clone, Debug)]
pub struct ScenarioWaiter {
    poller: Poller,
    timeout: Option<Duration>,
    fire_refresh_every: u32,
}

impl Default for ScenarioWaiter {
    fn default() -> Self {
        Self {
            poller: Poller::default(),
            timeout: None,
            fire_refresh_every: 10,
        }
    }
}

/// What the fire phase found.
enum FireEnd {
    Run(ScenarioRun),
    Cancelled(TriggerFire),
}

impl ScenarioWaiter {
    /// A waiter with dataikuapi's backoff and fire refresh, no overall timeout, and up to 5
    /// consecutive transient errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first sleep.
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.poller.initial_delay = delay;
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

    /// Re-read the fire every `polls` polls while it has no run (at least 1).
    pub fn with_fire_refresh_every(mut self, polls: u32) -> Self {
        self.fire_refresh_every = polls.max(1);
        self
    }

    /// Waits for the run `fire` starts, then for it to finish.
    #[tracing::instrument(name = "dss.wait_for_fire", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id, trigger_run_id = fire.trigger_run_id))]
    pub async fn wait_for_fire(
        &self,
        client: &DssClient,
        project_key: &str,
        scenario_id: &str,
        fire: &TriggerFire,
    ) -> Result<ScenarioWait, Error> {
        if fire.cancelled {
            return Ok(ScenarioWait::Cancelled(fire.clone()));
        }
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let (trigger_id, trigger_run_id) = (fire.trigger_id.as_str(), fire.trigger_run_id.as_str());
        let refresh = self.fire_refresh_every;
        let end = self
            .poller
            .until(deadline, |n| async move {
                if n % refresh == 0 {
                    let again = client
                        .get_trigger_fire(project_key, scenario_id, trigger_id, trigger_run_id)
                        .await?;
                    if again.cancelled {
                        return Ok(Poll::Ready(FireEnd::Cancelled(again)));
                    }
                }
                let run = client
                    .get_run_for_trigger(project_key, scenario_id, trigger_id, trigger_run_id)
                    .await?;
                Ok(match run {
                    Some(run) => Poll::Ready(FireEnd::Run(run)),
                    None => Poll::Pending(()),
                })
            })
            .await?;
        match end {
            PollEnd::Ready(FireEnd::Run(run)) => {
                self.until_finished(client, project_key, scenario_id, &run.run_id, deadline)
                    .await
            }
            PollEnd::Ready(FireEnd::Cancelled(fire)) => Ok(ScenarioWait::Cancelled(fire)),
            PollEnd::TimedOut(_) => Ok(ScenarioWait::TimedOut(None)),
        }
    }

    /// Waits for a run to finish.
    #[tracing::instrument(name = "dss.wait_for_run", level = "debug", skip_all, fields(project = project_key, scenario = scenario_id, run_id))]
    pub async fn wait_for_run(
        &self,
        client: &DssClient,
        project_key: &str,
        scenario_id: &str,
        run_id: &str,
    ) -> Result<ScenarioWait, Error> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        self.until_finished(client, project_key, scenario_id, run_id, deadline)
            .await
    }

    async fn until_finished(
        &self,
        client: &DssClient,
        project_key: &str,
        scenario_id: &str,
        run_id: &str,
        deadline: Option<Instant>,
    ) -> Result<ScenarioWait, Error> {
        let end = self
            .poller
            .until(deadline, |_| async move {
                let details = client.get_scenario_run(project_key, scenario_id, run_id).await?;
                if details.run.is_running() {
                    tracing::debug!("scenario run not finished yet");
                    return Ok(Poll::Pending(details.run));
                }
                Ok(Poll::Ready(details))
            })
            .await?;
        Ok(match end {
            PollEnd::Ready(details) => ScenarioWait::Finished(details),
            PollEnd::TimedOut(last) => ScenarioWait::TimedOut(last),
        })
    }
}
