//! The scenario simulation: trigger fires, the runs they start, and the runs' steps.
//!
//! A `run` request fires the scenario's manual trigger. The fire waits `scenarioStartDelayMs`, then
//! starts a run, or is cancelled when the scenario is running at that moment (one run per scenario
//! at a time, as in DSS). A run executes its steps in order: a build step starts a real job in the
//! job simulation and ends when that job ends; the other steps end after their duration. A step that
//! fails or is aborted ends the run. `abort` stops the current run, whoever started it.
//!
//! Like the job simulation, nothing here reads the clock: every operation takes `now`, and
//! [`Scenarios::advance`] replays what is due by then in time order. `world.rs` interleaves it with
//! the jobs, so a step that waits for a job ends at the job's own end time.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use serde_json::{Map, Value, json};

use super::{
    catalog::{Catalog, Project, Scenario, StepAction, Target},
    clock::{Clock, fmt_ms, scaled_us},
    config::{BuildType, InstanceConfig},
    sim::{JobState, NewJob, Origin, Sim, job_label, resolve_output},
};

/// The id of the trigger that API run requests fire.
pub(crate) const MANUAL_TRIGGER_ID: &str = "manual";

/// The exception class of a failed build step (DSS's own is not recorded).
const JOB_FAILED_CLASS: &str = "com.dataiku.dip.scenario.step.JobFailedException";
/// The exception class of a failing custom step.
const STEP_FAILED_CLASS: &str = "com.dataiku.dip.scenario.step.StepFailedException";

/// The outcome of a step or of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    Success,
    Warning,
    Failed,
    Aborted,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Warning => "WARNING",
            Outcome::Failed => "FAILED",
            Outcome::Aborted => "ABORTED",
        }
    }

    /// Whether a run stops after a step with this outcome.
    fn stops_the_run(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Aborted)
    }
}

/// The error a failed step reports (`result.thrown`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Thrown {
    pub(crate) clazz: &'static str,
    pub(crate) message: String,
    pub(crate) code: Option<String>,
}

/// What became of a trigger fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FireState {
    /// Waiting for its start delay.
    Pending,
    /// Dropped at this time: the scenario was running.
    Cancelled { at_us: u64 },
    /// It started this run.
    Started { run_id: String },
}

/// A trigger fire: one `run` request.
#[derive(Debug)]
pub(crate) struct Fire {
    /// The trigger run id the `run` answer carries (not a scenario run id).
    pub(crate) trigger_run_id: String,
    /// The request's body: the run's `trigger.params`.
    pub(crate) params: Map<String, Value>,
    /// The id of the key that asked.
    pub(crate) key_id: String,
    pub(crate) fired_us: u64,
    due_us: u64,
    pub(crate) state: FireState,
}

impl Fire {
    pub(crate) fn cancelled(&self) -> bool {
        matches!(self.state, FireState::Cancelled { .. })
    }
}

/// A scenario run.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) id: String,
    pub(crate) trigger_run_id: String,
    pub(crate) params: Map<String, Value>,
    pub(crate) key_id: String,
    pub(crate) fired_us: u64,
    pub(crate) start_us: u64,
    pub(crate) end_us: Option<u64>,
    pub(crate) outcome: Option<Outcome>,
    /// The steps started so far, in order.
    pub(crate) steps: Vec<StepRun>,
}

impl Run {
    pub(crate) fn running(&self) -> bool {
        self.end_us.is_none()
    }

    /// The first failed step's error.
    pub(crate) fn thrown(&self) -> Option<&Thrown> {
        self.steps.iter().find_map(|s| s.thrown.as_ref())
    }
}

/// One started step of a run.
#[derive(Debug)]
pub(crate) struct StepRun {
    /// The step's position in its scenario.
    pub(crate) index: usize,
    pub(crate) start_us: u64,
    /// When a timed step (wait, warn, fail) ends.
    due_us: Option<u64>,
    /// The job a build step started.
    pub(crate) job: Option<String>,
    pub(crate) end_us: Option<u64>,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) thrown: Option<Thrown>,
}

/// The fires and runs of one scenario, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ScenarioState {
    pub(crate) fires: VecDeque<Fire>,
    pub(crate) runs: VecDeque<Run>,
    /// The last millisecond used in an id (fires and runs share it, so no trigger run id is ever
    /// also a run id).
    last_id_ms: i64,
}

impl ScenarioState {
    /// The current run, if the scenario is running.
    pub(crate) fn current(&self) -> Option<&Run> {
        self.runs.back().filter(|r| r.running())
    }

    fn current_mut(&mut self) -> Option<&mut Run> {
        self.runs.back_mut().filter(|r| r.running())
    }

    pub(crate) fn fire(&self, trigger_run_id: &str) -> Option<&Fire> {
        self.fires.iter().find(|f| f.trigger_run_id == trigger_run_id)
    }

    pub(crate) fn run(&self, run_id: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.id == run_id)
    }

    fn busy(&self) -> bool {
        self.current().is_some() || self.fires.iter().any(|f| f.state == FireState::Pending)
    }

    /// A new id from the epoch time `now_ms`: DSS's run id format, unique in this scenario.
    fn next_id(&mut self, now_ms: i64) -> String {
        let ms = if self.last_id_ms >= now_ms {
            self.last_id_ms + 1
        } else {
            now_ms
        };
        self.last_id_ms = ms;
        fmt_ms(ms, "%Y-%m-%d-%H-%M-%S-%3f")
    }
}

/// A scenario by project and id.
type Key = (String, String);

/// The scenario simulation state.
pub(crate) struct Scenarios {
    catalog: Arc<Catalog>,
    clock: Clock,
    time_scale: f64,
    start_delay_us: u64,
    max_retained: usize,
    states: HashMap<Key, ScenarioState>,
    /// Scenarios with a pending fire or a current run: the only ones `advance` looks at.
    busy: BTreeSet<Key>,
    /// Trigger fires since start (stats).
    pub(crate) fires_total: u64,
    /// Runs started since start (stats).
    pub(crate) runs_started: u64,
}

impl Scenarios {
    pub(crate) fn new(catalog: Arc<Catalog>, instance: &InstanceConfig, clock: Clock) -> Scenarios {
        Scenarios {
            catalog,
            clock,
            time_scale: instance.time_scale,
            start_delay_us: scaled_us(instance.scenario_start_delay_ms, instance.time_scale),
            max_retained: instance.max_scenario_runs_retained,
            states: HashMap::new(),
            busy: BTreeSet::new(),
            fires_total: 0,
            runs_started: 0,
        }
    }

    /// Forgets every fire and run.
    pub(crate) fn reset(&mut self) {
        self.states.clear();
        self.busy.clear();
        self.fires_total = 0;
        self.runs_started = 0;
    }

    /// The fires and runs of a scenario (`None` before its first fire).
    pub(crate) fn state(&self, project: &str, scenario: &str) -> Option<&ScenarioState> {
        self.states.get(&(project.to_owned(), scenario.to_owned()))
    }

    /// Every scenario with fires or runs, by project and id.
    pub(crate) fn all(&self) -> impl Iterator<Item = (&Key, &ScenarioState)> {
        self.states.iter()
    }

    /// Fires the manual trigger of a scenario (which must exist in the catalog) at `now`.
    pub(crate) fn fire(
        &mut self,
        project: &str,
        scenario: &str,
        params: Map<String, Value>,
        key_id: &str,
        now: u64,
    ) -> &Fire {
        let key = (project.to_owned(), scenario.to_owned());
        let now_ms = self.clock.epoch_ms(now);
        let max = self.max_retained;
        let state = self.states.entry(key.clone()).or_default();
        let trigger_run_id = state.next_id(now_ms);
        state.fires.push_back(Fire {
            trigger_run_id,
            params,
            key_id: key_id.to_owned(),
            fired_us: now,
            due_us: now.saturating_add(self.start_delay_us),
            state: FireState::Pending,
        });
        evict(&mut state.fires, max, |f| f.state != FireState::Pending);
        self.fires_total += 1;
        self.busy.insert(key);
        // The fire just pushed is the newest: eviction never drops a pending fire.
        &state.fires[state.fires.len() - 1]
    }

    /// Aborts the current run of a scenario, if any, at `now`; returns its id.
    pub(crate) fn abort(
        &mut self,
        project: &str,
        scenario: &str,
        now: u64,
        jobs: &mut Sim,
    ) -> Option<String> {
        let state = self.states.get_mut(&(project.to_owned(), scenario.to_owned()))?;
        let run = state.current_mut()?;
        if let Some(step) = run.steps.last_mut().filter(|s| s.end_us.is_none()) {
            if let Some(job) = &step.job {
                // A job that already ended keeps its state; the step is aborted either way.
                let _ = jobs.abort(project, job, now);
            }
            step.end_us = Some(now);
            step.outcome = Some(Outcome::Aborted);
        }
        run.end_us = Some(now);
        run.outcome = Some(Outcome::Aborted);
        tracing::debug!(project, scenario, run = %run.id, "scenario run aborted");
        Some(run.id.clone())
    }

    /// Whether no fire waits and no run goes on.
    pub(crate) fn idle(&self) -> bool {
        self.busy.is_empty()
    }

    /// The emulator time of the next fire or timed step due, if any. A build step's end is a job
    /// event, which the job simulation reports.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.busy
            .iter()
            .filter_map(|key| self.states.get(key))
            .flat_map(|state| {
                let fire = state
                    .fires
                    .iter()
                    .find(|f| f.state == FireState::Pending)
                    .map(|f| f.due_us);
                let step = state
                    .current()
                    .and_then(|r| r.steps.last())
                    .filter(|s| s.end_us.is_none())
                    .and_then(|s| s.due_us);
                fire.into_iter().chain(step)
            })
            .min()
    }

    /// Replays everything due by `t`: steps whose time has come or whose job has ended, and fires
    /// whose delay has passed, in time order (a run ending at the instant a fire is due frees the
    /// scenario for it).
    pub(crate) fn advance(&mut self, t: u64, jobs: &mut Sim) {
        let keys: Vec<Key> = self.busy.iter().cloned().collect();
        for key in keys {
            self.advance_scenario(&key, t, jobs);
            if !self.states.get(&key).is_some_and(ScenarioState::busy) {
                self.busy.remove(&key);
            }
        }
    }

    fn advance_scenario(&mut self, key: &Key, t: u64, jobs: &mut Sim) {
        let catalog = Arc::clone(&self.catalog);
        let Some(project) = catalog.projects.get(&key.0) else {
            return;
        };
        let Some(scenario) = project.scenario(&key.1) else {
            return;
        };
        // Each turn ends a step or settles a fire, so the loop ends.
        loop {
            let Some(state) = self.states.get(key) else { return };
            let step_end = state
                .current()
                .and_then(|run| step_end(project, scenario, run, jobs))
                .filter(|end| end.0 <= t);
            let fire_due = state
                .fires
                .iter()
                .find(|f| f.state == FireState::Pending)
                .map(|f| f.due_us)
                .filter(|&d| d <= t);
            match (step_end, fire_due) {
                (None, None) => return,
                (Some(end), Some(due)) if due < end.0 => self.start_or_cancel(key, project, due, jobs),
                (Some(end), _) => self.end_step(key, project, end, jobs),
                (None, Some(due)) => self.start_or_cancel(key, project, due, jobs),
            }
        }
    }

    /// Ends the current step of the current run as `end` says, then starts the next step or ends
    /// the run.
    fn end_step(&mut self, key: &Key, project: &Project, end: StepEnd, jobs: &mut Sim) {
        let Some(scenario) = project.scenario(&key.1) else {
            return;
        };
        let (at, outcome, thrown) = end;
        let Some(run) = self.states.get_mut(key).and_then(ScenarioState::current_mut) else {
            return;
        };
        let Some(step) = run.steps.last_mut() else { return };
        step.end_us = Some(at);
        step.outcome = Some(outcome);
        step.thrown = thrown;
        let next = step.index + 1;
        if outcome.stops_the_run() || next >= scenario.steps.len() {
            finish_run(run, at);
        } else {
            let step = start_step(project, scenario, run, next, at, jobs, self.time_scale);
            run.steps.push(step);
        }
    }

    /// A pending fire is due at `due`: it starts a run, or is cancelled if one is running.
    fn start_or_cancel(&mut self, key: &Key, project: &Project, due: u64, jobs: &mut Sim) {
        let Some(scenario) = project.scenario(&key.1) else {
            return;
        };
        let now_ms = self.clock.epoch_ms(due);
        let max = self.max_retained;
        let time_scale = self.time_scale;
        let Some(state) = self.states.get_mut(key) else {
            return;
        };
        let running = state.current().is_some();
        let run_id = (!running).then(|| state.next_id(now_ms));
        let Some(fire) = state.fires.iter_mut().find(|f| f.state == FireState::Pending) else {
            return;
        };
        let Some(run_id) = run_id else {
            fire.state = FireState::Cancelled { at_us: due };
            tracing::debug!(project = %key.0, scenario = %key.1, fire = %fire.trigger_run_id, "trigger fire cancelled: the scenario is running");
            return;
        };
        fire.state = FireState::Started {
            run_id: run_id.clone(),
        };
        let mut run = Run {
            id: run_id,
            trigger_run_id: fire.trigger_run_id.clone(),
            params: fire.params.clone(),
            key_id: fire.key_id.clone(),
            fired_us: fire.fired_us,
            start_us: due,
            end_us: None,
            outcome: None,
            steps: Vec::new(),
        };
        if scenario.steps.is_empty() {
            finish_run(&mut run, due);
        } else {
            let step = start_step(project, scenario, &run, 0, due, jobs, time_scale);
            run.steps.push(step);
        }
        tracing::debug!(project = %key.0, scenario = %key.1, run = %run.id, "scenario run started");
        state.runs.push_back(run);
        evict(&mut state.runs, max, |r| !r.running());
        self.runs_started += 1;
    }
}

/// When and how a step ends: time, outcome, error.
type StepEnd = (u64, Outcome, Option<Thrown>);

/// The end of the current step of `run`, once it is known: a timed step's due time (which may
/// still be ahead), or the end of a build step's job once that job has ended.
fn step_end(project: &Project, scenario: &Scenario, run: &Run, jobs: &Sim) -> Option<StepEnd> {
    let step = run.steps.last().filter(|s| s.end_us.is_none())?;
    let def = scenario.steps.get(step.index)?;
    if let Some(due) = step.due_us {
        return Some(match &def.action {
            StepAction::Warn { .. } => (due, Outcome::Warning, None),
            StepAction::Fail { message, code, .. } => (
                due,
                Outcome::Failed,
                Some(Thrown {
                    clazz: STEP_FAILED_CLASS,
                    message: message.clone(),
                    code: code.clone(),
                }),
            ),
            StepAction::Wait { .. } | StepAction::Build { .. } => (due, Outcome::Success, None),
        });
    }
    let job_id = step.job.as_deref()?;
    let Some(job) = jobs.get(&project.key, job_id) else {
        // Only a reset of the jobs (admin API) forgets a running job.
        return Some((
            step.start_us,
            Outcome::Failed,
            Some(Thrown {
                clazz: JOB_FAILED_CLASS,
                message: format!("Job {job_id} no longer exists"),
                code: None,
            }),
        ));
    };
    let end = job.end_us()?;
    Some(match job.state {
        JobState::Done if job.warnings() > 0 => (end, Outcome::Warning, None),
        JobState::Done => (end, Outcome::Success, None),
        JobState::Aborted => (end, Outcome::Aborted, None),
        _ => (
            end,
            Outcome::Failed,
            Some(Thrown {
                clazz: JOB_FAILED_CLASS,
                message: format!(
                    "Job {job_id} failed: {}",
                    job.failure().unwrap_or("the job did not finish DONE")
                ),
                code: None,
            }),
        ),
    })
}

/// Starts step `index` of `run` at `at`: a timed step gets its due time, a build step its job.
fn start_step(
    project: &Project,
    scenario: &Scenario,
    run: &Run,
    index: usize,
    at: u64,
    jobs: &mut Sim,
    time_scale: f64,
) -> StepRun {
    let mut step = StepRun {
        index,
        start_us: at,
        due_us: None,
        job: None,
        end_us: None,
        outcome: None,
        thrown: None,
    };
    let Some(def) = scenario.steps.get(index) else {
        step.due_us = Some(at);
        return step;
    };
    match &def.action {
        StepAction::Wait { duration_ms }
        | StepAction::Warn { duration_ms, .. }
        | StepAction::Fail { duration_ms, .. } => {
            step.due_us = Some(at.saturating_add(scaled_us(*duration_ms, time_scale)));
        }
        StepAction::Build { build, targets } => {
            step.job = start_job(project, scenario, run, *build, targets, at, jobs);
            if step.job.is_none() {
                // Cannot happen (the job being created is never evicted); end the step at once.
                step.due_us = Some(at);
            }
        }
    }
    step
}

/// Creates the job of a build step; returns its id.
fn start_job(
    project: &Project,
    scenario: &Scenario,
    run: &Run,
    build: BuildType,
    targets: &[Target],
    at: u64,
    jobs: &mut Sim,
) -> Option<String> {
    let outputs: Vec<Value> = targets
        .iter()
        .filter_map(|t| {
            let obj = project.objects.get(t.obj)?;
            let mut item = Map::new();
            resolve_output(&mut item, obj.ty, &obj.name, &t.project, &t.label);
            item.insert("partition".into(), json!(t.label));
            Some(Value::Object(item))
        })
        .collect();
    let first = targets.first()?;
    let first_name = project.objects.get(first.obj)?.name.clone();
    let mut def = Map::new();
    def.insert("type".into(), json!(build.as_str()));
    def.insert("outputs".into(), Value::Array(outputs));
    let activities = jobs.plan(build, targets);
    let label = job_label(&first_name, &first.label);
    let scenario_ref = format!("{}.{}", project.key, scenario.id);
    let job = jobs.create(
        NewJob {
            project: &project.key,
            def,
            key_id: &run.key_id,
            origin: Origin::Scenario {
                scenario: &scenario_ref,
                run_id: &run.id,
            },
            label: &label,
            first_output: &first_name,
            activities,
            note: None,
        },
        at,
    )?;
    Some(job.id.clone())
}

/// Ends a run at `at`; its outcome is its worst step's (`SUCCESS` with no step).
fn finish_run(run: &mut Run, at: u64) {
    run.end_us = Some(at);
    run.outcome = Some(
        run.steps
            .iter()
            .filter_map(|s| s.outcome)
            .max()
            .unwrap_or(Outcome::Success),
    );
}

/// Drops the oldest entries that `finished` allows beyond `max`.
fn evict<T>(list: &mut VecDeque<T>, max: usize, finished: impl Fn(&T) -> bool) {
    while list.len() > max {
        let Some(pos) = list.iter().position(&finished) else {
            break;
        };
        list.remove(pos);
    }
}
