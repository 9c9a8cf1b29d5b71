//! The simulated instance as one thing: its jobs and its scenario runs, which start jobs and wait
//! for them. [`World::advance`] replays both in one time order, instant by instant, so a step that
//! waits for a job ends exactly when the job does and the next step's job starts at that instant.
//! Request handlers lock the world, advance it to now, then read or change it.

use std::sync::Arc;

use super::{
    catalog::Catalog,
    clock::Clock,
    config::InstanceConfig,
    scenarios::Scenarios,
    sim::{Finish, JobError, Sim},
};

/// Safety net: instants replayed in one [`World::advance`] call. Each turn consumes at least one
/// due event, so only a bug could reach it; it would otherwise hang every request.
const MAX_TURNS: usize = 1_000_000;

/// The jobs and the scenarios.
pub(crate) struct World {
    pub(crate) jobs: Sim,
    pub(crate) scenarios: Scenarios,
}

impl World {
    pub(crate) fn new(catalog: Arc<Catalog>, instance: &InstanceConfig, clock: Clock) -> World {
        World {
            scenarios: Scenarios::new(Arc::clone(&catalog), instance, clock),
            jobs: Sim::new(catalog, instance, clock),
        }
    }

    /// The current emulator time.
    pub(crate) fn now(&self) -> u64 {
        self.jobs.now()
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.jobs.clock
    }

    /// Replays everything due by `now`, earliest instant first.
    pub(crate) fn advance(&mut self, now: u64) {
        for _ in 0..MAX_TURNS {
            let next = [self.jobs.next_event(), self.scenarios.next_due()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= now => self.settle(t),
                _ => break,
            }
        }
        self.settle(now);
    }

    /// Processes one instant: the jobs first (a job ending now ends its step now), then the
    /// scenarios, which may start jobs at this same instant.
    fn settle(&mut self, t: u64) {
        self.jobs.advance(t);
        self.scenarios.advance(t, &mut self.jobs);
    }

    /// The time of the next due event, for the scheduler.
    pub(crate) fn next_event(&self) -> Option<u64> {
        [self.jobs.next_event(), self.scenarios.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Aborts a job at `now` (a scenario step waiting for it ends at once).
    pub(crate) fn abort_job(&mut self, project: &str, id: &str, now: u64) -> Result<bool, JobError> {
        let aborted = self.jobs.abort(project, id, now)?;
        self.settle(now);
        Ok(aborted)
    }

    /// Finishes a job at `now` (admin API; a scenario step waiting for it ends at once).
    pub(crate) fn finish_job(
        &mut self,
        project: &str,
        id: &str,
        finish: &Finish,
        now: u64,
    ) -> Result<(), JobError> {
        self.jobs.finish(project, id, finish, now)?;
        self.settle(now);
        Ok(())
    }

    /// Aborts the current run of a scenario at `now`; returns its id.
    pub(crate) fn abort_scenario(&mut self, project: &str, scenario: &str, now: u64) -> Option<String> {
        let aborted = self.scenarios.abort(project, scenario, now, &mut self.jobs);
        self.settle(now);
        aborted
    }

    /// Forgets every job, fire and run.
    pub(crate) fn reset(&mut self) {
        self.jobs.reset();
        self.scenarios.reset();
    }
}
