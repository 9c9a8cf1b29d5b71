//! End to end, on the real apiserver with the DSS emulator: how a build's life ends when things go
//! wrong around it. The bounded finalizer release (`--finalizer-timeout-seconds`), graceful shutdown
//! on SIGTERM with leader election, and lost start responses: two builds of one definition, and the
//! `kube-dss.dev/adopt-job` annotation. Job counts come from the emulator's own records.

// Fixture helpers outside #[test] functions fail loudly on set-up errors, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::{Operator, TestNs, wait_for, wait_gone};
use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Secret, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kube_dss::{
    crd::{ADOPT_ANNOTATION, DatasetBuild, Phase},
    emulator::{
        self, Config, Faults,
        admin::{AdminClient, DropMode, JobRecord},
    },
};
use serde_json::json;

const KEY: &str = "lifecycle-key-71c3a9e2";
const FINALIZER: &str = "kube-dss.dev/abort-job";

const EMULATOR: &str = r#"
instance: {maxRunningActivities: 50}
projects:
  - projectKey: PROJ
    datasets:
      - {name: quick, build: {durationMs: 1500, log: ["building quick"]}}
      - {name: slow, build: {durationMs: 600000}}
apiKeys:
  - key: lifecycle-key-71c3a9e2
    id: kube-dss-operator
    projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}
"#;

/// A namespace with a DSSConnection `dss` to a fresh emulator.
struct Env {
    ns: TestNs,
    emu: emulator::Handle,
    admin: AdminClient,
    builds: Api<DatasetBuild>,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        let emu = emulator::spawn(
            Config::from_yaml(EMULATOR).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let admin = AdminClient::new(emu.base_url());
        let client = harness::client().await;
        let ns = TestNs::new(&client, prefix).await;
        ns.secret("dss-api-key", "apiKey", KEY).await;
        ns.connection("dss", &emu.base_url(), Some((50, 8))).await;
        let builds = ns.api();
        Env {
            ns,
            emu,
            admin,
            builds,
        }
    }

    async fn create(&self, name: &str, output: &str) -> DatasetBuild {
        let build: DatasetBuild = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
            "metadata": {"name": name},
            "spec": {"connectionRef": {"name": "dss"}, "projectKey": "PROJ", "outputs": [{"id": output}]},
        }))
        .unwrap();
        self.builds.create(&PostParams::default(), &build).await.unwrap()
    }

    async fn wait_phase(&self, name: &str, phase: Phase, secs: u64) -> DatasetBuild {
        wait_for(
            &self.builds,
            name,
            Duration::from_secs(secs),
            |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(phase),
        )
        .await
    }

    async fn jobs_of(&self, output: &str) -> Vec<JobRecord> {
        self.admin
            .jobs()
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.def["outputs"][0]["id"].as_str() == Some(output))
            .collect()
    }

    /// The events about one object, oldest first.
    async fn events_of(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = self.ns.api();
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }

    async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.builds
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Starts a job in DSS with the operator's key, as someone would by hand.
    async fn start_by_hand(&self, output: &str) -> String {
        let url = format!("{}/public/api/projects/PROJ/jobs/", self.emu.base_url());
        let job: serde_json::Value = reqwest::Client::new()
            .post(url)
            .basic_auth(KEY, Some(""))
            .json(&json!({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"type": "DATASET", "id": output}]}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        job["id"].as_str().unwrap().to_string()
    }

    /// Waits until the emulator has dropped every start response it was asked to drop.
    async fn drops_spent(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.admin.faults().await.unwrap().drop_start_responses != 0 {
            assert!(Instant::now() < deadline, "the operator sent no start in 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn cleanup(self) {
        let _ = self.admin.clear_faults().await;
        let _ = self
            .builds
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        self.ns.cleanup().await;
        self.emu.shutdown().await;
    }
}

fn condition<'a>(b: &'a DatasetBuild, type_: &str) -> Option<&'a Condition> {
    b.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

fn job_id(b: &DatasetBuild) -> Option<String> {
    b.status.as_ref()?.job_id.clone()
}

fn stalled_unknown(b: &DatasetBuild) -> bool {
    condition(b, "Stalled").is_some_and(|c| c.status == "True" && c.reason == "StartOutcomeUnknown")
}

/// Whether a `/metrics` text holds this exact sample line.
fn has_sample(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l.trim() == line)
}

/// The finalizer timeout of the deletion tests, in seconds.
const TIMEOUT: &str = "12";

fn operator_args() -> [&'static str; 2] {
    ["--finalizer-timeout-seconds", TIMEOUT]
}

/// Deletes a running build while DSS cannot be used (`break_dss` makes it so), and checks the
/// finalizer's bounded wait: held at half the timeout, released only once it passed, with a
/// Warning `FinalizerReleased` naming `cause` and the forced-release metric. The DSS job is left
/// running: nothing could abort it.
async fn finalizer_released_after_the_timeout(
    prefix: &str,
    cause: &str,
    break_dss: impl AsyncFnOnce(&Env, &mut Operator),
) {
    let env = Env::new(prefix).await;
    let mut op = Operator::start(&env.ns.name, &operator_args());
    op.ready().await;
    env.create("long", "slow").await;
    let running = env.wait_phase("long", Phase::Running, 60).await;
    let job = job_id(&running).unwrap();
    break_dss(&env, &mut op).await;
    let timeout: u64 = TIMEOUT.parse().unwrap();
    env.builds.delete("long", &DeleteParams::default()).await.unwrap();
    let deleted_at = Instant::now();

    // Held before the timeout.
    tokio::time::sleep(Duration::from_secs(timeout / 2)).await;
    let held = env.builds.get_opt("long").await.unwrap();
    let held = held.unwrap_or_else(|| panic!("released before the timeout; log:\n{}", op.log_text()));
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), [FINALIZER], "the finalizer is held");
    assert!(
        !has_sample(
            &op.metrics().await,
            &format!("kube_dss_finalizer_forced_releases_total{{reason=\"{cause}\"}} 1")
        ),
        "no forced release yet"
    );

    // Released after it, and not before: the deletionTimestamp has whole seconds, hence the second.
    wait_gone(&env.builds, "long", Duration::from_secs(timeout + 60)).await;
    let took = deleted_at.elapsed();
    assert!(
        took >= Duration::from_secs(timeout - 1),
        "released {took:?} after deletion, before the {timeout} s timeout"
    );
    let released: Vec<Event> = env
        .events_of("long")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FinalizerReleased"))
        .collect();
    assert_eq!(released.len(), 1, "one FinalizerReleased event: {released:?}");
    assert_eq!(released[0].type_.as_deref(), Some("Warning"));
    let note = released[0].note.clone().unwrap_or_default();
    assert!(note.contains(cause), "the event names the cause {cause}: {note}");
    assert!(note.contains(&job), "the event names the job left behind: {note}");
    assert!(!note.contains(KEY), "the API key leaked into the event: {note}");
    let metrics = op.metrics().await;
    for reason in ["DssUnreachable", "CredentialsUnavailable", "AbortUnconfirmed"] {
        let count = if reason == cause { 1 } else { 0 };
        let line = format!("kube_dss_finalizer_forced_releases_total{{reason=\"{reason}\"}} {count}");
        assert!(has_sample(&metrics, &line), "{line} in:\n{metrics}");
    }
    env.admin.clear_faults().await.unwrap();
    let jobs = env.jobs_of("slow").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, "RUNNING", "nothing could abort the job");
    assert!(!op.log_text().contains(KEY), "the API key leaked into the log");
    drop(op);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_dss_holds_the_finalizer_until_the_timeout_then_releases_it() {
    finalizer_released_after_the_timeout("life-unreach", "DssUnreachable", async |env: &Env, _| {
        // Every DSS call has its connection closed without an answer.
        env.admin
            .set_faults(&Faults {
                outage: true,
                outage_mode: Some(DropMode::Reset),
                ..Default::default()
            })
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_credentials_hold_the_finalizer_until_the_timeout_then_release_it() {
    finalizer_released_after_the_timeout("life-creds", "CredentialsUnavailable", async |env: &Env, _| {
        let secrets: Api<Secret> = env.ns.api();
        secrets
            .delete("dss-api-key", &DeleteParams::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_gone_across_a_restart_hold_the_finalizer_until_the_timeout_then_release_it() {
    finalizer_released_after_the_timeout(
        "life-creds-restart",
        "CredentialsUnavailable",
        async |env: &Env, op: &mut Operator| {
            // The Secret goes while the operator is down: the new process never had the key.
            op.kill();
            let secrets: Api<Secret> = env.ns.api();
            secrets
                .delete("dss-api-key", &DeleteParams::default())
                .await
                .unwrap();
            *op = Operator::start(&env.ns.name, &operator_args());
            op.ready().await;
        },
    )
    .await;
}

/// The chart's `terminationGracePeriodSeconds`: the time the pod gets after SIGTERM.
fn grace_period() -> Duration {
    let values = std::fs::read_to_string(harness::repo().join("charts/kube-dss/values.yaml")).unwrap();
    let values: serde_yaml::Value = serde_yaml::from_str(&values).unwrap();
    Duration::from_secs(values["terminationGracePeriodSeconds"].as_u64().unwrap())
}

async fn leads(op: &Operator) -> bool {
    has_sample(&op.metrics().await, "kube_dss_leader 1")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_start_in_flight_and_hands_the_lease_over_at_once() {
    // A lease far longer than the handover may take: a standby that waited for it to expire fails.
    const LEASE_SECONDS: u64 = 40;
    let env = Env::new("life-term").await;
    let lease_name = "kube-dss-term";
    let args = |pod: &'static str| {
        vec![
            "--leader-election".to_string(),
            "--lease-name".into(),
            lease_name.into(),
            "--lease-namespace".into(),
            env.ns.name.clone(),
            "--pod-name".into(),
            pod.into(),
            "--lease-duration-seconds".into(),
            LEASE_SECONDS.to_string(),
        ]
    };
    let start = |pod: &'static str| {
        let a = args(pod);
        Operator::start(&env.ns.name, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut first = start("first");
    first.ready().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !leads(&first).await {
        assert!(Instant::now() < deadline, "first never led");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = start("second");
    second.ready().await;
    assert!(!leads(&second).await, "one leader");

    // DSS takes 3 s to answer a start: SIGTERM arrives while it is in flight.
    env.admin
        .set_faults(&Faults {
            latency_ms: 3000,
            routes: vec!["POST /projects/{pk}/jobs/".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    env.create("inflight", "quick").await;
    let starts = async || {
        env.admin
            .stats()
            .await
            .unwrap()
            .requests_by_route
            .get("POST /projects/{pk}/jobs/")
            .copied()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts().await == 0 {
        assert!(Instant::now() < deadline, "no start was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = env.builds.get("inflight").await.unwrap();
    assert!(job_id(&sent).is_none(), "the start is in flight");

    let termed = Instant::now();
    let status = first.terminate_within(grace_period()).await;
    let took = termed.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("no exit within the grace period; log:\n{}", first.log_text()));
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        first.log_text()
    );
    assert!(first.log_text().contains("shut down"), "{}", first.log_text());

    // The start was finished and recorded before the exit: one job, and its id in the status.
    let b = env.builds.get("inflight").await.unwrap();
    let jobs = env.jobs_of("quick").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        job_id(&b).as_deref(),
        Some(jobs[0].id.as_str()),
        "the job id is recorded before the exit (exit took {took:?})"
    );
    // The lease was given up: no holder, or already the standby.
    let leases: Api<Lease> = env.ns.api();
    let spec = leases.get(lease_name).await.unwrap().spec.unwrap();
    assert!(
        matches!(spec.holder_identity.as_deref(), None | Some("") | Some("second")),
        "the lease is released: {spec:?}"
    );

    // The standby takes over at once, not after the lease's duration.
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS);
    while !leads(&second).await {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A standby looks at the lease once per retry period (a fifth of its duration); the lease it
    // saw renewed before the exit expires no earlier than four fifths of a duration after it.
    let handover = termed.elapsed() - took;
    assert!(
        handover < Duration::from_secs(LEASE_SECONDS / 5 + 4),
        "the standby took over {handover:?} after the exit"
    );
    eprintln!("SIGTERM to exit: {took:?}; exit to the standby leading: {handover:?}");
    let spec = leases.get(lease_name).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("second"));
    assert_eq!(spec.lease_transitions, Some(1), "{spec:?}");

    env.admin.clear_faults().await.unwrap();
    let b = env.wait_phase("inflight", Phase::Succeeded, 60).await;
    let jobs = env.jobs_of("quick").await;
    assert_eq!(jobs.len(), 1, "one job for the build: {jobs:?}");
    assert_eq!(job_id(&b).as_deref(), Some(jobs[0].id.as_str()));
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.jobs_started, 1);
    drop(second);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_lost_starts_of_one_definition_never_share_a_job() {
    let env = Env::new("life-twins").await;
    let op = Operator::start(&env.ns.name, &[]);
    op.ready().await;
    // Both builds ask DSS for the same job; both answers are lost.
    env.admin
        .set_faults(&Faults {
            drop_start_responses: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    env.create("twin-a", "quick").await;
    env.create("twin-b", "quick").await;
    env.drops_spent().await;
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        (stats.faults_injected.dropped_start_responses, stats.jobs_started),
        (2, 2),
        "both starts reached DSS and both answers were lost"
    );

    // Each ends with its own job or waits for the user; never one job id between them.
    let settled = |b: &DatasetBuild| stalled_unknown(b) || job_id(b).is_some();
    let a = wait_for(&env.builds, "twin-a", Duration::from_secs(90), settled).await;
    let b = wait_for(&env.builds, "twin-b", Duration::from_secs(90), settled).await;
    let check = |a: &DatasetBuild, b: &DatasetBuild, jobs: &[JobRecord]| {
        if let (Some(x), Some(y)) = (job_id(a), job_id(b)) {
            assert_ne!(x, y, "one job id between two builds");
        }
        for j in jobs {
            let owners = [a, b]
                .iter()
                .filter(|b| {
                    b.status.as_ref().is_some_and(|s| {
                        s.job_id.as_deref() == Some(j.id.as_str())
                            || s.history.iter().any(|h| h.job_id == j.id)
                    })
                })
                .count();
            assert!(owners <= 1, "job {} is tracked by {owners} builds", j.id);
        }
    };
    let jobs = env.jobs_of("quick").await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    check(&a, &b, &jobs);
    // Both searches met both jobs: several candidates, so each waits for the user.
    for b in [&a, &b] {
        assert!(stalled_unknown(b), "{:?}", b.status);
        let stalled = condition(b, "Stalled").unwrap();
        for j in &jobs {
            assert!(stalled.message.contains(&j.id), "{}", stalled.message);
        }
        assert!(stalled.message.contains(ADOPT_ANNOTATION), "{}", stalled.message);
        assert_eq!(condition(b, "Ready").unwrap().status, "False");
        assert!(job_id(b).is_none());
    }
    // And stays so: no job started, no adoption, without the user.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a2 = env.builds.get("twin-a").await.unwrap();
    let b2 = env.builds.get("twin-b").await.unwrap();
    assert!(stalled_unknown(&a2) && stalled_unknown(&b2));
    assert_eq!(env.admin.stats().await.unwrap().jobs_started, 2);

    // The user names a job for twin-a: adopted.
    let (first, second) = (jobs[0].id.clone(), jobs[1].id.clone());
    env.annotate("twin-a", ADOPT_ANNOTATION, &first).await;
    let a = env.wait_phase("twin-a", Phase::Succeeded, 60).await;
    assert_eq!(job_id(&a).as_deref(), Some(first.as_str()));
    // Naming the same job for twin-b is refused: it belongs to twin-a now.
    env.annotate("twin-b", ADOPT_ANNOTATION, &first).await;
    let b = wait_for(
        &env.builds,
        "twin-b",
        Duration::from_secs(30),
        |b: &DatasetBuild| condition(b, "Stalled").is_some_and(|c| c.message.contains("has no such run")),
    )
    .await;
    assert!(stalled_unknown(&b) && job_id(&b).is_none(), "{:?}", b.status);
    // The other one is adopted.
    env.annotate("twin-b", ADOPT_ANNOTATION, &second).await;
    let b = env.wait_phase("twin-b", Phase::Succeeded, 60).await;
    assert_eq!(job_id(&b).as_deref(), Some(second.as_str()));
    let jobs = env.jobs_of("quick").await;
    assert_eq!(jobs.len(), 2, "no job started: {jobs:?}");
    check(&a, &b, &jobs);
    let metrics = op.metrics().await;
    assert!(
        has_sample(&metrics, "kube_dss_start_outcome_unknown_total 2"),
        "{metrics}"
    );
    assert!(has_sample(&metrics, "kube_dss_jobs_adopted_total 2"), "{metrics}");
    drop(op);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_start_with_several_candidates_waits_for_the_adopt_job_annotation() {
    let env = Env::new("life-adopt").await;
    let op = Operator::start(&env.ns.name, &[]);
    op.ready().await;
    env.admin
        .set_faults(&Faults {
            drop_start_responses: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    env.create("lone", "quick").await;
    env.drops_spent().await;
    let ours = env.jobs_of("quick").await;
    assert_eq!(ours.len(), 1, "the lost start created its job");
    let ours = ours[0].id.clone();
    // Meanwhile someone starts the same job by hand, with the same key.
    let theirs = env.start_by_hand("quick").await;

    // Several candidates: the build stops and says how to go on.
    let b = wait_for(
        &env.builds,
        "lone",
        Duration::from_secs(90),
        |b: &DatasetBuild| stalled_unknown(b),
    )
    .await;
    let message = &condition(&b, "Stalled").unwrap().message;
    assert!(
        message.contains(&ours) && message.contains(&theirs) && message.contains(ADOPT_ANNOTATION),
        "{message}"
    );
    assert_eq!(condition(&b, "Ready").unwrap().status, "False");
    assert!(job_id(&b).is_none());
    let warned =
        env.events_of("lone").await.into_iter().any(|e| {
            e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("StartOutcomeUnknown")
        });
    assert!(warned, "a Warning StartOutcomeUnknown event");
    assert!(has_sample(
        &op.metrics().await,
        "kube_dss_start_outcome_unknown_total 1"
    ));
    // It waits for the user: nothing started, nothing adopted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stalled_unknown(&env.builds.get("lone").await.unwrap()));
    assert_eq!(env.admin.stats().await.unwrap().jobs_started, 2);

    // Annotated with one candidate: adopted, and the build goes on to success.
    env.annotate("lone", ADOPT_ANNOTATION, &ours).await;
    let b = env.wait_phase("lone", Phase::Succeeded, 60).await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.job_id.as_deref(), Some(ours.as_str()), "exactly the named job");
    assert!(s.history.is_empty(), "one job tracked: {:?}", s.history);
    assert!(condition(&b, "Stalled").is_none_or(|c| c.status == "False"));
    assert_eq!(condition(&b, "Ready").unwrap().status, "True");
    let adopted = env
        .events_of("lone")
        .await
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("JobAdopted") && e.note.unwrap_or_default().contains(&ours));
    assert!(adopted, "a JobAdopted event names the job");
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.jobs_started, 2, "no job started for the build");
    let jobs = env.jobs_of("quick").await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        stats.requests_by_route.get("POST /projects/{pk}/jobs/").copied(),
        Some(2),
        "one start by the operator, one by hand"
    );
    drop(op);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_start_never_adopts_the_job_of_a_deleted_build() {
    let env = Env::new("life-deleted").await;
    let mut op = Operator::start(&env.ns.name, &[]);
    op.ready().await;
    env.create("first", "slow").await;
    let first = env.wait_phase("first", Phase::Running, 60).await;
    let theirs = job_id(&first).unwrap();
    // A restart (a new leader would do the same): the process that started the job is gone.
    op.kill();
    op = Operator::start(&env.ns.name, &[]);
    op.ready().await;
    env.builds
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&env.builds, "first", Duration::from_secs(30)).await;
    assert_eq!(env.jobs_of("slow").await[0].state, "ABORTED");

    // A build of the same definition whose start DSS answers with a 500 before creating anything:
    // the operator cannot tell, so after the grace it searches DSS for the job.
    env.admin
        .set_faults(&Faults {
            error_rate: 1.0,
            error_status: Some(500),
            routes: vec!["POST /projects/{pk}/jobs/".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    env.create("second", "slow").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.admin.stats().await.unwrap().faults_injected.error5xx == 0 {
        assert!(Instant::now() < deadline, "no start was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.admin.clear_faults().await.unwrap();
    assert_eq!(env.jobs_of("slow").await.len(), 1, "the 500 created nothing");

    // The only job of that definition belonged to the deleted build: not this one's to take. No
    // job exists for its request, so it starts one.
    let b = wait_for(
        &env.builds,
        "second",
        Duration::from_secs(90),
        |b: &DatasetBuild| job_id(b).is_some() || stalled_unknown(b),
    )
    .await;
    assert_ne!(
        job_id(&b).as_deref(),
        Some(theirs.as_str()),
        "adopted the aborted job of a deleted build: {:?}",
        b.status
    );
    let b = env.wait_phase("second", Phase::Running, 60).await;
    let jobs = env.jobs_of("slow").await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(
        jobs.iter()
            .any(|j| Some(&j.id) == job_id(&b).as_ref() && j.id != theirs)
    );
    drop(op);
    env.cleanup().await;
}
