//! What a `ScenarioRun` asks DSS for: its run request's fingerprint, the hash of what it fires, and the
//! request marker put into the run's parameters, by which a fire whose answer was lost is found again.

use crate::controller::execute::controls::digest;
use serde_json::{Map, Value, json};

use crate::crd::{ScenarioRunSpec, StartRequest};

/// The parameter key of the request marker (documented on `spec.params`; a value set there is replaced).
pub(crate) const MARKER_KEY: &str = "kube-dss.dev/request";

/// A fingerprint of the run request: the scenario, its parameters, the rerunToken and the rerun
/// annotation. Every field of the spec is named here, so a field added to the CRD does not compile
/// until it is placed.
pub(crate) fn run_fingerprint(spec: &ScenarioRunSpec, rerun_annotation: Option<&str>) -> String {
    let ScenarioRunSpec {
        // Where the run goes, not what it is.
        connection_ref: _,
        project_key,
        scenario_id,
        params,
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
    digest(&json!({
        "projectKey": project_key,
        "scenarioId": scenario_id,
        "params": params.clone().unwrap_or_default(),
        "rerunToken": rerun_token,
        "rerunAnnotation": rerun_annotation,
    }))
}

/// A hash of what a fire asks for (project, scenario, parameters).
pub(crate) fn definition_hash(spec: &ScenarioRunSpec) -> String {
    digest(&json!({
        "projectKey": spec.project_key,
        "scenarioId": spec.scenario_id,
        "params": spec.params.clone().unwrap_or_default(),
    }))
}

/// The marker of one start request: unique per object, request and attempt, and derived from the
/// recorded request alone, so a search after a crash computes the same value as the send did.
pub(crate) fn marker(uid: &str, request: &StartRequest) -> String {
    format!(
        "{uid}/{}/{}/{}",
        request.fingerprint,
        request.attempt.unwrap_or(1),
        request.requested_at.0.as_second()
    )
}

/// The parameters a fire sends: the spec's, and the marker.
pub(crate) fn fire_params(spec: &ScenarioRunSpec, marker: &str) -> Map<String, Value> {
    let mut params = spec.params.clone().unwrap_or_default();
    params.insert(MARKER_KEY.to_string(), Value::String(marker.to_string()));
    params
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;

    fn spec(params: Value) -> ScenarioRunSpec {
        serde_json::from_value(json!({"projectKey": "P", "scenarioId": "S", "params": params})).unwrap()
    }

    #[test]
    fn the_fingerprint_follows_params_and_tokens_but_not_their_order() {
        let a = spec(json!({"x": 1, "y": "b"}));
        let b = spec(json!({"y": "b", "x": 1}));
        assert_eq!(run_fingerprint(&a, None), run_fingerprint(&b, None));
        assert_ne!(
            run_fingerprint(&a, None),
            run_fingerprint(&spec(json!({"x": 2})), None)
        );
        assert_ne!(run_fingerprint(&a, None), run_fingerprint(&a, Some("r")));
        let mut suspended = a.clone();
        suspended.suspend = Some(true);
        assert_eq!(run_fingerprint(&a, None), run_fingerprint(&suspended, None));
    }

    #[test]
    fn a_fire_carries_the_params_and_its_marker() {
        let request = StartRequest {
            requested_at: Time(Timestamp::from_second(1_800_000_000).unwrap()),
            fingerprint: "fp".into(),
            attempt: Some(2),
            definition_hash: None,
            refused: None,
        };
        let m = marker("u-1", &request);
        assert_eq!(m, "u-1/fp/2/1800000000");
        let params = fire_params(&spec(json!({"x": 1})), &m);
        assert_eq!(
            Value::Object(params),
            json!({"x": 1, "kube-dss.dev/request": "u-1/fp/2/1800000000"})
        );
    }
}
