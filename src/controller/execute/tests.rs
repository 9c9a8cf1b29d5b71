//! The executor's scenarios: each runs one reconcile of the DSS job kind, with the apiserver's side
//! asserted request by request (by [`ApiServerVerifier`]) and DSS's side read from the emulator's
//! own records (see [`super::fixtures`]).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::controller::Action};
use serde_json::{Value, json};

use super::fixtures::*;
use crate::{
    controller::{context::RunContext, error::Error, execute::reconcile, job::JobKind},
    crd::DatasetBuild,
    dss::JobState,
};

const START: &str = "POST /projects/{pk}/jobs/";
const LIST: &str = "GET /projects/{pk}/jobs/";
const AUTH_INFO: &str = "GET /auth/info";
const ABORT: &str = "POST /projects/{pk}/jobs/{id}/abort";

fn published(type_: &str, reason: &str, action: &str, note: &str) -> Published {
    Published {
        type_: type_.into(),
        reason: reason.into(),
        action: action.into(),
        note: note.into(),
    }
}

async fn reconcile_once(build: &DatasetBuild, ctx: &Arc<RunContext<JobKind>>) -> Result<Action, Error> {
    within(
        "the reconcile (held by a request no handler answers?)",
        reconcile(Arc::new(build.clone()), ctx.clone()),
    )
    .await
}

#[tokio::test]
async fn a_start_is_recorded_then_sent_once_then_its_job_is_recorded() {
    let dss = Dss::start().await;
    let s = setup(&dss.emulator.base_url(), Timestamp::now());
    let build = DatasetBuild::test().finalized();
    let want = build.start_request(Timestamp::now());
    let (b, admin) = (build.clone(), dss.admin.clone());
    let apiserver = s.apiserver.run(|v| async move {
        let (v, recorded) = v.status_apply(&b, "1", Reply::Applied("2")).await;
        assert_eq!(recorded["phase"], "Starting");
        assert!(recorded.get("jobId").is_none());
        let request = recorded["startRequest"].clone();
        assert_eq!(request["fingerprint"], want.fingerprint.as_str());
        assert_eq!(
            request["definitionHash"],
            want.definition_hash.as_deref().unwrap()
        );
        assert_eq!(request["attempt"], 1);
        assert!(
            admin.jobs().await.unwrap().is_empty(),
            "nothing is sent before the request is recorded"
        );
        let (v, written) = v.status_apply(&b, "2", Reply::Applied("3")).await;
        let job_id = written["jobId"]
            .as_str()
            .expect("the job id is recorded")
            .to_string();
        assert_eq!(
            (&written["phase"], &written["state"]),
            (&json!("Queued"), &json!("NOT_STARTED"))
        );
        assert_eq!(written["startRequest"]["fingerprint"], request["fingerprint"]);
        let (v, event) = v.event_create(&b).await;
        let note = format!("started DSS job {job_id}");
        assert_eq!(event, published("Normal", "JobStarted", "StartJob", &note));
        (v, job_id)
    });
    let action = reconcile_once(&build, &s.ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    let (v, job_id) = within("the apiserver scenario", apiserver).await.unwrap();
    v.done();
    assert_eq!(dss.requests(START).await, 1);
    assert_eq!(dss.jobs().await, vec![(job_id, "RUNNING".to_string())]);
    assert!(
        s.ctx
            .shared
            .metrics
            .encode()
            .contains("kube_dss_jobs_started_total 1")
    );
}

#[tokio::test]
async fn a_lost_start_is_found_in_dss_and_adopted_without_a_second_start() {
    let dss = Dss::start().await;
    let build = DatasetBuild::test().finalized().with_start_request(120);
    // The start whose answer was lost: the same definition, by the same key.
    let lost = dss.start_job(&build).await;
    // This process has been acting for longer than the crash guard's grace.
    let s = setup(&dss.emulator.base_url(), ago(120));
    let (b, job_id) = (build.clone(), lost.clone());
    let apiserver = s.apiserver.run(|v| async move {
        let (v, written) = v.status_apply(&b, "1", Reply::Applied("2")).await;
        assert_eq!(written["jobId"], job_id.as_str());
        let recorded = b.status.as_ref().and_then(|s| s.start_request.as_ref()).unwrap();
        assert_eq!(
            written["startRequest"]["fingerprint"],
            recorded.fingerprint.as_str()
        );
        let (v, event) = v.event_create(&b).await;
        let note = format!("adopted DSS job {job_id} whose start response was not recorded");
        assert_eq!(event, published("Normal", "JobAdopted", "AdoptJob", &note));
        v
    });
    let action = reconcile_once(&build, &s.ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::ZERO));
    within("the apiserver scenario", apiserver).await.unwrap().done();
    assert_eq!(dss.requests(LIST).await, 1, "the search lists the project's jobs");
    assert_eq!(dss.requests(AUTH_INFO).await, 1, "and asks who the key is");
    assert_eq!(
        dss.requests(START).await,
        1,
        "only the lost start: nothing was started again"
    );
    assert_eq!(dss.jobs().await.len(), 1);
    assert!(
        s.ctx
            .shared
            .metrics
            .encode()
            .contains("kube_dss_jobs_adopted_total 1")
    );
}

#[tokio::test]
async fn deleting_a_build_aborts_its_running_job_and_keeps_the_finalizer() {
    let dss = Dss::start().await;
    let base = DatasetBuild::test();
    let job_id = dss.start_job(&base).await;
    let build = base.finalized().with_job(&job_id, JobState::Running).deleting();
    let s = setup(&dss.emulator.base_url(), Timestamp::now());
    let (b, id) = (build.clone(), job_id.clone());
    let apiserver = s.apiserver.run(|v| async move {
        let (v, event) = v.event_create(&b).await;
        let note = format!("resource deleted: aborting DSS job {id}");
        assert_eq!(event, published("Normal", "AbortRequested", "AbortJob", &note));
        let (v, written) = v.status_apply(&b, "1", Reply::Applied("2")).await;
        assert_eq!(written["abortRequest"]["reason"], "Deleted");
        assert_eq!(written["jobId"], id.as_str());
        v
    });
    let err = reconcile_once(&build, &s.ctx).await.unwrap_err();
    let Error::AbortPending {
        run: pending,
        retry_after,
    } = &err
    else {
        panic!("the finalizer is kept while the abort is pending, not {err:?}");
    };
    assert_eq!(pending, &format!("DSS job {job_id}"));
    assert_eq!(*retry_after, Duration::from_secs(2));
    // No finalizer removal (nor anything else) was asked.
    within("the apiserver scenario", apiserver).await.unwrap().done();
    assert_eq!(dss.requests(ABORT).await, 1);
    assert_eq!(dss.jobs().await, vec![(job_id, "ABORTED".to_string())]);
}

#[tokio::test]
async fn past_the_finalizer_timeout_an_unreachable_dss_releases_the_finalizer_with_a_warning() {
    let build = DatasetBuild::test()
        .finalized()
        .with_job("build_slow_2030-01-01T00-00-00.000", JobState::Running)
        .deleted_ago(601);
    let s = setup(&unreachable_dss(), Timestamp::now());
    let b = build.clone();
    let apiserver = s.apiserver.run(|v| async move {
        let (v, event) = v.event_create(&b).await;
        assert_eq!(
            (event.type_.as_str(), event.reason.as_str(), event.action.as_str()),
            ("Warning", "FinalizerReleased", "ReleaseFinalizer")
        );
        let expected =
            "could not abort DSS job build_slow_2030-01-01T00-00-00.000 within the finalizer timeout";
        assert!(event.note.starts_with(expected), "{}", event.note);
        v.finalizer_removal(&b).await
    });
    let action = reconcile_once(&build, &s.ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    within("the apiserver scenario", apiserver).await.unwrap().done();
    let metrics = s.ctx.shared.metrics.encode();
    let forced = "kube_dss_finalizer_forced_releases_total{reason=\"DssUnreachable\"} 1";
    assert!(metrics.contains(forced), "{metrics}");
}

#[tokio::test]
async fn a_finished_job_whose_status_write_conflicts_publishes_nothing_and_requeues() {
    let dss = Dss::start().await;
    let base = DatasetBuild::test().building("instant");
    let job_id = dss.start_job(&base).await;
    let build = base.finalized().with_job(&job_id, JobState::Running);
    let s = setup(&dss.emulator.base_url(), Timestamp::now());
    // A job new to this process waits for the connection's next listing (no call, no write); the
    // listing (every second here) no longer shows the finished job, so the next look asks DSS,
    // finds it DONE and writes.
    reconcile_once(&build, &s.ctx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b = build.clone();
    let apiserver = s.apiserver.run(|v| async move {
        let (v, written) = v.status_apply(&b, "1", Reply::Conflict).await;
        assert_eq!(
            (&written["phase"], &written["state"]),
            (&json!("Succeeded"), &json!("DONE"))
        );
        v
    });
    let action = reconcile_once(&build, &s.ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_millis(500)));
    // No JobSucceeded event: the newer copy is reconciled next and sees the transition again.
    within("the apiserver scenario", apiserver).await.unwrap().done();
    let metrics = s.ctx.shared.metrics.encode();
    // Known series start at zero: nothing was counted for the job.
    for outcome in ["done", "failed", "aborted"] {
        let zero = format!("kube_dss_job_duration_seconds_count{{outcome=\"{outcome}\"}} 0");
        assert!(metrics.contains(&zero), "{metrics}");
    }
}

/// Latest, as another writer left it: labelled, status as the start request recorded it.
fn labelled(build: &DatasetBuild, status: &Value, rv: &str) -> DatasetBuild {
    let mut latest = build.clone().with_status_json(status).at(rv);
    latest.labels_mut().insert("team".into(), "a".into());
    latest
}

#[tokio::test]
async fn a_start_whose_job_write_conflicts_writes_the_job_again_on_the_newest_version() {
    let dss = Dss::start().await;
    let s = setup(&dss.emulator.base_url(), Timestamp::now());
    let build = DatasetBuild::test().finalized();
    let (b, admin) = (build.clone(), dss.admin.clone());
    let apiserver = s.apiserver.run(|v| async move {
        let (v, recorded) = v.status_apply(&b, "1", Reply::Applied("2")).await;
        let (v, written) = v.status_apply(&b, "2", Reply::Conflict).await;
        let job_id = written["jobId"].as_str().unwrap().to_string();
        let v = v.status_get(&labelled(&b, &recorded, "3")).await;
        let (v, rewritten) = v.status_apply(&b, "3", Reply::Applied("4")).await;
        assert_eq!(rewritten, written, "the same status, on the newest version");
        let jobs = admin.project_jobs("PROJ").await.unwrap();
        assert_eq!(jobs.len(), 1, "one start, never sent again");
        assert_eq!(jobs[0].id, job_id);
        let (v, event) = v.event_create(&b).await;
        assert_eq!(event.reason, "JobStarted");
        v
    });
    let action = reconcile_once(&build, &s.ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    within("the apiserver scenario", apiserver).await.unwrap().done();
    assert_eq!(dss.requests(START).await, 1);
}

#[tokio::test]
async fn a_start_whose_request_was_replaced_meanwhile_is_not_written_over() {
    let dss = Dss::start().await;
    let s = setup(&dss.emulator.base_url(), Timestamp::now());
    let build = DatasetBuild::test().finalized();
    let b = build.clone();
    let apiserver = s.apiserver.run(|v| async move {
        let (v, mut recorded) = v.status_apply(&b, "1", Reply::Applied("2")).await;
        let (v, _) = v.status_apply(&b, "2", Reply::Conflict).await;
        // Another writer recorded a start request of its own since.
        recorded["startRequest"]["requestedAt"] = json!("2030-01-01T00:00:00Z");
        v.status_get(&labelled(&b, &recorded, "3")).await
    });
    let err = reconcile_once(&build, &s.ctx).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    // Neither a write over the other request nor an event.
    within("the apiserver scenario", apiserver).await.unwrap().done();
    assert_eq!(dss.requests(START).await, 1);
}
