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
        if self.scenarios.idle() {
            // Nothing waits for a job: the jobs replay on their own, in one go.
            self.settle(now);
            return;
        }
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

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::emulator::{
        config::Config,
        scenarios::{FireState, Outcome},
        sim::JobState,
    };

    /// Durations in ms at time scale 1, start delay 100 ms, one activity slot.
    const CONFIG: &str =
        "instance: {maxRunningActivities: 1, scenarioStartDelayMs: 100, maxScenarioRunsRetained: 3}
projects:
- projectKey: P
  datasets:
  - {name: a, build: {durationMs: 200}}
  - {name: w, build: {durationMs: 50, warnings: 2}}
  - {name: bad, build: {durationMs: 50, outcome: FAILED, message: boom}}
  - {name: other, build: {durationMs: 1000}}
  scenarios:
  - id: S
    steps:
    - {type: build, outputs: [{id: a}]}
    - {type: wait, durationMs: 300}
  - id: WARN
    steps:
    - {type: build, outputs: [{id: w}]}
    - {type: warn, message: careful}
  - id: FAIL
    steps:
    - {type: build, outputs: [{id: bad}]}
    - {type: wait, durationMs: 10}
  - id: CHECK
    steps:
    - {type: fail, message: no rows, code: ERR_CHECK, durationMs: 5}
    - {type: wait, durationMs: 10}
  - id: EMPTY
";

    fn world() -> World {
        let config: Config = serde_yaml::from_str(CONFIG).unwrap();
        let catalog = Arc::new(Catalog::build(&config).unwrap());
        World::new(catalog, &config.instance, Clock::new())
    }

    const MS: u64 = 1000;

    fn fire(w: &mut World, scenario: &str, now: u64) -> String {
        w.advance(now);
        let mut params = Map::new();
        params.insert("marker".into(), "m1".into());
        w.scenarios
            .fire("P", scenario, params, "k", now)
            .trigger_run_id
            .clone()
    }

    fn runs<'a>(w: &'a World, scenario: &str) -> Vec<&'a crate::emulator::scenarios::Run> {
        w.scenarios
            .state("P", scenario)
            .map(|s| s.runs.iter().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_fire_starts_a_run_after_the_delay_and_a_build_step_ends_with_its_job() {
        let mut w = world();
        let trigger = fire(&mut w, "S", 0);
        w.advance(99 * MS);
        assert!(runs(&w, "S").is_empty());
        w.advance(100 * MS);
        let run = runs(&w, "S")[0];
        assert_eq!(
            (run.start_us, run.trigger_run_id.as_str()),
            (100 * MS, trigger.as_str())
        );
        assert_ne!(run.id, trigger, "a trigger run id is never a run id");
        let job = run.steps[0].job.clone().unwrap();
        assert_eq!(w.jobs.get("P", &job).unwrap().def["triggeredFrom"], "SCENARIO");
        // The job ends at 300 ms, so the wait step starts then and ends at 600 ms.
        w.advance(599 * MS);
        let run = runs(&w, "S")[0];
        assert_eq!(run.steps[0].end_us, Some(300 * MS));
        assert_eq!(run.steps[1].start_us, 300 * MS);
        assert!(run.running());
        w.advance(10_000 * MS);
        let run = runs(&w, "S")[0];
        assert_eq!(
            (run.end_us, run.outcome),
            (Some(600 * MS), Some(Outcome::Success))
        );
        assert!(w.next_event().is_none());
    }

    #[test]
    fn a_fire_due_while_the_scenario_runs_is_cancelled_then() {
        let mut w = world();
        let first = fire(&mut w, "S", 0);
        let second = fire(&mut w, "S", 50 * MS);
        w.advance(10_000 * MS);
        let state = w.scenarios.state("P", "S").unwrap();
        assert!(matches!(
            state.fire(&first).unwrap().state,
            FireState::Started { .. }
        ));
        assert_eq!(
            state.fire(&second).unwrap().state,
            FireState::Cancelled { at_us: 150 * MS }
        );
        assert_eq!(runs(&w, "S").len(), 1);
    }

    #[test]
    fn a_fire_due_when_a_run_ends_starts_the_next_run() {
        let mut w = world();
        fire(&mut w, "S", 0);
        // The first run ends at 600 ms; a fire at 500 ms is due at that very instant.
        let second = fire(&mut w, "S", 500 * MS);
        w.advance(10_000 * MS);
        let all = runs(&w, "S");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].trigger_run_id, second);
        assert_eq!(all[1].start_us, 600 * MS);
    }

    #[test]
    fn outcomes_follow_the_worst_step_and_a_failure_stops_the_run() {
        let mut w = world();
        fire(&mut w, "WARN", 0);
        fire(&mut w, "FAIL", 0);
        fire(&mut w, "CHECK", 0);
        fire(&mut w, "EMPTY", 0);
        w.advance(10_000 * MS);
        let warn = runs(&w, "WARN")[0];
        let outcomes: Vec<_> = warn.steps.iter().map(|s| s.outcome).collect();
        assert_eq!(outcomes, [Some(Outcome::Warning), Some(Outcome::Warning)]);
        assert_eq!(warn.outcome, Some(Outcome::Warning));
        let failed = runs(&w, "FAIL")[0];
        assert_eq!((failed.outcome, failed.steps.len()), (Some(Outcome::Failed), 1));
        assert!(failed.thrown().unwrap().message.ends_with("failed: boom"));
        let check = runs(&w, "CHECK")[0];
        let thrown = check.thrown().unwrap();
        assert_eq!(
            (thrown.message.as_str(), thrown.code.as_deref()),
            ("no rows", Some("ERR_CHECK"))
        );
        assert_eq!(check.end_us, Some(105 * MS));
        let empty = runs(&w, "EMPTY")[0];
        assert_eq!(
            (empty.outcome, empty.end_us),
            (Some(Outcome::Success), Some(100 * MS))
        );
    }

    #[test]
    fn steps_queue_for_activity_slots_like_any_job() {
        let mut w = world();
        w.advance(0);
        // A job holds the only slot until 1000 ms; the scenario's job waits for it.
        let other = crate::emulator::catalog::Target {
            project: "P".into(),
            obj: w.jobs.catalog().projects["P"].find("other", None).unwrap(),
            partitions: vec!["NP".into()],
            label: "NP".into(),
        };
        let activities = w
            .jobs
            .plan(crate::emulator::config::BuildType::NonRecursiveForced, &[other]);
        w.jobs
            .create(
                crate::emulator::sim::NewJob {
                    project: "P",
                    def: Map::new(),
                    key_id: "k",
                    origin: crate::emulator::sim::Origin::Api,
                    label: "other_NP",
                    first_output: "other",
                    activities,
                    note: None,
                },
                0,
            )
            .unwrap();
        fire(&mut w, "S", 0);
        w.advance(10_000 * MS);
        let run = runs(&w, "S")[0];
        // Queued from 100 to 1000 ms, built for 200 ms, then the 300 ms wait.
        assert_eq!(run.steps[0].end_us, Some(1200 * MS));
        assert_eq!(run.end_us, Some(1500 * MS));
    }

    #[test]
    fn abort_stops_the_current_run_and_its_job_but_not_a_pending_fire() {
        let mut w = world();
        fire(&mut w, "S", 0);
        w.advance(150 * MS);
        let job = runs(&w, "S")[0].steps[0].job.clone().unwrap();
        let pending = fire(&mut w, "S", 150 * MS);
        let aborted = w.abort_scenario("P", "S", 160 * MS);
        assert_eq!(aborted.as_deref(), Some(runs(&w, "S")[0].id.as_str()));
        assert_eq!(w.jobs.get("P", &job).unwrap().state, JobState::Aborted);
        let run = runs(&w, "S")[0];
        assert_eq!(
            (run.outcome, run.end_us),
            (Some(Outcome::Aborted), Some(160 * MS))
        );
        assert_eq!(w.abort_scenario("P", "S", 170 * MS), None);
        // The fire was pending, not a run: it starts one at its due time.
        w.advance(10_000 * MS);
        assert_eq!(runs(&w, "S")[1].trigger_run_id, pending);
        assert_eq!(runs(&w, "S")[1].start_us, 250 * MS);
    }

    #[test]
    fn a_job_aborted_through_the_jobs_api_aborts_its_step_at_once() {
        let mut w = world();
        fire(&mut w, "S", 0);
        w.advance(150 * MS);
        let job = runs(&w, "S")[0].steps[0].job.clone().unwrap();
        assert_eq!(w.abort_job("P", &job, 150 * MS), Ok(true));
        let run = runs(&w, "S")[0];
        assert_eq!(
            (run.outcome, run.end_us),
            (Some(Outcome::Aborted), Some(150 * MS))
        );
    }

    #[test]
    fn retention_keeps_the_newest_finished_runs_and_fires() {
        let mut w = world();
        for i in 0..5 {
            fire(&mut w, "EMPTY", i * 1000 * MS);
            w.advance(i * 1000 * MS + 500 * MS);
        }
        let state = w.scenarios.state("P", "EMPTY").unwrap();
        assert_eq!((state.runs.len(), state.fires.len()), (3, 3));
        assert_eq!(state.runs[0].start_us, 2100 * MS);
        assert_eq!((w.scenarios.fires_total, w.scenarios.runs_started), (5, 5));
    }
}
