//! What `kubectl dss rerun` and `kubectl dss abort` may do to a build, decided from the object alone:
//! the same rules as the Argo CD actions in `deploy/argocd` (their `discovery.lua` and `action.lua`),
//! checked against the same fixtures by the tests below.

use serde_json::Value;

use crate::{
    controller::definition::{ABORT_ANNOTATION, RERUN_ANNOTATION},
    crd::Phase,
};

/// The fields of a DatasetBuild the request rules read. Built from the object's JSON, so that status
/// fields this binary's types may not know yet (`lastHandledAbortAnnotation`) are read too.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct RunView {
    pub deleting: bool,
    pub suspended: bool,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub phase: Option<Phase>,
    pub job_id: Option<String>,
    pub rerun: Option<String>,
    pub rerun_handled: Option<String>,
    pub abort: Option<String>,
    pub abort_handled: Option<String>,
    /// Why the operator is already aborting the job (`status.abortRequest.reason`), if it is.
    pub aborting: Option<String>,
}

impl RunView {
    pub(super) fn from_json(obj: &Value) -> RunView {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let meta = &obj["metadata"];
        let status = &obj["status"];
        RunView {
            deleting: !meta["deletionTimestamp"].is_null(),
            suspended: obj["spec"]["suspend"].as_bool() == Some(true),
            generation: meta["generation"].as_i64(),
            observed_generation: status["observedGeneration"].as_i64(),
            phase: serde_json::from_value(status["phase"].clone()).ok(),
            job_id: text(&status["jobId"]),
            rerun: text(&meta["annotations"][RERUN_ANNOTATION]),
            rerun_handled: text(&status["lastHandledRerunAnnotation"]),
            abort: text(&meta["annotations"][ABORT_ANNOTATION]),
            abort_handled: text(&status["lastHandledAbortAnnotation"]),
            aborting: status["abortRequest"].is_object().then(|| {
                text(&status["abortRequest"]["reason"]).unwrap_or_else(|| "abort requested".to_owned())
            }),
        }
    }

    fn phase_name(&self) -> &'static str {
        self.phase.map_or("none", Phase::as_str)
    }
}

/// A request the user made, stamped in an annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// One more run of the same definition.
    Rerun,
    /// Abort the active DSS job, keep the build.
    Abort,
}

impl Request {
    /// The annotation that carries the request.
    pub(super) fn annotation(self) -> &'static str {
        match self {
            Request::Rerun => RERUN_ANNOTATION,
            Request::Abort => ABORT_ANNOTATION,
        }
    }

    /// Why the request does not apply to the build now, or `None` when it does.
    pub(super) fn refusal(self, build: &RunView) -> Option<String> {
        match self {
            Request::Rerun => rerun_refusal(build),
            Request::Abort => abort_refusal(build),
        }
    }

    /// What the operator does with the request, for the confirmation line.
    pub(super) fn effect(self) -> &'static str {
        match self {
            Request::Rerun => "the operator starts one new DSS job for it",
            Request::Abort => {
                "the operator aborts the active DSS job; the build ends Aborted (AbortRequested)"
            }
        }
    }
}

/// A request stamped in `annotation` that the operator has not acted upon yet.
fn pending<'a>(value: &'a Option<String>, handled: &Option<String>) -> Option<&'a str> {
    value.as_deref().filter(|v| Some(*v) != handled.as_deref())
}

fn rerun_refusal(b: &RunView) -> Option<String> {
    let current = match (b.generation, b.observed_generation) {
        (None, _) => true,
        (Some(generation), observed) => observed.is_some_and(|o| o >= generation),
    };
    let finished = matches!(b.phase, Some(Phase::Succeeded | Phase::Failed | Phase::Aborted));
    if b.deleting {
        Some("the build is being deleted".to_owned())
    } else if b.suspended {
        Some("the build is suspended: resume it first".to_owned())
    } else if !current {
        Some("the operator has not acted on the latest spec yet: rerun once it has".to_owned())
    } else if !finished {
        Some(format!(
            "the last run has not finished (phase {}): nothing to rerun yet",
            b.phase_name()
        ))
    } else {
        pending(&b.rerun, &b.rerun_handled)
            .map(|v| format!("a rerun is already requested ({RERUN_ANNOTATION}={v})"))
    }
}

fn abort_refusal(b: &RunView) -> Option<String> {
    let job_active = b.job_id.is_some() && matches!(b.phase, Some(Phase::Queued | Phase::Running));
    if b.deleting {
        Some("the build is being deleted: its finalizer aborts the job".to_owned())
    } else if !job_active {
        Some(format!(
            "no DSS job is queued or running (phase {})",
            b.phase_name()
        ))
    } else if let Some(v) = pending(&b.abort, &b.abort_handled) {
        Some(format!("an abort is already requested ({ABORT_ANNOTATION}={v})"))
    } else {
        b.aborting
            .as_ref()
            .map(|why| format!("the operator is already aborting the job ({why})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(status: Value, annotations: Value, spec: Value) -> RunView {
        RunView::from_json(&json!({
            "metadata": {"name": "b", "generation": 2, "annotations": annotations},
            "spec": spec,
            "status": status,
        }))
    }

    #[test]
    fn refusals() {
        let done = json!({"observedGeneration": 2, "phase": "Succeeded", "jobId": "j1"});
        let running = json!({"observedGeneration": 2, "phase": "Running", "jobId": "j1"});
        let cases: Vec<(&str, Request, RunView, Option<&str>)> = vec![
            (
                "rerun after success",
                Request::Rerun,
                view(done.clone(), json!({}), json!({})),
                None,
            ),
            (
                "rerun after a handled rerun",
                Request::Rerun,
                view(
                    json!({"observedGeneration": 2, "phase": "Failed", "lastHandledRerunAnnotation": "t1"}),
                    json!({"kube-dss.dev/rerun": "t1"}),
                    json!({}),
                ),
                None,
            ),
            (
                "rerun while one is pending",
                Request::Rerun,
                view(done.clone(), json!({"kube-dss.dev/rerun": "t2"}), json!({})),
                Some("a rerun is already requested (kube-dss.dev/rerun=t2)"),
            ),
            (
                "rerun while running",
                Request::Rerun,
                view(running.clone(), json!({}), json!({})),
                Some("the last run has not finished (phase Running): nothing to rerun yet"),
            ),
            (
                "rerun of a stale status",
                Request::Rerun,
                view(
                    json!({"observedGeneration": 1, "phase": "Succeeded"}),
                    json!({}),
                    json!({}),
                ),
                Some("the operator has not acted on the latest spec yet: rerun once it has"),
            ),
            (
                "rerun while suspended",
                Request::Rerun,
                view(done.clone(), json!({}), json!({"suspend": true})),
                Some("the build is suspended: resume it first"),
            ),
            (
                "abort a running job",
                Request::Abort,
                view(running.clone(), json!({}), json!({})),
                None,
            ),
            (
                "abort a queued job after an earlier handled abort",
                Request::Abort,
                view(
                    json!({"observedGeneration": 2, "phase": "Queued", "jobId": "j2", "lastHandledAbortAnnotation": "t1"}),
                    json!({"kube-dss.dev/abort": "t1"}),
                    json!({}),
                ),
                None,
            ),
            (
                "abort with no job",
                Request::Abort,
                view(done, json!({}), json!({})),
                Some("no DSS job is queued or running (phase Succeeded)"),
            ),
            (
                "abort twice",
                Request::Abort,
                view(running.clone(), json!({"kube-dss.dev/abort": "t3"}), json!({})),
                Some("an abort is already requested (kube-dss.dev/abort=t3)"),
            ),
            (
                "abort while the operator aborts for a deadline",
                Request::Abort,
                view(
                    json!({"observedGeneration": 2, "phase": "Running", "jobId": "j1",
                           "abortRequest": {"reason": "DeadlineExceeded", "requestedAt": "2026-01-01T00:00:00Z"}}),
                    json!({}),
                    json!({}),
                ),
                Some("the operator is already aborting the job (DeadlineExceeded)"),
            ),
            (
                "abort a build with no status",
                Request::Abort,
                view(Value::Null, json!({}), json!({})),
                Some("no DSS job is queued or running (phase none)"),
            ),
        ];
        for (name, request, build, want) in cases {
            assert_eq!(request.refusal(&build).as_deref(), want, "{name}");
        }
    }

    /// The rules agree with the Argo CD discovery on every fixture its tests use: a request is
    /// accepted exactly when the Argo CD action is enabled.
    #[test]
    fn rules_match_the_argo_cd_discovery() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/argocd/resource_customizations/kube-dss.dev/DatasetBuild/actions");
        let tests: Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join("action_test.yaml")).unwrap()).unwrap();
        let discovery = tests["discoveryTests"].as_array().unwrap();
        assert!(discovery.len() >= 10, "discovery tests: {}", discovery.len());
        for case in discovery {
            let path = root.join(case["inputPath"].as_str().unwrap());
            let obj: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let build = RunView::from_json(&obj);
            for (request, action) in [(Request::Rerun, "rerun"), (Request::Abort, "abort")] {
                let entry = case["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["name"] == action)
                    .unwrap();
                let enabled = entry["disabled"].as_bool() != Some(true);
                assert_eq!(
                    request.refusal(&build).is_none(),
                    enabled,
                    "{action} on {}: {:?}",
                    path.display(),
                    request.refusal(&build)
                );
            }
        }
    }
}
