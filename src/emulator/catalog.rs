//! The configuration compiled into lookup tables: projects, their objects and flow (with a
//! topological order), their scenarios, API keys and the resolved build behaviour of each object.
//! It is built once, checked, and shared read-only by the request handlers and the simulations.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use super::{
    config::{
        ApiKeyConfig, BuildSpec, BuildType, Config, DimensionConfig, ObjectConfig, Outcome, ProjectConfig,
        ScenarioConfig, StepConfig,
    },
    error::Error,
};

/// Build time used when nothing in the config sets one.
const DEFAULT_DURATION_MS: u64 = 1000;

/// The six object types a job can build (the emulator's own: see `config::BuildType` for why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ObjectType {
    Dataset,
    ManagedFolder,
    SavedModel,
    StreamingEndpoint,
    ModelEvaluationStore,
    RetrievableKnowledge,
}

impl ObjectType {
    /// The name used in job definitions.
    pub(crate) fn wire(self) -> &'static str {
        match self {
            ObjectType::Dataset => "DATASET",
            ObjectType::ManagedFolder => "MANAGED_FOLDER",
            ObjectType::SavedModel => "SAVED_MODEL",
            ObjectType::StreamingEndpoint => "STREAMING_ENDPOINT",
            ObjectType::ModelEvaluationStore => "MODEL_EVALUATION_STORE",
            ObjectType::RetrievableKnowledge => "RETRIEVABLE_KNOWLEDGE",
        }
    }

    /// The node type in the flow graph, as `DSSRecipe.run()` maps it back.
    pub(crate) fn graph_node(self) -> &'static str {
        match self {
            ObjectType::Dataset => "COMPUTABLE_DATASET",
            ObjectType::ManagedFolder => "COMPUTABLE_FOLDER",
            ObjectType::SavedModel => "COMPUTABLE_SAVED_MODEL",
            ObjectType::StreamingEndpoint => "COMPUTABLE_STREAMING_ENDPOINT",
            ObjectType::ModelEvaluationStore => "COMPUTABLE_MODEL_EVALUATION_STORE",
            ObjectType::RetrievableKnowledge => "COMPUTABLE_RETRIEVABLE_KNOWLEDGE",
        }
    }

    /// Parses a job definition's output type. `KNOWLEDGE_BANK` is accepted because the client's
    /// docstrings use it, although its code sends `RETRIEVABLE_KNOWLEDGE`.
    pub(crate) fn parse(s: &str) -> Option<ObjectType> {
        Some(match s {
            "DATASET" => ObjectType::Dataset,
            "MANAGED_FOLDER" => ObjectType::ManagedFolder,
            "SAVED_MODEL" => ObjectType::SavedModel,
            "STREAMING_ENDPOINT" => ObjectType::StreamingEndpoint,
            "MODEL_EVALUATION_STORE" => ObjectType::ModelEvaluationStore,
            "RETRIEVABLE_KNOWLEDGE" | "KNOWLEDGE_BANK" => ObjectType::RetrievableKnowledge,
            _ => return None,
        })
    }
}

/// The resolved way one object (or partition) builds.
#[derive(Clone, Debug)]
pub(crate) struct Behaviour {
    pub(crate) duration_ms: u64,
    pub(crate) outcome: Outcome,
    pub(crate) message: String,
    pub(crate) warnings: u32,
    pub(crate) log: Arc<[String]>,
}

/// A buildable object of a project.
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) ty: ObjectType,
    pub(crate) name: String,
    pub(crate) config: ObjectConfig,
    /// Whether a job can build it (it is not a flow source).
    pub(crate) computable: bool,
    /// The recipe that writes it, if any.
    pub(crate) producer: Option<usize>,
    /// Position in the flow's topological order: upstream objects have smaller ranks.
    pub(crate) rank: usize,
    behaviour: Behaviour,
    by_partition: HashMap<String, Behaviour>,
}

impl Object {
    pub(crate) fn partitioned(&self) -> bool {
        !self.config.partitioning.is_empty()
    }

    /// How this object builds the given partition.
    pub(crate) fn behaviour(&self, partition: &str) -> &Behaviour {
        self.by_partition.get(partition).unwrap_or(&self.behaviour)
    }

    /// The partitions a job builds for a partition spec (split on `,`; `NP` for an object that is not
    /// partitioned), and the spec's label in job ids and definitions (`NP` when empty).
    pub(crate) fn partitions_for(&self, spec: Option<&str>) -> (String, Vec<String>) {
        let label = spec.filter(|s| !s.is_empty()).unwrap_or("NP").to_owned();
        if !self.partitioned() {
            return (label, vec!["NP".to_owned()]);
        }
        let parts: Vec<String> = label
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if parts.is_empty() {
            (label, vec!["NP".to_owned()])
        } else {
            (label, parts)
        }
    }
}

/// One requested output, resolved against the catalog.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) project: String,
    pub(crate) obj: usize,
    /// The partitions to build (`NP` for a non-partitioned object).
    pub(crate) partitions: Vec<String>,
    /// The partition spec as requested (`NP` when none).
    pub(crate) label: String,
}

/// A recipe of a project's flow.
#[derive(Debug)]
pub(crate) struct Recipe {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) inputs: Vec<usize>,
    pub(crate) outputs: Vec<usize>,
}

/// A project with its objects and flow.
#[derive(Debug)]
pub(crate) struct Project {
    pub(crate) key: String,
    pub(crate) config: ProjectConfig,
    pub(crate) objects: Vec<Object>,
    pub(crate) recipes: Vec<Recipe>,
    /// The scenarios, in configuration order.
    pub(crate) scenarios: Vec<Scenario>,
    by_name: HashMap<String, usize>,
}

impl Project {
    /// Finds an object by name (names are unique within a project, whatever their type). With a
    /// type, the object must have it; with none (the client sends `type: null` for
    /// `with_output(name)`), any type matches.
    pub(crate) fn find(&self, name: &str, ty: Option<ObjectType>) -> Option<usize> {
        let idx = *self.by_name.get(name)?;
        match ty {
            Some(ty) if self.objects[idx].ty != ty => None,
            _ => Some(idx),
        }
    }

    /// A scenario by id.
    pub(crate) fn scenario(&self, id: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.id == id)
    }

    /// The name of the recipe that builds an object: its producer, or the implicit one.
    pub(crate) fn recipe_of(&self, obj: usize) -> (String, String) {
        match self.objects[obj].producer {
            Some(r) => (self.recipes[r].name.clone(), self.recipes[r].kind.clone()),
            None => (format!("compute_{}", self.objects[obj].name), "python".to_owned()),
        }
    }

    /// The computable objects upstream of `obj` (transitively), not including `obj`.
    pub(crate) fn upstream(&self, obj: usize) -> Vec<usize> {
        let mut seen = vec![false; self.objects.len()];
        let mut stack = vec![obj];
        let mut out = Vec::new();
        while let Some(o) = stack.pop() {
            let Some(r) = self.objects[o].producer else {
                continue;
            };
            for &input in &self.recipes[r].inputs {
                if !seen[input] && self.objects[input].computable {
                    seen[input] = true;
                    out.push(input);
                    stack.push(input);
                }
            }
        }
        out
    }

    /// The direct computable inputs of the recipe writing `obj`.
    pub(crate) fn direct_inputs(&self, obj: usize) -> Vec<usize> {
        match self.objects[obj].producer {
            Some(r) => self.recipes[r]
                .inputs
                .iter()
                .copied()
                .filter(|&i| self.objects[i].computable)
                .collect(),
            None => Vec::new(),
        }
    }
}

/// A resolved API key.
#[derive(Debug, Clone)]
pub(crate) struct ApiKey {
    pub(crate) config: ApiKeyConfig,
}

/// The project permission that grants every other one.
const ADMIN_PERMISSION: &str = "ADMIN";

impl ApiKey {
    /// Whether the key holds `perm` on `project`.
    pub(crate) fn can(&self, project: &str, perm: &str) -> bool {
        if self.config.admin {
            return true;
        }
        [project, "*"].iter().any(|p| {
            self.config
                .projects
                .get(*p)
                .is_some_and(|perms| perms.iter().any(|x| x == perm || x == ADMIN_PERMISSION))
        })
    }
}

/// Checks an API key's own fields (used for the config and for keys added at run time).
pub(crate) fn check_key(key: &ApiKeyConfig) -> Result<(), String> {
    if key.key.is_empty() || key.id.is_empty() {
        return Err("an API key needs a non-empty `key` and `id`".to_owned());
    }
    if key.key.contains(':') {
        // Basic auth sends `key:`; a colon would split the key.
        return Err(format!("API key {} must not contain ':'", key.id));
    }
    Ok(())
}

/// The compiled configuration.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) projects: BTreeMap<String, Project>,
    pub(crate) keys: Vec<ApiKey>,
}

impl Catalog {
    /// Compiles and checks a configuration.
    pub(crate) fn build(config: &Config) -> Result<Catalog, Error> {
        let invalid = |msg: String| Error::InvalidConfig(msg);
        let instance = &config.instance;
        if !(instance.time_scale.is_finite() && instance.time_scale > 0.0) {
            return Err(invalid(format!(
                "instance.timeScale must be positive, got {}",
                instance.time_scale
            )));
        }
        if instance.max_jobs_retained == 0 {
            return Err(invalid("instance.maxJobsRetained must be at least 1".to_owned()));
        }
        if instance.max_scenario_runs_retained == 0 {
            return Err(invalid(
                "instance.maxScenarioRunsRetained must be at least 1".to_owned(),
            ));
        }
        config.faults.validate().map_err(invalid)?;
        let defaults = resolve(&BuildSpec::default(), &config.defaults);
        let mut projects = BTreeMap::new();
        for pc in &config.projects {
            if pc.project_key.is_empty() || pc.project_key.contains('/') {
                return Err(invalid(format!("invalid project key {:?}", pc.project_key)));
            }
            let project = compile_project(pc, &defaults, &config.defaults).map_err(invalid)?;
            if projects.insert(pc.project_key.clone(), project).is_some() {
                return Err(invalid(format!("project {} is declared twice", pc.project_key)));
            }
        }
        let mut keys: Vec<ApiKey> = Vec::new();
        for k in &config.api_keys {
            check_key(k).map_err(invalid)?;
            if keys.iter().any(|o| o.config.key == k.key || o.config.id == k.id) {
                return Err(invalid(format!(
                    "API key {} is declared twice (same id or key)",
                    k.id
                )));
            }
            keys.push(ApiKey { config: k.clone() });
        }
        Ok(Catalog { projects, keys })
    }
}

/// Overlays `spec` on `base`.
fn resolve(base: &BuildSpec, spec: &BuildSpec) -> BuildSpec {
    BuildSpec {
        duration_ms: spec.duration_ms.or(base.duration_ms),
        outcome: spec.outcome.or(base.outcome),
        message: spec.message.clone().or_else(|| base.message.clone()),
        warnings: spec.warnings.or(base.warnings),
        log: spec.log.clone().or_else(|| base.log.clone()),
        by_partition: BTreeMap::new(),
    }
}

fn behaviour(spec: &BuildSpec, name: &str) -> Behaviour {
    Behaviour {
        duration_ms: spec.duration_ms.unwrap_or(DEFAULT_DURATION_MS),
        outcome: spec.outcome.unwrap_or(Outcome::Done),
        message: spec
            .message
            .clone()
            .unwrap_or_else(|| format!("Job failed: the build of {name} failed")),
        warnings: spec.warnings.unwrap_or(0),
        log: spec.log.clone().unwrap_or_default().into(),
    }
}

fn compile_project(
    pc: &ProjectConfig,
    defaults: &BuildSpec,
    raw_defaults: &BuildSpec,
) -> Result<Project, String> {
    let mut objects = Vec::new();
    let mut by_name = HashMap::new();
    let groups: [(ObjectType, &Vec<ObjectConfig>); 6] = [
        (ObjectType::Dataset, &pc.datasets),
        (ObjectType::ManagedFolder, &pc.managed_folders),
        (ObjectType::SavedModel, &pc.saved_models),
        (ObjectType::StreamingEndpoint, &pc.streaming_endpoints),
        (ObjectType::ModelEvaluationStore, &pc.model_evaluation_stores),
        (ObjectType::RetrievableKnowledge, &pc.knowledge_banks),
    ];
    for (ty, list) in groups {
        for oc in list {
            if oc.name.is_empty() || oc.name.contains('/') {
                return Err(format!(
                    "project {}: invalid object name {:?}",
                    pc.project_key, oc.name
                ));
            }
            check_dimensions(&pc.project_key, &oc.name, &oc.partitioning)?;
            if by_name.insert(oc.name.clone(), objects.len()).is_some() {
                return Err(format!(
                    "project {}: object {} is declared twice",
                    pc.project_key, oc.name
                ));
            }
            let own = resolve(defaults, &oc.build);
            let mut by_partition = HashMap::new();
            // Defaults' own per-partition overrides apply to every object, the object's win.
            for (part, spec) in raw_defaults
                .by_partition
                .iter()
                .chain(oc.build.by_partition.iter())
            {
                by_partition.insert(part.clone(), behaviour(&resolve(&own, spec), &oc.name));
            }
            objects.push(Object {
                ty,
                name: oc.name.clone(),
                config: oc.clone(),
                computable: true,
                producer: None,
                rank: 0,
                behaviour: behaviour(&own, &oc.name),
                by_partition,
            });
        }
    }
    let mut recipes = Vec::new();
    let mut consumed = vec![false; objects.len()];
    let mut recipe_names = std::collections::HashSet::new();
    for rc in &pc.recipes {
        if rc.name.is_empty() || !recipe_names.insert(rc.name.clone()) {
            return Err(format!(
                "project {}: recipe name {:?} is empty or repeated",
                pc.project_key, rc.name
            ));
        }
        if by_name.contains_key(&rc.name) {
            return Err(format!(
                "project {}: recipe {} has the name of an object",
                pc.project_key, rc.name
            ));
        }
        if rc.outputs.is_empty() {
            return Err(format!(
                "project {}: recipe {} has no outputs",
                pc.project_key, rc.name
            ));
        }
        let lookup = |n: &String| {
            by_name.get(n).copied().ok_or_else(|| {
                format!(
                    "project {}: recipe {} uses unknown object {n}",
                    pc.project_key, rc.name
                )
            })
        };
        let inputs = rc.inputs.iter().map(lookup).collect::<Result<Vec<_>, _>>()?;
        let outputs = rc.outputs.iter().map(lookup).collect::<Result<Vec<_>, _>>()?;
        let idx = recipes.len();
        for &o in &outputs {
            if let Some(prev) = objects[o].producer {
                let prev: &Recipe = &recipes[prev];
                return Err(format!(
                    "project {}: {} is written by both {} and {}",
                    pc.project_key, objects[o].name, prev.name, rc.name
                ));
            }
            objects[o].producer = Some(idx);
        }
        for &i in &inputs {
            consumed[i] = true;
        }
        recipes.push(Recipe {
            name: rc.name.clone(),
            kind: rc.kind.clone().unwrap_or_else(|| "python".to_owned()),
            inputs,
            outputs,
        });
    }
    for (i, obj) in objects.iter_mut().enumerate() {
        // A flow source (read, never written) cannot be built; an object outside the flow builds
        // through its implicit recipe.
        obj.computable = obj.producer.is_some() || !consumed[i];
    }
    rank_objects(&pc.project_key, &mut objects, &recipes)?;
    let mut project = Project {
        key: pc.project_key.clone(),
        config: pc.clone(),
        objects,
        recipes,
        scenarios: Vec::new(),
        by_name,
    };
    for sc in &pc.scenarios {
        let scenario = compile_scenario(&project, sc)?;
        if project.scenario(&scenario.id).is_some() {
            return Err(format!(
                "project {}: scenario {} is declared twice",
                pc.project_key, scenario.id
            ));
        }
        project.scenarios.push(scenario);
    }
    Ok(project)
}

/// A compiled scenario.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) active: bool,
    pub(crate) tags: Vec<String>,
    pub(crate) steps: Vec<Step>,
}

/// A compiled scenario step.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) action: StepAction,
}

/// What a step does.
#[derive(Debug)]
pub(crate) enum StepAction {
    /// Runs one job building these targets.
    Build { build: BuildType, targets: Vec<Target> },
    /// Succeeds after a while.
    Wait { duration_ms: u64 },
    /// Ends `WARNING` after a while.
    Warn { message: String, duration_ms: u64 },
    /// Ends `FAILED` after a while.
    Fail {
        message: String,
        code: Option<String>,
        duration_ms: u64,
    },
}

impl Step {
    /// The DSS step type this step stands for.
    pub(crate) fn dss_type(&self) -> &'static str {
        match self.action {
            StepAction::Build { .. } => "build_flowitem",
            StepAction::Wait { .. } | StepAction::Warn { .. } | StepAction::Fail { .. } => "custom_python",
        }
    }
}

/// Scenario ids that would clash with the API's own path words.
const RESERVED_SCENARIO_IDS: [&str; 1] = ["trigger"];

fn compile_scenario(project: &Project, sc: &ScenarioConfig) -> Result<Scenario, String> {
    let pk = &project.key;
    if sc.id.is_empty() || sc.id.contains('/') || RESERVED_SCENARIO_IDS.contains(&sc.id.as_str()) {
        return Err(format!("project {pk}: invalid scenario id {:?}", sc.id));
    }
    let mut steps: Vec<Step> = Vec::new();
    for (i, step) in sc.steps.iter().enumerate() {
        let (id, name) = step.labels();
        let id = id.map_or_else(|| format!("step_{}", i + 1), str::to_owned);
        if id.is_empty() || id.contains('/') || steps.iter().any(|s| s.id == id) {
            return Err(format!(
                "project {pk}: scenario {}: step id {id:?} is empty, repeated or has a '/'",
                sc.id
            ));
        }
        let where_ = format!("project {pk}: scenario {} step {id}", sc.id);
        let action = match step {
            StepConfig::Build {
                outputs, job_type, ..
            } => {
                if outputs.is_empty() {
                    return Err(format!("{where_}: a build step needs outputs"));
                }
                let targets = outputs
                    .iter()
                    .map(|o| {
                        let ty = match &o.object_type {
                            None => None,
                            Some(t) => Some(
                                ObjectType::parse(t)
                                    .ok_or_else(|| format!("{where_}: unknown object type {t}"))?,
                            ),
                        };
                        let obj = project
                            .find(&o.id, ty)
                            .ok_or_else(|| format!("{where_}: unknown object {}", o.id))?;
                        if !project.objects[obj].computable {
                            return Err(format!(
                                "{where_}: {} is a flow source (no recipe builds it)",
                                o.id
                            ));
                        }
                        let (label, partitions) = project.objects[obj].partitions_for(o.partition.as_deref());
                        Ok(Target {
                            project: pk.clone(),
                            obj,
                            partitions,
                            label,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                StepAction::Build {
                    build: job_type.unwrap_or(BuildType::NonRecursiveForced),
                    targets,
                }
            }
            StepConfig::Wait { duration_ms, .. } => StepAction::Wait {
                duration_ms: *duration_ms,
            },
            StepConfig::Warn {
                message, duration_ms, ..
            } => StepAction::Warn {
                message: message.clone(),
                duration_ms: *duration_ms,
            },
            StepConfig::Fail {
                message,
                code,
                duration_ms,
                ..
            } => StepAction::Fail {
                message: message.clone(),
                code: code.clone(),
                duration_ms: *duration_ms,
            },
        };
        steps.push(Step {
            name: name.map_or_else(|| id.clone(), str::to_owned),
            id,
            action,
        });
    }
    Ok(Scenario {
        id: sc.id.clone(),
        name: sc.name.clone().unwrap_or_else(|| sc.id.clone()),
        active: sc.active,
        tags: sc.tags.clone(),
        steps,
    })
}

fn check_dimensions(project: &str, name: &str, dims: &[DimensionConfig]) -> Result<(), String> {
    for d in dims {
        if d.name.is_empty() {
            return Err(format!(
                "project {project}: object {name} has a dimension without a name"
            ));
        }
        if let Some(kind) = &d.kind
            && kind != "time"
            && kind != "value"
        {
            return Err(format!(
                "project {project}: dimension {} of {name} must be `time` or `value`",
                d.name
            ));
        }
    }
    Ok(())
}

/// Gives every object its depth in the flow, refusing cycles.
fn rank_objects(project: &str, objects: &mut [Object], recipes: &[Recipe]) -> Result<(), String> {
    // Kahn's algorithm over objects: an object depends on the inputs of its producer.
    let n = objects.len();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (o, obj) in objects.iter().enumerate() {
        if let Some(r) = obj.producer {
            for &i in &recipes[r].inputs {
                indegree[o] += 1;
                dependents[i].push(o);
            }
        }
    }
    let mut ready: std::collections::VecDeque<usize> = (0..n).filter(|&o| indegree[o] == 0).collect();
    let mut next_rank = 0;
    let mut ranked = 0;
    while let Some(o) = ready.pop_front() {
        objects[o].rank = next_rank;
        next_rank += 1;
        ranked += 1;
        for &d in &dependents[o] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if ranked != n {
        return Err(format!("project {project}: the flow has a cycle"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Result<Catalog, Error> {
        let config: Config = serde_yaml::from_str(yaml).map_err(Error::ParseConfig)?;
        Catalog::build(&config)
    }

    #[test]
    fn flow_sources_are_not_computable_and_ranks_follow_the_flow() {
        let cat = config(
            "projects:\n- projectKey: P\n  datasets: [{name: a}, {name: c}, {name: b}, {name: lone}]\n  recipes:\n  - {name: r1, inputs: [a], outputs: [b]}\n  - {name: r2, inputs: [b], outputs: [c]}\n",
        )
        .unwrap();
        let p = &cat.projects["P"];
        let idx = |n: &str| p.find(n, None).unwrap();
        assert!(!p.objects[idx("a")].computable);
        assert!(p.objects[idx("b")].computable);
        assert!(p.objects[idx("lone")].computable);
        assert!(p.objects[idx("b")].rank < p.objects[idx("c")].rank);
        assert_eq!(p.upstream(idx("c")), vec![idx("b")]);
    }

    #[test]
    fn cycles_and_unknown_inputs_are_refused() {
        let cycle = "projects:\n- projectKey: P\n  datasets: [{name: a}, {name: b}]\n  recipes:\n  - {name: r1, inputs: [a], outputs: [b]}\n  - {name: r2, inputs: [b], outputs: [a]}\n";
        assert!(matches!(config(cycle), Err(Error::InvalidConfig(m)) if m.contains("cycle")));
        let unknown = "projects:\n- projectKey: P\n  datasets: [{name: a}]\n  recipes:\n  - {name: r1, inputs: [x], outputs: [a]}\n";
        assert!(matches!(config(unknown), Err(Error::InvalidConfig(m)) if m.contains("unknown object x")));
    }

    #[test]
    fn partition_overrides_inherit_from_the_object() {
        let cat = config(
            "defaults: {durationMs: 10}\nprojects:\n- projectKey: P\n  datasets:\n  - name: a\n    build: {warnings: 2, byPartition: {'2024-01-02': {outcome: FAILED, message: boom}}}\n",
        )
        .unwrap();
        let a = &cat.projects["P"].objects[0];
        assert_eq!(a.behaviour("2024-01-01").outcome, Outcome::Done);
        let b = a.behaviour("2024-01-02");
        assert_eq!(
            (b.outcome, b.warnings, b.duration_ms, b.message.as_str()),
            (Outcome::Failed, 2, 10, "boom")
        );
    }

    #[test]
    fn scenario_steps_are_checked_against_the_flow() {
        let base = "projects:\n- projectKey: P\n  datasets: [{name: src}, {name: a, partitioning: [{name: day}]}]\n  recipes: [{name: r, inputs: [src], outputs: [a]}]\n  scenarios:\n";
        let ok = config(&format!(
            "{base}  - id: S\n    steps:\n    - {{type: build, outputs: [{{id: a, partition: '2024-01-01,2024-01-02'}}], jobType: RECURSIVE_BUILD}}\n    - {{type: wait, durationMs: 5}}\n    - {{type: warn, id: w, message: hm}}\n"
        ))
        .unwrap();
        let s = ok.projects["P"].scenario("S").unwrap();
        let ids: Vec<&str> = s.steps.iter().map(|st| st.id.as_str()).collect();
        assert_eq!(ids, ["step_1", "step_2", "w"]);
        assert_eq!((s.name.as_str(), s.active), ("S", true));
        match &s.steps[0].action {
            StepAction::Build { build, targets } => {
                assert_eq!(*build, BuildType::Recursive);
                assert_eq!(targets[0].partitions, ["2024-01-01", "2024-01-02"]);
                assert_eq!(targets[0].label, "2024-01-01,2024-01-02");
            }
            other => panic!("{other:?}"),
        }
        let cases = [
            (
                "  - id: S\n    steps: [{type: build, outputs: [{id: nope}]}]\n",
                "unknown object nope",
            ),
            (
                "  - id: S\n    steps: [{type: build, outputs: [{id: src}]}]\n",
                "flow source",
            ),
            (
                "  - id: S\n    steps: [{type: build, outputs: []}]\n",
                "needs outputs",
            ),
            (
                "  - id: S\n    steps: [{type: build, outputs: [{id: a, type: SAVED_MODEL}]}]\n",
                "unknown object a",
            ),
            ("  - id: S\n  - id: S\n", "declared twice"),
            ("  - id: trigger\n", "invalid scenario id"),
            (
                "  - id: S\n    steps: [{type: wait, id: x, durationMs: 1}, {type: wait, id: x, durationMs: 1}]\n",
                "repeated",
            ),
        ];
        for (yaml, wanted) in cases {
            let err = config(&format!("{base}{yaml}")).unwrap_err();
            assert!(err.to_string().contains(wanted), "{yaml}: {err}");
        }
        let typo: Result<Config, _> = serde_yaml::from_str(&format!(
            "{base}  - id: S\n    steps: [{{type: wait, durationMs: 1, extra: 2}}]\n"
        ));
        assert!(typo.is_err(), "unknown step keys are refused");
        let unknown_type: Result<Config, _> =
            serde_yaml::from_str(&format!("{base}  - id: S\n    steps: [{{type: sleep}}]\n"));
        assert!(unknown_type.is_err());
    }

    #[test]
    fn key_permissions() {
        let key = ApiKey {
            config: ApiKeyConfig {
                key: "k".into(),
                id: "i".into(),
                projects: [
                    ("P".to_owned(), vec!["READ_CONF".to_owned()]),
                    ("*".to_owned(), vec!["MONITOR_JOBS".to_owned()]),
                ]
                .into(),
                ..ApiKeyConfig::default()
            },
        };
        assert!(key.can("P", "READ_CONF"));
        assert!(!key.can("P", "RUN_JOBS"));
        assert!(key.can("Q", "MONITOR_JOBS"));
    }
}
