//! From a `DatasetBuild` spec to the DSS job definition, its fingerprint, and the test that tells
//! whether a job found in DSS runs that definition (used to adopt a job whose start response was lost).

use std::collections::BTreeSet;

use crate::controller::execute::controls::digest;
use serde_json::{Value, json};

use crate::{
    crd::{BuildOutput, DatasetBuildSpec},
    dss,
};

/// The DSS job definition for a spec, in the exact shape the official client sends.
pub(crate) fn job_definition(spec: &DatasetBuildSpec) -> dss::JobDefinition {
    let mut builder = dss::JobDefinitionBuilder::new(spec.build_type.unwrap_or_default())
        .with_refresh_metastore(spec.refresh_hive_metastore.unwrap_or(false))
        .with_auto_update_schema_before_each_recipe_run(
            spec.auto_update_schema_before_each_recipe_run.unwrap_or(false),
        );
    for BuildOutput {
        id,
        object_type,
        partition,
        project_key,
    } in &spec.outputs
    {
        builder = builder.with_output(
            id.clone(),
            Some(object_type.unwrap_or_default()),
            project_key.as_deref(),
            partition.as_deref(),
        );
    }
    builder.build()
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

/// The outputs of a spec in `project` (the spec's project key), normalised.
fn normal_spec_outputs(project: &str, outputs: &[BuildOutput]) -> BTreeSet<NormalOutput> {
    outputs
        .iter()
        .map(
            |BuildOutput {
                 id,
                 object_type,
                 partition,
                 project_key,
             }| NormalOutput {
                project_key: project_key.clone().unwrap_or_else(|| project.to_string()),
                object_type: object_type.unwrap_or_default().as_str().to_string(),
                id: id.clone(),
                partition: partition.clone().unwrap_or_else(|| "NP".to_string()),
            },
        )
        .collect()
}

/// A fingerprint of the run request: the job definition, the rerunToken and the rerun annotation.
/// A change of any of them is a new run request; deadlines, suspend and policies are not part of it.
/// Every field of the spec is named here, so a field added to the CRD does not compile until it is
/// placed: in the run request, or among the controls of a run.
pub(crate) fn run_fingerprint(spec: &DatasetBuildSpec, rerun_annotation: Option<&str>) -> String {
    let DatasetBuildSpec {
        // Where the run goes, not what it is: a new connection is not a new run request.
        connection_ref: _,
        project_key,
        build_type,
        outputs,
        refresh_hive_metastore,
        auto_update_schema_before_each_recipe_run,
        rerun_token,
        // Controls of the run, applied to the active run as they change.
        on_spec_change: _,
        suspend: _,
        active_deadline_seconds: _,
        start_deadline_seconds: _,
        retry: _,
        fail_on_warnings: _,
        deletion_policy: _,
    } = spec;
    // serde_json maps keep insertion order only with preserve_order; json! with fixed keys and sorted
    // outputs gives a canonical text either way.
    digest(&json!({
        "projectKey": project_key,
        "type": build_type.unwrap_or_default().as_str(),
        "outputs": outputs_json(&normal_spec_outputs(project_key, outputs)),
        "refreshHiveMetastore": refresh_hive_metastore.unwrap_or(false),
        "autoUpdateSchemaBeforeEachRecipeRun": auto_update_schema_before_each_recipe_run.unwrap_or(false),
        "rerunToken": rerun_token,
        "rerunAnnotation": rerun_annotation,
    }))
}

/// A hash of what a job builds (project, build type, outputs with defaults filled in), comparable
/// between a spec and a definition DSS reports.
pub(crate) fn definition_hash(spec: &DatasetBuildSpec) -> String {
    hash_of(
        &spec.project_key,
        spec.build_type.unwrap_or_default().as_str(),
        &normal_spec_outputs(&spec.project_key, &spec.outputs),
    )
}

/// [`definition_hash`] of a job definition found in DSS, or `None` when it cannot be read.
pub(crate) fn dss_definition_hash(def: &Value, default_project: &str) -> Option<String> {
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
    digest(&json!({"projectKey": project, "type": job_type, "outputs": outputs_json(outputs)}))
}

fn outputs_json(outputs: &BTreeSet<NormalOutput>) -> Vec<Value> {
    outputs
        .iter()
        .map(|o| json!([o.project_key, o.object_type, o.id, o.partition]))
        .collect()
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
    use crate::crd::{BuildOutput, ObjectType};

    fn definition_matches(spec: &DatasetBuildSpec, def: &Value) -> bool {
        dss_definition_hash(def, &spec.project_key).is_some_and(|h| h == definition_hash(spec))
    }

    fn spec() -> DatasetBuildSpec {
        serde_json::from_value(json!({
            "projectKey": "IMPALA",
            "outputs": [{"id": "cat_train_hdfs", "partition": "NP"}, {"id": "f1", "type": "MANAGED_FOLDER"}],
        }))
        .unwrap()
    }

    #[test]
    fn the_fingerprint_of_a_known_spec_is_stable_across_releases() {
        // Builds in clusters carry this value in startRequest.fingerprint: a change of the canonical
        // text would make every finished build start one more job after an upgrade.
        assert_eq!(run_fingerprint(&spec(), None), "1e538b781990c528");
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
