//! From a `DatasetBuild` spec to the DSS job definition, its fingerprint, and the test that tells
//! whether a job found in DSS runs that definition (used to adopt a job whose start response was lost).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    crd::{BuildType, DatasetBuildSpec, ObjectType},
    dss,
};

/// The annotation that requests one more run without editing Git (its value is the request: change it
/// to request another run). Argo CD and Flux ignore annotations they do not manage.
pub const RERUN_ANNOTATION: &str = "kube-dss.dev/rerun";

/// The annotation that aborts the active DSS job without deleting the build (its value is the request:
/// each distinct value aborts the job active when it is handled, once; `status.lastHandledAbortAnnotation`
/// records the value handled).
pub const ABORT_ANNOTATION: &str = "kube-dss.dev/abort";

/// The annotation that resolves `StartOutcomeUnknown`: its value is the id of the DSS job to adopt.
pub const ADOPT_ANNOTATION: &str = "kube-dss.dev/adopt-job";

/// The DSS job definition for a spec, in the exact shape the official client sends.
pub fn job_definition(spec: &DatasetBuildSpec) -> dss::JobDefinition {
    let mut builder = dss::JobDefinitionBuilder::new(dss_build_type(spec.build_type.unwrap_or_default()))
        .with_refresh_metastore(spec.refresh_hive_metastore.unwrap_or(false))
        .with_auto_update_schema_before_each_recipe_run(
            spec.auto_update_schema_before_each_recipe_run.unwrap_or(false),
        );
    for output in &spec.outputs {
        builder = builder.with_output(
            output.id.clone(),
            Some(dss_object_type(output.object_type.unwrap_or_default())),
            output.project_key.as_deref(),
            output.partition.as_deref(),
        );
    }
    builder.build()
}

fn dss_build_type(t: BuildType) -> dss::BuildType {
    match t {
        BuildType::NonRecursiveForcedBuild => dss::BuildType::NonRecursiveForcedBuild,
        BuildType::RecursiveBuild => dss::BuildType::RecursiveBuild,
        BuildType::RecursiveForcedBuild => dss::BuildType::RecursiveForcedBuild,
        BuildType::RecursiveMissingOnlyBuild => dss::BuildType::RecursiveMissingOnlyBuild,
    }
}

fn dss_object_type(t: ObjectType) -> dss::ObjectType {
    match t {
        ObjectType::Dataset => dss::ObjectType::Dataset,
        ObjectType::ManagedFolder => dss::ObjectType::ManagedFolder,
        ObjectType::SavedModel => dss::ObjectType::SavedModel,
        ObjectType::StreamingEndpoint => dss::ObjectType::StreamingEndpoint,
        ObjectType::ModelEvaluationStore => dss::ObjectType::ModelEvaluationStore,
        ObjectType::RetrievableKnowledge => dss::ObjectType::RetrievableKnowledge,
    }
}

/// One output, normalised so that the spec and a DSS definition compare equal when DSS would build
/// the same thing: defaults filled in, partition lists in one form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NormalOutput {
    project_key: String,
    object_type: String,
    id: String,
    partition: String,
}

fn normal_spec_outputs(spec: &DatasetBuildSpec) -> BTreeSet<NormalOutput> {
    spec.outputs
        .iter()
        .map(|o| NormalOutput {
            project_key: o.project_key.clone().unwrap_or_else(|| spec.project_key.clone()),
            object_type: o.object_type.unwrap_or_default().as_str().to_string(),
            id: o.id.clone(),
            partition: o.partition.clone().unwrap_or_else(|| "NP".to_string()),
        })
        .collect()
}

/// A fingerprint of the run request: the job definition, the rerunToken and the rerun annotation.
/// A change of any of them is a new run request; deadlines, suspend and policies are not part of it.
pub fn run_fingerprint(spec: &DatasetBuildSpec, rerun_annotation: Option<&str>) -> String {
    let outputs: Vec<Value> = normal_spec_outputs(spec)
        .into_iter()
        .map(|o| json!([o.project_key, o.object_type, o.id, o.partition]))
        .collect();
    // serde_json maps keep insertion order only with preserve_order; json! with fixed keys and sorted
    // outputs gives a canonical text either way.
    let canonical = json!({
        "projectKey": spec.project_key,
        "type": spec.build_type.unwrap_or_default().as_str(),
        "outputs": outputs,
        "refreshHiveMetastore": spec.refresh_hive_metastore.unwrap_or(false),
        "autoUpdateSchemaBeforeEachRecipeRun": spec.auto_update_schema_before_each_recipe_run.unwrap_or(false),
        "rerunToken": spec.rerun_token,
        "rerunAnnotation": rerun_annotation,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// A hash of what a job builds (project, build type, outputs with defaults filled in), comparable
/// between a spec and a definition DSS reports.
pub fn definition_hash(spec: &DatasetBuildSpec) -> String {
    hash_of(
        &spec.project_key,
        spec.build_type.unwrap_or_default().as_str(),
        &normal_spec_outputs(spec),
    )
}

/// [`definition_hash`] of a job definition found in DSS, or `None` when it cannot be read.
pub fn dss_definition_hash(def: &Value, default_project: &str) -> Option<String> {
    let job_type = def
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("NON_RECURSIVE_FORCED_BUILD");
    let project = def
        .get("projectKey")
        .and_then(Value::as_str)
        .unwrap_or(default_project);
    let outputs = def.get("outputs").and_then(Value::as_array)?;
    let found: Option<BTreeSet<NormalOutput>> =
        outputs.iter().map(|o| normal_dss_output(o, project)).collect();
    Some(hash_of(project, job_type, &found?))
}

fn hash_of(project: &str, job_type: &str, outputs: &BTreeSet<NormalOutput>) -> String {
    let outputs: Vec<Value> = outputs
        .iter()
        .map(|o| json!([o.project_key, o.object_type, o.id, o.partition]))
        .collect();
    let canonical = json!({"projectKey": project, "type": job_type, "outputs": outputs});
    hex::encode(&Sha256::digest(canonical.to_string().as_bytes())[..8])
}

/// True when a job definition found in DSS (as listed) builds what `spec` describes.
pub fn definition_matches(spec: &DatasetBuildSpec, def: &Value) -> bool {
    dss_definition_hash(def, &spec.project_key).is_some_and(|h| h == definition_hash(spec))
}

/// Reads an output of a DSS definition in either form: `{type,id,projectKey,partition}` (what clients
/// send) or `{type,targetDataset,targetDatasetProjectKey,targetPartition}` (what DSS stores).
fn normal_dss_output(o: &Value, project: &str) -> Option<NormalOutput> {
    let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let object_type = s("type").unwrap_or("DATASET").to_string();
    let id = s("id")
        .or_else(|| s("targetDataset"))
        .or_else(|| s("targetManagedFolder"))
        .or_else(|| s("targetSavedModel"))
        .or_else(|| s("targetObjectId"))?
        .to_string();
    let project_key = s("projectKey")
        .or_else(|| s("targetDatasetProjectKey"))
        .or_else(|| s("targetManagedFolderProjectKey"))
        .or_else(|| s("targetSavedModelProjectKey"))
        .or_else(|| s("targetObjectProjectKey"))
        .unwrap_or(project)
        .to_string();
    let partition = match o.get("partition").or_else(|| o.get("targetPartition")) {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(Value::Array(parts)) if !parts.is_empty() => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => "NP".to_string(),
    };
    Some(NormalOutput {
        project_key,
        object_type,
        id,
        partition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BuildOutput;

    fn spec() -> DatasetBuildSpec {
        serde_json::from_value(json!({
            "projectKey": "IMPALA",
            "outputs": [{"id": "cat_train_hdfs", "partition": "NP"}, {"id": "f1", "type": "MANAGED_FOLDER"}],
        }))
        .unwrap()
    }

    #[test]
    fn fingerprint_ignores_output_order_and_defaults_but_not_tokens() {
        let a = spec();
        let mut b = spec();
        b.outputs.reverse();
        b.outputs[1].object_type = Some(ObjectType::Dataset);
        b.outputs[1].partition = None;
        assert_eq!(run_fingerprint(&a, None), run_fingerprint(&b, None));
        let mut c = spec();
        c.rerun_token = Some("2026-11-29".into());
        assert_ne!(run_fingerprint(&a, None), run_fingerprint(&c, None));
        assert_ne!(run_fingerprint(&a, None), run_fingerprint(&a, Some("x")));
        let mut d = spec();
        d.suspend = Some(true);
        d.active_deadline_seconds = Some(10);
        assert_eq!(run_fingerprint(&a, None), run_fingerprint(&d, None));
        let mut e = spec();
        e.outputs.push(BuildOutput {
            id: "x".into(),
            object_type: None,
            partition: None,
            project_key: None,
        });
        assert_ne!(run_fingerprint(&a, None), run_fingerprint(&e, None));
    }

    #[test]
    fn dss_definitions_match_in_both_output_forms() {
        let s = spec();
        let stored = json!({"type": "NON_RECURSIVE_FORCED_BUILD", "projectKey": "IMPALA", "outputs": [
            {"type": "DATASET", "targetDataset": "cat_train_hdfs", "targetDatasetProjectKey": "IMPALA", "targetPartition": "NP"},
            {"type": "MANAGED_FOLDER", "id": "f1", "projectKey": null, "partition": null}]});
        assert!(definition_matches(&s, &stored));
        let other_partition = json!({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [
            {"id": "cat_train_hdfs", "partition": "2024"}, {"type": "MANAGED_FOLDER", "id": "f1"}]});
        assert!(!definition_matches(&s, &other_partition));
        let other_type = json!({"type": "RECURSIVE_BUILD", "outputs": [
            {"id": "cat_train_hdfs"}, {"type": "MANAGED_FOLDER", "id": "f1"}]});
        assert!(!definition_matches(&s, &other_type));
        assert!(!definition_matches(
            &s,
            &json!({"type": "NON_RECURSIVE_FORCED_BUILD"})
        ));
    }

    #[test]
    fn job_definition_is_the_official_client_body() {
        let body = serde_json::to_value(job_definition(&spec())).unwrap();
        assert_eq!(
            body,
            json!({"type": "NON_RECURSIVE_FORCED_BUILD", "refreshHiveMetastore": false,
                   "outputs": [{"type": "DATASET", "id": "cat_train_hdfs", "projectKey": null, "partition": "NP"},
                               {"type": "MANAGED_FOLDER", "id": "f1", "projectKey": null, "partition": null}],
                   "autoUpdateSchemaBeforeEachRecipeRun": false})
        );
    }
}
