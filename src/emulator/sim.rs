//! The job simulation: jobs, their activities, the instance-wide activity slots and the queue of
//! jobs waiting for one.
//!
//! Nothing here sleeps or reads the clock. Every operation takes `now` (microseconds since the
//! emulator started, from a monotonic clock) and first calls [`Sim::advance`], which replays every
//! activity end due by then, at its exact due time, in time order. So job timestamps do not depend
//! on when anybody looks, and a background task only needs to call `advance` at the next due time
//! to keep queued jobs moving.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{
    catalog::{Catalog, ObjectType, Target},
    clock::{Clock, fmt_ms, log_line, scaled_us},
    config::{BuildType, InstanceConfig, Outcome},
};

/// Cap on remembered built partitions per object, so arbitrary partition names sent by clients
/// cannot grow memory without bound. Beyond it the set is cleared (objects look unbuilt again).
const MAX_BUILT_PARTITIONS: usize = 10_000;

/// At most this many warning lines are written per activity; the rest are summarised.
const MAX_WARNING_LINES: u32 = 20;

/// The state of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum JobState {
    NotStarted,
    Running,
    Done,
    Failed,
    Aborted,
}

impl JobState {
    pub(crate) fn terminal(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Aborted)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobState::NotStarted => "NOT_STARTED",
            JobState::Running => "RUNNING",
            JobState::Done => "DONE",
            JobState::Failed => "FAILED",
            JobState::Aborted => "ABORTED",
        }
    }
}

/// The state of an activity. `SKIPPED` marks activities that never ran because an earlier one
/// failed or the job was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActState {
    NotStarted,
    Running,
    Done,
    Failed,
    Aborted,
    Skipped,
}

impl ActState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActState::NotStarted => "NOT_STARTED",
            ActState::Running => "RUNNING",
            ActState::Done => "DONE",
            ActState::Failed => "FAILED",
            ActState::Aborted => "ABORTED",
            ActState::Skipped => "SKIPPED",
        }
    }
}

/// Makes a job-id fragment URL-safe: the client puts ids into paths without encoding them.
fn id_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The job name suffix of a first output: `<id>_<partition spec|NP>`, URL-safe.
pub(crate) fn job_label(id: &str, partition_label: &str) -> String {
    id_safe(&format!("{id}_{partition_label}"))
}

/// Fills in an output of a job definition as it is stored: the resolved type, id and project, and
/// the `target*` fields of DSS's own listing shape.
pub(crate) fn resolve_output(
    item: &mut Map<String, Value>,
    ty: ObjectType,
    id: &str,
    project: &str,
    partition_label: &str,
) {
    item.insert("type".into(), json!(ty.wire()));
    item.insert("id".into(), json!(id));
    item.insert("projectKey".into(), json!(project));
    item.insert("targetDataset".into(), json!(id));
    item.insert("targetDatasetProjectKey".into(), json!(project));
    item.insert("targetPartition".into(), json!(partition_label));
}

/// One activity of a job: building one partition of one object.
#[derive(Debug)]
pub(crate) struct Activity {
    pub(crate) id: String,
    project: String,
    obj: usize,
    ty: ObjectType,
    name: String,
    partition: String,
    recipe: String,
    recipe_kind: String,
    duration_us: u64,
    outcome: Outcome,
    message: String,
    warnings: u32,
    log: Arc<[String]>,
    pub(crate) state: ActState,
    start_us: Option<u64>,
    end_us: Option<u64>,
    warnings_out: u32,
    error: Option<String>,
}

/// A job.
#[derive(Debug)]
pub(crate) struct Job {
    seq: u64,
    pub(crate) project: String,
    pub(crate) id: String,
    pub(crate) def: Map<String, Value>,
    pub(crate) key_id: String,
    /// `def.initiator`: who started it.
    initiator: String,
    initiation_us: u64,
    pub(crate) state: JobState,
    start_us: Option<u64>,
    end_us: Option<u64>,
    /// When a running-jobs listing first left the job out after it ended.
    end_listed_us: Option<u64>,
    /// When a status call first answered with the job ended: the moment a client could learn it.
    end_read_us: Option<u64>,
    pub(crate) activities: Vec<Activity>,
    current: usize,
    /// Why a job with no activity had nothing to do, for its log.
    note: Option<String>,
    /// The failure message of a job failed through the admin API with no activity to blame.
    error: Option<String>,
}

/// The jobs of one project, in creation order.
#[derive(Default)]
struct ProjectJobs {
    ids: HashMap<String, u64>,
    order: VecDeque<u64>,
}

/// How a job is finished through the admin API.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    pub(crate) state: JobState,
    pub(crate) message: Option<String>,
    pub(crate) warnings: Option<u32>,
}

/// Why an operation on a job could not be done.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JobError {
    NotFound,
    AlreadyFinished(JobState),
}

/// What started a job, as its definition records it (`initiator`, `triggeredFrom`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin<'a> {
    /// A `POST /projects/{pk}/jobs/`.
    Api,
    /// A build step of this scenario (`<projectKey>.<scenarioId>`) and run.
    Scenario { scenario: &'a str, run_id: &'a str },
}

impl Origin<'_> {
    fn initiator(self, key_id: &str) -> String {
        match self {
            Origin::Api => format!("API ({key_id})"),
            Origin::Scenario { scenario, run_id } => format!("scenario {scenario} run {run_id} ({key_id})"),
        }
    }

    fn triggered_from(self) -> &'static str {
        match self {
            Origin::Api => "API",
            Origin::Scenario { .. } => "SCENARIO",
        }
    }
}

/// What a job is created from.
pub(crate) struct NewJob<'a> {
    pub(crate) project: &'a str,
    /// The definition to store, without the server-assigned fields (they are added).
    pub(crate) def: Map<String, Value>,
    /// The id of the API key starting it (for a scenario: the key that fired its trigger).
    pub(crate) key_id: &'a str,
    /// What started it.
    pub(crate) origin: Origin<'a>,
    /// `<firstOutputId>_<partition|NP>`, already URL-safe: the job name after `build_`.
    pub(crate) label: &'a str,
    /// The first output's id, to keep ids unique per output.
    pub(crate) first_output: &'a str,
    pub(crate) activities: Vec<Activity>,
    /// Why a job has nothing to do, for its log.
    pub(crate) note: Option<String>,
}

/// The simulation state.
pub(crate) struct Sim {
    catalog: Arc<Catalog>,
    pub(crate) clock: Clock,
    max_running: usize,
    time_scale: f64,
    max_retained: usize,
    jobs: HashMap<u64, Job>,
    projects: HashMap<String, ProjectJobs>,
    queue: VecDeque<u64>,
    /// Jobs NOT_STARTED or RUNNING.
    active: BTreeSet<u64>,
    /// Jobs that ended since the last running-jobs listing (at most `max_retained`).
    ended_unlisted: VecDeque<u64>,
    running: usize,
    /// Due activity ends: (time, job). Entries may be stale; they are checked when popped.
    events: BinaryHeap<Reverse<(u64, u64)>>,
    next_seq: u64,
    /// Last millisecond used in an id, per project and first output, to keep ids unique.
    last_id_ms: HashMap<String, i64>,
    built: HashMap<(String, usize), HashSet<String>>,
    /// The last finished build of each object: (start, end, success).
    last_build: HashMap<(String, usize), (u64, u64, bool)>,
    pub(crate) jobs_started: u64,
}

impl Sim {
    pub(crate) fn new(catalog: Arc<Catalog>, instance: &InstanceConfig, clock: Clock) -> Sim {
        Sim {
            catalog,
            clock,
            max_running: usize::try_from(instance.max_running_activities).unwrap_or(usize::MAX),
            time_scale: instance.time_scale,
            max_retained: instance.max_jobs_retained,
            jobs: HashMap::new(),
            projects: HashMap::new(),
            queue: VecDeque::new(),
            active: BTreeSet::new(),
            ended_unlisted: VecDeque::new(),
            running: 0,
            events: BinaryHeap::new(),
            next_seq: 0,
            last_id_ms: HashMap::new(),
            built: HashMap::new(),
            last_build: HashMap::new(),
            jobs_started: 0,
        }
    }

    /// Forgets every job (the catalog and settings stay).
    pub(crate) fn reset(&mut self) {
        *self = Sim::new(
            self.catalog.clone(),
            &InstanceConfig {
                max_running_activities: u32::try_from(self.max_running).unwrap_or(u32::MAX),
                time_scale: self.time_scale,
                max_jobs_retained: self.max_retained,
                ..InstanceConfig::default()
            },
            self.clock,
        );
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_us()
    }

    /// The catalog the jobs build from.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The emulator time of the next due event, if any.
    pub(crate) fn next_event(&self) -> Option<u64> {
        self.events.peek().map(|Reverse((t, _))| *t)
    }

    /// Replays everything due by `now`.
    pub(crate) fn advance(&mut self, now: u64) {
        while let Some(&Reverse((t, seq))) = self.events.peek() {
            if t > now {
                break;
            }
            self.events.pop();
            self.complete_current(seq, t);
        }
        self.start_queued(now);
    }

    fn scaled_us(&self, ms: u64) -> u64 {
        scaled_us(ms, self.time_scale)
    }

    fn is_built(&self, project: &str, obj: usize, partition: &str) -> bool {
        let Some(o) = self
            .catalog
            .projects
            .get(project)
            .and_then(|p| p.objects.get(obj))
        else {
            return false;
        };
        if !o.computable {
            // Flow sources always exist.
            return true;
        }
        let configured = if partition == "NP" {
            o.config.built
        } else {
            o.config.partitions.iter().any(|p| p == partition)
        };
        configured
            || self
                .built
                .get(&(project.to_owned(), obj))
                .is_some_and(|s| s.contains(partition))
    }

    /// The partitions of an object that exist: configured ones plus those built since.
    pub(crate) fn existing_partitions(&self, project: &str, obj: usize) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        if let Some(o) = self
            .catalog
            .projects
            .get(project)
            .and_then(|p| p.objects.get(obj))
        {
            out.extend(o.config.partitions.iter().cloned());
        }
        if let Some(set) = self.built.get(&(project.to_owned(), obj)) {
            out.extend(set.iter().filter(|p| *p != "NP").cloned());
        }
        out.into_iter().collect()
    }

    /// The last finished build of an object, as epoch ms (start, end) and success.
    pub(crate) fn last_build(&self, project: &str, obj: usize) -> Option<(i64, i64, bool)> {
        self.last_build
            .get(&(project.to_owned(), obj))
            .map(|&(s, e, ok)| (self.clock.epoch_ms(s), self.clock.epoch_ms(e), ok))
    }

    fn mark_built(&mut self, project: &str, obj: usize, partition: &str) {
        let set = self.built.entry((project.to_owned(), obj)).or_default();
        if set.len() >= MAX_BUILT_PARTITIONS {
            set.clear();
        }
        set.insert(partition.to_owned());
    }

    /// Turns the requested outputs into the ordered activities of a job, following the flow for
    /// the recursive build types.
    pub(crate) fn plan(&self, build: BuildType, targets: &[Target]) -> Vec<Activity> {
        // (project, object, partition) in insertion order, deduplicated.
        let mut wanted: Vec<(String, usize, String)> = Vec::new();
        let mut seen: HashSet<(String, usize, String)> = HashSet::new();
        let mut push = |p: &str, o: usize, part: &str, wanted: &mut Vec<(String, usize, String)>| {
            let k = (p.to_owned(), o, part.to_owned());
            if seen.insert(k.clone()) {
                wanted.push(k);
            }
        };
        for t in targets {
            let Some(project) = self.catalog.projects.get(&t.project) else {
                continue;
            };
            let Some(obj) = project.objects.get(t.obj) else {
                continue;
            };
            if build != BuildType::NonRecursiveForced {
                // Upstream objects in dependency order; each decides whether it is needed. An
                // upstream object uses the target's partitions when it is partitioned too.
                let mut upstream = project.upstream(t.obj);
                upstream.sort_by_key(|&u| project.objects[u].rank);
                let mut rebuilt: HashSet<usize> = HashSet::new();
                for u in upstream {
                    let parts: Vec<String> = if project.objects[u].partitioned() && obj.partitioned() {
                        t.partitions.clone()
                    } else {
                        vec!["NP".to_owned()]
                    };
                    let stale_input = project.direct_inputs(u).iter().any(|i| rebuilt.contains(i));
                    for part in parts {
                        let needed = match build {
                            BuildType::RecursiveForced => true,
                            BuildType::Recursive => stale_input || !self.is_built(&t.project, u, &part),
                            _ => !self.is_built(&t.project, u, &part),
                        };
                        if needed {
                            rebuilt.insert(u);
                            push(&t.project, u, &part, &mut wanted);
                        }
                    }
                }
                let stale_input = project.direct_inputs(t.obj).iter().any(|i| rebuilt.contains(i));
                for part in &t.partitions {
                    let needed = match build {
                        BuildType::RecursiveForced => true,
                        BuildType::Recursive => stale_input || !self.is_built(&t.project, t.obj, part),
                        _ => !self.is_built(&t.project, t.obj, part),
                    };
                    if needed && obj.computable {
                        push(&t.project, t.obj, part, &mut wanted);
                    }
                }
            } else if obj.computable {
                for part in &t.partitions {
                    push(&t.project, t.obj, part, &mut wanted);
                }
            }
        }
        // Flow order: upstream first, stable for equal ranks (request order).
        wanted.sort_by_key(|(p, o, _)| self.catalog.projects.get(p).map_or(0, |p| p.objects[*o].rank));
        wanted
            .into_iter()
            .filter_map(|(p, o, part)| {
                let project = self.catalog.projects.get(&p)?;
                let obj = project.objects.get(o)?;
                let b = obj.behaviour(&part);
                let (recipe, recipe_kind) = project.recipe_of(o);
                Some(Activity {
                    id: format!("compute_{}_{}", obj.name, part),
                    project: p.clone(),
                    obj: o,
                    ty: obj.ty,
                    name: obj.name.clone(),
                    partition: part,
                    recipe,
                    recipe_kind,
                    duration_us: self.scaled_us(b.duration_ms),
                    outcome: b.outcome,
                    message: b.message.clone(),
                    warnings: b.warnings,
                    log: b.log.clone(),
                    state: ActState::NotStarted,
                    start_us: None,
                    end_us: None,
                    warnings_out: 0,
                    error: None,
                })
            })
            .collect()
    }

    /// Creates a job and returns it (`None` only if retention dropped it, which it never does to
    /// the job being created).
    pub(crate) fn create(&mut self, new: NewJob<'_>, now: u64) -> Option<&Job> {
        let NewJob {
            project,
            mut def,
            key_id,
            origin,
            label,
            first_output,
            activities,
            note,
        } = new;
        self.advance(now);
        let now_ms = self.clock.epoch_ms(now);
        let id_key = format!("{project}\u{0}{first_output}");
        let id_ms = match self.last_id_ms.get(&id_key) {
            Some(&last) if last >= now_ms => last + 1,
            _ => now_ms,
        };
        self.last_id_ms.insert(id_key, id_ms);
        let name = format!("build_{label}");
        let id = format!("{name}_{}", fmt_ms(id_ms, "%Y-%m-%dT%H-%M-%S%.3f"));
        def.insert("id".into(), json!(id));
        def.insert("name".into(), json!(name));
        def.insert("projectKey".into(), json!(project));
        let initiator = origin.initiator(key_id);
        def.insert("initiator".into(), json!(initiator));
        def.insert("triggeredFrom".into(), json!(origin.triggered_from()));
        def.insert("initiationTimestamp".into(), json!(now_ms));
        def.entry("refreshHiveMetastore").or_insert(json!(false));
        def.entry("mailNotification").or_insert(json!(false));
        def.entry("refreshIntermediateMirrors").or_insert(json!(true));
        def.entry("refreshTargetMirrors").or_insert(json!(true));

        let seq = self.next_seq;
        self.next_seq += 1;
        self.jobs_started += 1;
        let empty = activities.is_empty();
        let job = Job {
            seq,
            project: project.to_owned(),
            id: id.clone(),
            def,
            key_id: key_id.to_owned(),
            initiator,
            initiation_us: now,
            state: if empty {
                JobState::Done
            } else {
                JobState::NotStarted
            },
            start_us: empty.then_some(now),
            end_us: empty.then_some(now),
            end_listed_us: None,
            end_read_us: None,
            activities,
            current: 0,
            note,
            error: None,
        };
        self.jobs.insert(seq, job);
        let pj = self.projects.entry(project.to_owned()).or_default();
        pj.ids.insert(id, seq);
        pj.order.push_back(seq);
        if !empty {
            self.active.insert(seq);
            self.queue.push_back(seq);
        }
        self.evict(project, seq);
        self.advance(now);
        self.jobs.get(&seq)
    }

    /// Drops the oldest finished jobs of a project beyond the retention limit, never `keep` (the
    /// job being created, which its caller is about to answer with).
    fn evict(&mut self, project: &str, keep: u64) {
        let Some(pj) = self.projects.get_mut(project) else {
            return;
        };
        while pj.order.len() > self.max_retained {
            let Some(pos) = pj
                .order
                .iter()
                .position(|s| *s != keep && self.jobs.get(s).is_none_or(|j| j.state.terminal()))
            else {
                // Every retained job is still active: keep them all until some finish.
                break;
            };
            if let Some(seq) = pj.order.remove(pos)
                && let Some(job) = self.jobs.remove(&seq)
            {
                pj.ids.remove(&job.id);
            }
        }
    }

    fn start_queued(&mut self, t: u64) {
        while self.max_running == 0 || self.running < self.max_running {
            let Some(seq) = self.queue.pop_front() else { break };
            let Some(job) = self.jobs.get_mut(&seq) else {
                continue;
            };
            if job.state != JobState::NotStarted {
                continue;
            }
            job.state = JobState::Running;
            job.start_us = Some(t);
            job.current = 0;
            let Some(a) = job.activities.first_mut() else {
                continue;
            };
            let end = t.saturating_add(a.duration_us);
            a.state = ActState::Running;
            a.start_us = Some(t);
            a.end_us = Some(end);
            self.running += 1;
            self.events.push(Reverse((end, seq)));
        }
    }

    /// Ends the running activity of job `seq`, due at `t`, and moves the job on.
    fn complete_current(&mut self, seq: u64, t: u64) {
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        if job.state != JobState::Running {
            return;
        }
        let cur = job.current;
        let Some(act) = job.activities.get_mut(cur) else {
            return;
        };
        if act.state != ActState::Running || act.end_us != Some(t) {
            return;
        }
        let failed = act.outcome == Outcome::Failed;
        if failed {
            act.state = ActState::Failed;
            act.error = Some(act.message.clone());
        } else {
            act.state = ActState::Done;
            act.warnings_out = act.warnings;
        }
        let built = (!failed).then(|| (act.project.clone(), act.obj, act.partition.clone()));
        let build = (
            (act.project.clone(), act.obj),
            (act.start_us.unwrap_or(t), t, !failed),
        );
        let next = cur + 1;
        let finished = if failed {
            for a in &mut job.activities[next..] {
                a.state = ActState::Skipped;
            }
            job.state = JobState::Failed;
            true
        } else if let Some(a) = job.activities.get_mut(next) {
            let end = t.saturating_add(a.duration_us);
            a.state = ActState::Running;
            a.start_us = Some(t);
            a.end_us = Some(end);
            job.current = next;
            self.events.push(Reverse((end, seq)));
            false
        } else {
            job.state = JobState::Done;
            true
        };
        if finished {
            job.end_us = Some(t);
            self.running = self.running.saturating_sub(1);
            self.active.remove(&seq);
            self.note_ended(seq);
        }
        if let Some((p, o, part)) = built {
            self.mark_built(&p, o, &part);
        }
        self.last_build.insert(build.0, build.1);
        if finished {
            self.start_queued(t);
        }
    }

    fn seq_of(&self, project: &str, id: &str) -> Option<u64> {
        self.projects.get(project)?.ids.get(id).copied()
    }

    /// Looks a job up.
    pub(crate) fn get(&self, project: &str, id: &str) -> Option<&Job> {
        self.jobs.get(&self.seq_of(project, id)?)
    }

    fn note_ended(&mut self, seq: u64) {
        if self.ended_unlisted.len() >= self.max_retained.max(1) {
            self.ended_unlisted.pop_front();
        }
        self.ended_unlisted.push_back(seq);
    }

    /// Notes a running-jobs listing at `now` (of one project, or of all): the jobs that ended since
    /// are absent from it for the first time.
    pub(crate) fn note_running_listing(&mut self, project: Option<&str>, now: u64) {
        let jobs = &mut self.jobs;
        self.ended_unlisted.retain(|seq| {
            let Some(job) = jobs.get_mut(seq) else {
                return false;
            };
            if project.is_some_and(|p| p != job.project) {
                return true;
            }
            job.end_listed_us.get_or_insert(now);
            false
        });
    }

    /// Notes a status call at `now`: the first one that finds the job ended is when a client
    /// could learn its outcome.
    pub(crate) fn note_status_read(&mut self, project: &str, id: &str, now: u64) {
        let job = self.seq_of(project, id).and_then(|seq| self.jobs.get_mut(&seq));
        if let Some(job) = job.filter(|j| j.state.terminal() && j.end_read_us.is_none()) {
            job.end_read_us = Some(now);
        }
    }

    /// Aborts a job. Returns whether it changed anything (a finished job stays as it was).
    pub(crate) fn abort(&mut self, project: &str, id: &str, now: u64) -> Result<bool, JobError> {
        self.advance(now);
        let seq = self.seq_of(project, id).ok_or(JobError::NotFound)?;
        match self.finish_seq(
            seq,
            &Finish {
                state: JobState::Aborted,
                message: None,
                warnings: None,
            },
            now,
        ) {
            Ok(()) => Ok(true),
            Err(JobError::AlreadyFinished(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Finishes a job at once in the given terminal state (admin API).
    pub(crate) fn finish(
        &mut self,
        project: &str,
        id: &str,
        finish: &Finish,
        now: u64,
    ) -> Result<(), JobError> {
        self.advance(now);
        let seq = self.seq_of(project, id).ok_or(JobError::NotFound)?;
        self.finish_seq(seq, finish, now)
    }

    fn finish_seq(&mut self, seq: u64, finish: &Finish, now: u64) -> Result<(), JobError> {
        let job = self.jobs.get_mut(&seq).ok_or(JobError::NotFound)?;
        if job.state.terminal() {
            return Err(JobError::AlreadyFinished(job.state));
        }
        let was_running = job.state == JobState::Running;
        let mut built = Vec::new();
        let mut builds = Vec::new();
        match finish.state {
            JobState::Done => {
                for a in &mut job.activities {
                    if matches!(a.state, ActState::NotStarted | ActState::Running) {
                        a.start_us.get_or_insert(now);
                        a.end_us = Some(now);
                        a.state = ActState::Done;
                        a.warnings_out = a.warnings;
                        built.push((a.project.clone(), a.obj, a.partition.clone()));
                        builds.push(((a.project.clone(), a.obj), (a.start_us.unwrap_or(now), now, true)));
                    }
                }
                if let Some(w) = finish.warnings {
                    let n = job.activities.len();
                    for (i, a) in job.activities.iter_mut().enumerate() {
                        a.warnings_out = if i + 1 == n { w } else { 0 };
                    }
                }
                job.start_us.get_or_insert(now);
            }
            JobState::Failed => {
                let message = finish
                    .message
                    .clone()
                    .unwrap_or_else(|| "Job failed (finished through the emulator admin API)".to_owned());
                let mut blamed = false;
                for a in &mut job.activities {
                    match a.state {
                        ActState::Running | ActState::NotStarted if !blamed => {
                            a.start_us.get_or_insert(now);
                            a.end_us = Some(now);
                            a.state = ActState::Failed;
                            a.error = Some(message.clone());
                            blamed = true;
                            builds.push((
                                (a.project.clone(), a.obj),
                                (a.start_us.unwrap_or(now), now, false),
                            ));
                        }
                        ActState::Running | ActState::NotStarted => a.state = ActState::Skipped,
                        _ => {}
                    }
                }
                if !blamed {
                    job.error = Some(message);
                }
                job.start_us.get_or_insert(now);
            }
            _ => {
                for a in &mut job.activities {
                    match a.state {
                        ActState::Running => {
                            a.end_us = Some(now);
                            a.state = ActState::Aborted;
                        }
                        ActState::NotStarted => a.state = ActState::Skipped,
                        _ => {}
                    }
                }
            }
        }
        job.state = if finish.state.terminal() {
            finish.state
        } else {
            JobState::Aborted
        };
        job.end_us = Some(now);
        self.active.remove(&seq);
        self.note_ended(seq);
        for (p, o, part) in built {
            self.mark_built(&p, o, &part);
        }
        self.last_build.extend(builds);
        if was_running {
            self.running = self.running.saturating_sub(1);
            self.start_queued(now);
        }
        Ok(())
    }

    /// The jobs of a project, newest first.
    pub(crate) fn project_jobs(&self, project: &str) -> impl Iterator<Item = &Job> {
        self.projects
            .get(project)
            .into_iter()
            .flat_map(|pj| pj.order.iter().rev())
            .filter_map(|s| self.jobs.get(s))
    }

    /// NOT_STARTED and RUNNING jobs of every project, newest first.
    pub(crate) fn active_jobs(&self) -> impl Iterator<Item = &Job> {
        self.active.iter().rev().filter_map(|s| self.jobs.get(s))
    }

    /// Every job, oldest first.
    pub(crate) fn all_jobs(&self) -> Vec<&Job> {
        let mut all: Vec<&Job> = self.jobs.values().collect();
        all.sort_by_key(|j| j.seq);
        all
    }
}

/// A job list item, serialised without copying the definition. Keys that would be `null` are
/// omitted, because the client's `DSSJobListItem` only falls back to `def` when a key is absent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListItem<'a> {
    project_key: &'a str,
    job_id: &'a str,
    def: &'a Map<String, Value>,
    state: &'static str,
    stable_state: bool,
    start_time: i64,
    end_time: i64,
    warnings_count: u64,
}

/// The admin API's view of a job.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobRecordRef<'a> {
    project_key: &'a str,
    id: &'a str,
    state: &'static str,
    def: &'a Map<String, Value>,
    initiator: String,
    api_key_id: &'a str,
    initiation_timestamp: i64,
    start_time: i64,
    end_time: i64,
    end_listed_time: i64,
    end_read_time: i64,
    warnings_count: u64,
    activities: Vec<ActivityRecordRef<'a>>,
}

/// An activity in the admin API's view of a job.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivityRecordRef<'a> {
    id: &'a str,
    state: &'static str,
}

impl Job {
    pub(crate) fn warnings(&self) -> u64 {
        self.activities.iter().map(|a| u64::from(a.warnings_out)).sum()
    }

    pub(crate) fn list_item(&self, clock: &Clock) -> ListItem<'_> {
        ListItem {
            project_key: &self.project,
            job_id: &self.id,
            def: &self.def,
            state: self.state.as_str(),
            stable_state: self.state.terminal(),
            start_time: clock.opt_ms(self.start_us),
            end_time: clock.opt_ms(self.end_us),
            warnings_count: self.warnings(),
        }
    }

    pub(crate) fn record(&self, clock: &Clock) -> JobRecordRef<'_> {
        JobRecordRef {
            project_key: &self.project,
            id: &self.id,
            state: self.state.as_str(),
            def: &self.def,
            initiator: self.initiator.clone(),
            api_key_id: &self.key_id,
            initiation_timestamp: clock.epoch_ms(self.initiation_us),
            start_time: clock.opt_ms(self.start_us),
            end_time: clock.opt_ms(self.end_us),
            end_listed_time: clock.opt_ms(self.end_listed_us),
            end_read_time: clock.opt_ms(self.end_read_us),
            warnings_count: self.warnings(),
            activities: self
                .activities
                .iter()
                .map(|a| ActivityRecordRef {
                    id: &a.id,
                    state: a.state.as_str(),
                })
                .collect(),
        }
    }

    fn activity_json(a: &Activity, clock: &Clock) -> Value {
        let mut v = json!({
            "activityId": a.id,
            "recipeName": a.recipe,
            "recipeType": a.recipe_kind,
            "state": a.state.as_str(),
            "startTime": clock.opt_ms(a.start_us),
            "endTime": clock.opt_ms(a.end_us),
            "warningsCount": a.warnings_out,
            "targets": [{
                "type": a.ty.wire(),
                "projectKey": a.project,
                "id": a.name,
                "partition": a.partition,
            }],
        });
        if let (Some(err), Some(obj)) = (&a.error, v.as_object_mut()) {
            obj.insert("errorMessage".into(), json!(err));
        }
        v
    }

    /// The status document of `GET /projects/{pk}/jobs/{id}/`.
    pub(crate) fn status(&self, clock: &Clock) -> Value {
        let activities: Map<String, Value> = self
            .activities
            .iter()
            .map(|a| (a.id.clone(), Job::activity_json(a, clock)))
            .collect();
        let count = |s: ActState| self.activities.iter().filter(|a| a.state == s).count();
        let mut base = json!({
            "jobId": self.id,
            "projectKey": self.project,
            "state": self.state.as_str(),
            "def": self.def,
            "stableState": self.state.terminal(),
            "startTime": clock.opt_ms(self.start_us),
            "endTime": clock.opt_ms(self.end_us),
            "warningsCount": self.warnings(),
            "activities": activities,
        });
        if let (Some(err), Some(obj)) = (&self.error, base.as_object_mut()) {
            obj.insert("errorMessage".into(), json!(err));
        }
        json!({
            "baseStatus": base,
            "globalState": {
                "done": count(ActState::Done),
                "failed": count(ActState::Failed),
                "running": count(ActState::Running),
                "notStarted": count(ActState::NotStarted),
                "aborted": count(ActState::Aborted),
                "skipped": count(ActState::Skipped),
                "total": self.activities.len(),
                "warnings": self.warnings(),
            },
            "activities": activities,
        })
    }

    /// The failure message of a `FAILED` job: its failed activity's, or the one it was failed with.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.activities
            .iter()
            .find_map(|a| a.error.as_deref())
            .or(self.error.as_deref())
            .filter(|_| self.state == JobState::Failed)
    }

    /// When the job ended (emulator time), once it has.
    pub(crate) fn end_us(&self) -> Option<u64> {
        self.end_us.filter(|_| self.state.terminal())
    }

    pub(crate) fn has_activity(&self, id: &str) -> bool {
        self.activities.iter().any(|a| a.id == id)
    }

    /// The job log as of `now`, whole or for one activity, in DSS's line format. Nothing is
    /// stored: the lines are derived from the job's times and the configured log lines.
    pub(crate) fn log(&self, activity: Option<&str>, now: u64, clock: &Clock) -> String {
        let mut out = String::new();
        let mut line = |t: u64, thread: &str, level: &str, logger: &str, msg: &str| {
            log_line(&mut out, clock.epoch_ms(t), thread, level, logger, msg);
        };
        let whole = activity.is_none();
        if whole {
            let ty = self
                .def
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("NON_RECURSIVE_FORCED_BUILD");
            line(
                self.initiation_us,
                "main",
                "INFO",
                "dku.jobs",
                &format!(
                    "Job {} initiated by {} in project {}, type {ty}",
                    self.id, self.initiator, self.project
                ),
            );
            let names: Vec<&str> = self.activities.iter().map(|a| a.id.as_str()).collect();
            let plan = if names.is_empty() {
                format!(
                    "Nothing to build: {}",
                    self.note.as_deref().unwrap_or("every output is up to date")
                )
            } else {
                format!("Computed {} activities to run: {}", names.len(), names.join(", "))
            };
            line(self.initiation_us, "main", "INFO", "dku.flow.jobrunner", &plan);
            if let Some(start) = self.start_us
                && !self.activities.is_empty()
            {
                let waited = start.saturating_sub(self.initiation_us) / 1000;
                let msg = if waited > 0 {
                    format!("Job started after waiting {waited} ms for a free activity slot")
                } else {
                    "Job started".to_owned()
                };
                line(start, "main", "INFO", "dku.flow.jobrunner", &msg);
            }
        }
        for (i, a) in self.activities.iter().enumerate() {
            if activity.is_some_and(|id| id != a.id) {
                continue;
            }
            let Some(start) = a.start_us else { continue };
            let thread = format!("ActivityExecutor-{}", i + 1);
            line(
                start,
                &thread,
                "INFO",
                "dku.flow.activity",
                &format!(
                    "Running activity {}: recipe {} ({}) builds {} {}.{} partition {}",
                    a.id,
                    a.recipe,
                    a.recipe_kind,
                    a.ty.wire(),
                    a.project,
                    a.name,
                    a.partition
                ),
            );
            let limit = a.end_us.unwrap_or(now).min(now);
            let n = a.log.len() as u64;
            for (k, text) in a.log.iter().enumerate() {
                let t = start + a.duration_us.saturating_mul(k as u64 + 1) / (n + 1);
                if t > limit {
                    break;
                }
                let (level, msg) = if let Some(rest) = text.strip_prefix("WARN:") {
                    ("WARN", rest.trim_start())
                } else if let Some(rest) = text.strip_prefix("ERROR:") {
                    ("ERROR", rest.trim_start())
                } else {
                    ("INFO", text.as_str())
                };
                line(t, &thread, level, "dku.flow.recipe", msg);
            }
            let Some(end) = a.end_us.filter(|&e| e <= now && a.state != ActState::Running) else {
                continue;
            };
            match a.state {
                ActState::Done => {
                    for k in 1..=a.warnings_out.min(MAX_WARNING_LINES) {
                        line(
                            end,
                            &thread,
                            "WARN",
                            "dku.flow.activity",
                            &format!("Warning {k}/{} raised while building {}", a.warnings_out, a.name),
                        );
                    }
                    let ms = end.saturating_sub(start) / 1000;
                    line(
                        end,
                        &thread,
                        "INFO",
                        "dku.flow.activity",
                        &format!("Activity {} DONE in {ms} ms", a.id),
                    );
                }
                ActState::Failed => {
                    line(
                        end,
                        &thread,
                        "ERROR",
                        "dku.flow.activity",
                        &format!("Activity {} FAILED", a.id),
                    );
                    line(
                        end,
                        &thread,
                        "ERROR",
                        "dku.flow.activity",
                        a.error.as_deref().unwrap_or("failed"),
                    );
                }
                ActState::Aborted => {
                    line(
                        end,
                        &thread,
                        "WARN",
                        "dku.flow.activity",
                        &format!("Activity {} ABORTED", a.id),
                    );
                }
                _ => {}
            }
        }
        if whole && let Some(end) = self.end_us.filter(|_| self.state.terminal()) {
            let failure = self.failure();
            let msg = match failure {
                Some(err) => format!("Job {} finished: FAILED: {err}", self.id),
                None => format!("Job {} finished: {}", self.id, self.state.as_str()),
            };
            let level = if self.state == JobState::Done {
                "INFO"
            } else {
                "ERROR"
            };
            line(end, "main", level, "dku.flow.jobrunner", &msg);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::config::Config;

    fn sim(yaml: &str) -> Sim {
        let config: Config = serde_yaml::from_str(yaml).unwrap();
        let catalog = Arc::new(Catalog::build(&config).unwrap());
        Sim::new(catalog, &config.instance, Clock::new())
    }

    const FLOW: &str = "instance: {maxRunningActivities: 1}\nprojects:\n- projectKey: P\n  datasets:\n  - {name: raw}\n  - {name: mid, build: {durationMs: 100}}\n  - {name: out, build: {durationMs: 200, warnings: 2}}\n  - {name: bad, build: {durationMs: 50, outcome: FAILED, message: boom}}\n  recipes:\n  - {name: r1, inputs: [raw], outputs: [mid]}\n  - {name: r2, inputs: [mid], outputs: [out, bad]}\n";

    fn target(s: &Sim, name: &str) -> Target {
        Target {
            project: "P".into(),
            obj: s.catalog.projects["P"].find(name, None).unwrap(),
            partitions: vec!["NP".into()],
            label: "NP".into(),
        }
    }

    fn start(s: &mut Sim, build: BuildType, name: &str, now: u64) -> String {
        let acts = s.plan(build, &[target(s, name)]);
        let label = format!("{name}_NP");
        let new = NewJob {
            project: "P",
            def: Map::new(),
            key_id: "k",
            origin: Origin::Api,
            label: &label,
            first_output: name,
            activities: acts,
            note: None,
        };
        s.create(new, now).unwrap().id.clone()
    }

    #[test]
    fn jobs_run_their_activities_in_flow_order_and_queue_for_slots() {
        let mut s = sim(FLOW);
        let a = start(&mut s, BuildType::RecursiveForced, "out", 0);
        let b = start(&mut s, BuildType::NonRecursiveForced, "mid", 0);
        let job = s.get("P", &a).unwrap();
        let ids: Vec<&str> = job.activities.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["compute_mid_NP", "compute_out_NP"]);
        assert_eq!(job.state, JobState::Running);
        assert_eq!(s.get("P", &b).unwrap().state, JobState::NotStarted);
        s.advance(299_999);
        assert_eq!(s.get("P", &a).unwrap().state, JobState::Running);
        s.advance(300_000);
        let job = s.get("P", &a).unwrap();
        assert_eq!((job.state, job.warnings()), (JobState::Done, 2));
        // The queued job started exactly when the slot freed up.
        assert_eq!(s.get("P", &b).unwrap().start_us, Some(300_000));
        s.advance(10_000_000);
        assert_eq!(s.get("P", &b).unwrap().state, JobState::Done);
    }

    #[test]
    fn a_failing_activity_fails_the_job_and_its_log_ends_with_the_message() {
        let mut s = sim(FLOW);
        let a = start(&mut s, BuildType::NonRecursiveForced, "bad", 0);
        s.advance(1_000_000);
        let job = s.get("P", &a).unwrap();
        assert_eq!(job.state, JobState::Failed);
        let log = job.log(Some("compute_bad_NP"), 1_000_000, &s.clock);
        assert!(log.trim_end().ends_with("boom"), "{log}");
        let whole = job.log(None, 1_000_000, &s.clock);
        assert!(whole.trim_end().ends_with("FAILED: boom"), "{whole}");
    }

    #[test]
    fn recursive_build_skips_what_is_already_built() {
        let mut s = sim(FLOW);
        let first = start(&mut s, BuildType::Recursive, "out", 0);
        assert_eq!(s.get("P", &first).unwrap().activities.len(), 2);
        s.advance(1_000_000);
        let again = start(&mut s, BuildType::Recursive, "out", 1_000_000);
        let job = s.get("P", &again).unwrap();
        assert!(job.activities.is_empty());
        assert_eq!(job.state, JobState::Done);
        let forced = start(&mut s, BuildType::RecursiveForced, "out", 1_000_000);
        assert_eq!(s.get("P", &forced).unwrap().activities.len(), 2);
    }

    #[test]
    fn ids_are_unique_and_aborts_are_sticky() {
        let mut s = sim(FLOW);
        let a = start(&mut s, BuildType::NonRecursiveForced, "mid", 5);
        let b = start(&mut s, BuildType::NonRecursiveForced, "mid", 5);
        assert_ne!(a, b);
        assert!(a.starts_with("build_mid_NP_"));
        assert_eq!(s.abort("P", &b, 10), Ok(true));
        assert_eq!(s.abort("P", &b, 11), Ok(false));
        let job = s.get("P", &b).unwrap();
        assert_eq!((job.state, job.start_us), (JobState::Aborted, None));
        assert_eq!(s.abort("P", "nope", 12), Err(JobError::NotFound));
    }

    #[test]
    fn retention_keeps_the_newest_finished_jobs() {
        let mut s = sim(
            "instance: {maxJobsRetained: 3, maxRunningActivities: 0}\nprojects:\n- projectKey: P\n  datasets: [{name: d, build: {durationMs: 0}}]\n",
        );
        let ids: Vec<String> = (0..5)
            .map(|i| start(&mut s, BuildType::NonRecursiveForced, "d", i))
            .collect();
        let kept: Vec<&str> = s.project_jobs("P").map(|j| j.id.as_str()).collect();
        assert_eq!(kept, [ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]);
    }
}
