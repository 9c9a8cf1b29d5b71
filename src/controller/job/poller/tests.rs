//! The job watch's comparisons, its health, and one job watched against the emulator.

use super::{
    listing::{compare, degrade, missing},
    *,
};

fn build(name: &str) -> ObjectRef<DatasetBuild> {
    ObjectRef::new(name).within("ns")
}

fn running(state: JobState) -> Observed {
    Observed {
        state,
        start_time: None,
        end_time: None,
        warnings: 0,
        failed_activity: None,
    }
}

fn watch_with(jobs: &[(&str, Option<JobState>)], since: Instant) -> ConnWatch {
    let client = DssClient::new(dss::ClientConfig::new(
        url::Url::parse("http://127.0.0.1:1").unwrap(),
        dss::ApiKey::from("k"),
    ))
    .unwrap();
    ConnWatch {
        client,
        tracked: jobs
            .iter()
            .map(|(id, known)| {
                (
                    ("P".to_owned(), (*id).to_owned()),
                    Tracked {
                        build: build(id),
                        since,
                        known: known.clone(),
                        left: None,
                    },
                )
            })
            .collect(),
        snapshot: Snapshot::default(),
        source: Source::Mine,
        listing: true,
    }
}

#[tokio::test]
async fn a_listing_wakes_the_builds_whose_jobs_changed_or_left() {
    let t0 = Instant::now();
    let mut w = watch_with(
        &[
            ("same", Some(JobState::NotStarted)),
            ("started", Some(JobState::NotStarted)),
            ("ended", Some(JobState::Running)),
            ("done-listed", Some(JobState::Running)),
        ],
        t0,
    );
    let listed: HashMap<JobKey, Observed> = [
        ("same", JobState::NotStarted),
        ("started", JobState::Running),
        ("done-listed", JobState::Done),
    ]
    .into_iter()
    .map(|(id, s)| (("P".to_owned(), id.to_owned()), running(s)))
    .collect();
    let mut woken: Vec<String> = compare(&mut w, Instant::now(), listed)
        .into_iter()
        .map(|b| b.name)
        .collect();
    woken.sort();
    assert_eq!(woken, ["done-listed", "ended", "started"]);
    assert!(w.tracked[&("P".into(), "ended".into())].left.is_some());
    assert!(w.tracked[&("P".into(), "same".into())].left.is_none());
    assert!(w.healthy(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_job_registered_after_the_listing_was_asked_for_is_left_alone() {
    let asked = Instant::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut w = watch_with(&[("new", Some(JobState::NotStarted))], Instant::now());
    assert!(compare(&mut w, asked, HashMap::new()).is_empty());
    assert!(w.tracked[&("P".into(), "new".into())].left.is_none());
}

#[tokio::test]
async fn a_failing_listing_wakes_everyone_once_so_they_poll_by_themselves() {
    let t0 = Instant::now();
    let mut w = watch_with(&[("a", None), ("b", None)], t0);
    compare(&mut w, Instant::now(), HashMap::new());
    // Both left the (empty) listing; a new one is tracked again.
    w.tracked.insert(
        ("P".into(), "c".into()),
        Tracked {
            build: build("c"),
            since: t0,
            known: None,
            left: None,
        },
    );
    assert_eq!(
        degrade(&mut w, Instant::now()).len(),
        1,
        "only the ones still listed"
    );
    assert!(!w.healthy(Duration::from_secs(5)));
    assert!(degrade(&mut w, Instant::now()).is_empty(), "once");
}

/// Against the emulator: a tracked job is watched without calls of its own while it runs, its
/// end wakes its build within about one listing interval, and one status call settles it.
#[tokio::test]
async fn a_job_ending_wakes_its_build_and_costs_one_status_call() {
    use futures::StreamExt;

    let yaml = "instance: {maxRunningActivities: 4}\nprojects:\n  - projectKey: P\n    datasets:\n      \
                - {name: d, build: {durationMs: 1500}}\napiKeys:\n  - {key: k1, id: op, projects: \
                {\"*\": [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}\n";
    let emu = crate::emulator::spawn(
        crate::emulator::Config::from_yaml(yaml).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let admin = crate::emulator::admin::AdminClient::new(emu.base_url());
    let client = DssClient::new(dss::ClientConfig::new(
        url::Url::parse(&emu.base_url()).unwrap(),
        dss::ApiKey::from("k1"),
    ))
    .unwrap();
    let conn = Resolved {
        key: ConnKey::Default,
        client: client.clone(),
        start_gate: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    let poller = Poller::new(Duration::from_millis(300));
    let mut wakes = std::pin::pin!(poller.wakes(Some("ns")));
    let definition = dss::JobDefinitionBuilder::new(dss::BuildType::NonRecursiveForcedBuild)
        .with_output("d", Some(dss::ObjectType::Dataset), None, None)
        .build();
    let job = client.start_job("P", &definition).await.unwrap().id;
    poller.track(&conn, build("b"), "P", &job, Some(JobState::NotStarted));
    // While it runs, the listing answers for it: no status call.
    let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
    assert_eq!(
        woken.unwrap().map(|b| b.name),
        Some("b".to_owned()),
        "RUNNING wakes it"
    );
    let seen = poller
        .observe(&conn, build("b"), "P", &job, Some(JobState::NotStarted))
        .await
        .unwrap();
    assert!(seen.watched);
    assert_eq!(seen.observed.map(|o| o.state), Some(JobState::Running));
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.requests_by_route.get("GET /projects/{pk}/jobs/{id}/"), None);
    // Its end wakes it again; one status call then says DONE and the job is no longer watched.
    let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
    assert_eq!(
        woken.unwrap().map(|b| b.name),
        Some("b".to_owned()),
        "its end wakes it"
    );
    let seen = poller
        .observe(&conn, build("b"), "P", &job, Some(JobState::Running))
        .await
        .unwrap();
    assert_eq!(seen.observed.map(|o| o.state), Some(JobState::Done));
    assert!(!seen.watched);
    let stats = admin.stats().await.unwrap();
    assert_eq!(
        stats.requests_by_route.get("GET /projects/{pk}/jobs/{id}/"),
        Some(&1)
    );
    assert!(
        stats
            .requests_by_route
            .get("GET /jobs/running/")
            .copied()
            .unwrap_or(0)
            >= 2
    );
    emu.shutdown().await;
}

#[test]
fn only_dss_itself_says_a_listing_is_missing() {
    let api = |status, error_type: Option<&str>| dss::Error::Api {
        operation: dss::Operation::ListAllRunningJobs,
        status,
        error_type: error_type.map(str::to_owned),
        message: None,
        detailed_message: None,
        body_excerpt: String::new(),
        retry_after: None,
    };
    assert!(missing(&api(404, Some("NotFoundException"))));
    assert!(missing(&api(405, None)));
    assert!(!missing(&api(404, None)), "a gateway's bare 404");
    assert!(!missing(&api(503, Some("ServerException"))));
}
