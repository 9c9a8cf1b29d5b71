//! The executor's middle test layer, between the run core's pure tables and the end-to-end suite:
//! the real [`reconcile`](super::reconcile) of the DSS job kind against a mocked apiserver and the
//! real DSS emulator. Here: [`DatasetBuild`] builders (`DatasetBuild::test().finalized().with_job(..)
//! .deleting()`), the emulated [`Dss`], a [`setup`] of the reconciler's context over a tower-test mock
//! on the operator's default connection (a key file, so no Secret is read), and the
//! [`ApiServerVerifier`], whose chainable handlers assert the method, path, query and JSON body of
//! each request and answer as the apiserver would (kube-rs/controller-rs `fixtures.rs`). The
//! scenarios are in `execute/tests.rs`.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::{future::Future, sync::Arc, time::Duration};

use http::{Request, Response};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Client, Resource, ResourceExt, client::Body, runtime::events::Reporter};
use serde_json::{Value, json};

mod apiserver;

pub(crate) use apiserver::{ApiServerVerifier, Published, Reply};

use super::{RunKind, starts::Starts};
use crate::controller::stores::Stores;
use crate::{
    controller::{
        backoff::ErrorBackoff,
        connections::{Connections, DefaultConnection},
        context::{RunContext, Settings, Shared},
        events::Recorder,
        job::{self, JobIo, JobKind, poller::Poller},
        leader::Fence,
        metrics::{DssObserver, Metrics},
        run::{self, Current, RunStatus, contract},
    },
    crd::{DatasetBuild, DatasetBuildSpec, DatasetBuildStatus, FIELD_MANAGER, FINALIZER, StartRequest},
    dss::{self, JobState},
    emulator::{self, admin::AdminClient},
};

/// The namespace of the test builds.
pub(crate) const NAMESPACE: &str = "team-a";
/// The operator's API key (the default connection's key file holds it).
const KEY: &str = "operator-key-3c1f9a";

/// The emulated DSS: project `PROJ`, a dataset whose build runs for a day and one that ends at
/// once, and the operator's key.
const EMULATOR: &str = r#"
instance: {maxRunningActivities: 0}
projects:
  - projectKey: PROJ
    datasets:
      - {name: slow, build: {durationMs: 86400000}}
      - {name: instant, build: {durationMs: 0}}
apiKeys:
  - key: $KEY
    id: kube-dss-operator
    projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}
"#;

/// Bounds every wait of a scenario (generous: the machine may be loaded; nothing here sleeps).
const PATIENCE: Duration = Duration::from_secs(20);

/// `now`, `secs` seconds ago, in whole seconds (as Kubernetes times are).
pub(crate) fn ago(secs: u64) -> Timestamp {
    run::fold::whole_seconds(Timestamp::now().checked_sub(Duration::from_secs(secs)).unwrap())
}

impl DatasetBuild {
    /// A build of dataset `slow` on the operator's default connection, as first read: no
    /// finalizer, no status, at resourceVersion `1`.
    pub(crate) fn test() -> Self {
        let spec: DatasetBuildSpec =
            serde_json::from_value(json!({"projectKey": "PROJ", "outputs": [{"id": "slow"}]})).unwrap();
        let mut build = DatasetBuild::new("nightly", spec);
        let meta = build.meta_mut();
        meta.namespace = Some(NAMESPACE.into());
        meta.uid = Some("6f1c2a5e-0d7b-4c3e-9a41-2b8d5e7f9c10".into());
        meta.generation = Some(1);
        meta.resource_version = Some("1".into());
        build
    }

    /// Builds `dataset` instead.
    pub(crate) fn building(mut self, dataset: &str) -> Self {
        self.spec.outputs[0].id = dataset.into();
        self
    }

    /// With the operator's finalizer.
    pub(crate) fn finalized(mut self) -> Self {
        self.finalizers_mut().push(FINALIZER.into());
        self
    }

    /// At resourceVersion `rv`.
    pub(crate) fn at(mut self, rv: &str) -> Self {
        self.meta_mut().resource_version = Some(rv.into());
        self
    }

    /// Being deleted since `secs` seconds.
    pub(crate) fn deleted_ago(mut self, secs: u64) -> Self {
        self.meta_mut().deletion_timestamp = Some(Time(ago(secs)));
        self
    }

    /// Being deleted since now.
    pub(crate) fn deleting(self) -> Self {
        self.deleted_ago(0)
    }

    /// The start request the operator records for this build's run request at `at`.
    pub(crate) fn start_request(&self, at: Timestamp) -> StartRequest {
        let controls = JobKind::controls(self);
        StartRequest {
            requested_at: Time(at),
            fingerprint: controls.want,
            attempt: Some(1),
            definition_hash: Some(controls.definition_hash),
            refused: None,
        }
    }

    /// With a start request recorded `secs` seconds ago and no job id: its start's answer was
    /// never recorded.
    pub(crate) fn with_start_request(self, secs: u64) -> Self {
        let run = RunStatus::<JobKind> {
            start_request: Some(self.start_request(ago(secs))),
            ..RunStatus::default()
        };
        self.with_run(run)
    }

    /// With DSS job `job_id` started a minute ago and last seen in `state`.
    pub(crate) fn with_job(self, job_id: &str, state: JobState) -> Self {
        let started = ago(60);
        let run = RunStatus::<JobKind> {
            current: Some(Current {
                handle: job_id.into(),
                state: Some(state),
                start_time: Some(Time(started)),
                completion_time: None,
                warnings: Some(0),
                details: (),
            }),
            start_request: Some(self.start_request(started)),
            ..RunStatus::default()
        };
        self.with_run(run)
    }

    /// With the status the operator writes for `run`.
    fn with_run(mut self, run: RunStatus<JobKind>) -> Self {
        let derived = contract::derive(&JobKind::controls(&self), &run, None, Timestamp::now());
        self.status = Some(JobKind::write(run, derived));
        self
    }

    /// With `status` as written (the JSON of a status write).
    pub(crate) fn with_status_json(mut self, status: &Value) -> Self {
        let status: DatasetBuildStatus =
            serde_json::from_value(status.clone()).expect("a status write holds a valid status");
        self.status = Some(status);
        self
    }

    /// The apiserver path of this build.
    fn path(&self) -> String {
        format!(
            "/apis/kube-dss.dev/v1alpha1/namespaces/{NAMESPACE}/datasetbuilds/{}",
            self.name_any()
        )
    }
}

/// The emulated DSS.
pub(crate) struct Dss {
    /// The emulator (stopped when dropped with the runtime).
    pub(crate) emulator: emulator::Handle,
    /// Its admin API: jobs and request counts as the emulator recorded them.
    pub(crate) admin: AdminClient,
    /// A client with the operator's key.
    client: dss::DssClient,
}

impl Dss {
    /// Starts an emulator on a free port.
    pub(crate) async fn start() -> Dss {
        let config = emulator::Config::from_yaml(&EMULATOR.replace("$KEY", KEY)).unwrap();
        let emulator = emulator::spawn(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = url::Url::parse(&emulator.base_url()).unwrap();
        let client = dss::DssClient::new(dss::ClientConfig::new(url, dss::ApiKey::new(KEY))).unwrap();
        Dss {
            admin: AdminClient::new(emulator.base_url()),
            emulator,
            client,
        }
    }

    /// Starts `build`'s job with the operator's key, as a start whose answer was lost left it.
    pub(crate) async fn start_job(&self, build: &DatasetBuild) -> String {
        let definition = job::definition::job_definition(&build.spec);
        self.client.start_job("PROJ", &definition).await.unwrap().id
    }

    /// How many DSS API requests `route` (`"<METHOD> <route template>"`) received.
    pub(crate) async fn requests(&self, route: &str) -> u64 {
        let stats = self.admin.stats().await.unwrap();
        stats.requests_by_route.get(route).copied().unwrap_or(0)
    }

    /// The project's jobs as the emulator has them: (id, state).
    pub(crate) async fn jobs(&self) -> Vec<(String, String)> {
        let jobs = self.admin.project_jobs("PROJ").await.unwrap();
        jobs.into_iter().map(|j| (j.id, j.state)).collect()
    }
}

/// A DSS URL nothing listens on.
pub(crate) fn unreachable_dss() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// What a scenario runs against.
pub(crate) struct Setup {
    /// The DatasetBuild reconciler's context.
    pub(crate) ctx: Arc<RunContext<JobKind>>,
    /// The mocked apiserver behind its client.
    pub(crate) apiserver: ApiServerVerifier,
    /// Holds the default connection's key file.
    _keys: tempfile::TempDir,
}

/// The tunables of a process started with default flags.
fn settings() -> Settings {
    Settings {
        run: run::Settings::default(),
        finalizer_timeout: Duration::from_secs(600),
        clock_skew: Duration::from_secs(30),
        log_tail_lines: 20,
        listing_interval: Duration::from_secs(1),
        max_budget_wait: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        connection_policy: Default::default(),
    }
}

/// A context whose default connection is DSS at `dss_url`, for a process that began to act at
/// `acting_since`.
pub(crate) fn setup(dss_url: &str, acting_since: Timestamp) -> Setup {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let kube = Client::new(service, NAMESPACE);
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("api-key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let default = DefaultConnection {
        url: url::Url::parse(dss_url).unwrap(),
        api_key_file: key_file,
        prefix: dss::ApiPrefix::default(),
        ca_file: None,
        insecure_skip_verify: false,
        limits: dss::Limits::new(10.0, 8),
    };
    let metrics = Arc::new(Metrics::new());
    let observer = Arc::new(DssObserver(metrics.clone()));
    let reporter = Reporter {
        controller: "kube-dss".into(),
        instance: Some("kube-dss-0".into()),
    };
    let shared = Arc::new(Shared {
        connections: Connections::new(
            kube.clone(),
            Some(default),
            observer,
            Duration::from_secs(30),
            Duration::from_secs(2),
        ),
        recorder: Recorder::new(kube.clone(), reporter),
        kube,
        metrics,
        settings: settings(),
        backoff: ErrorBackoff::default(),
    });
    let ctx = Arc::new(RunContext {
        shared,
        io: JobIo {
            poller: Poller::new(Duration::from_secs(1)),
            builds: Stores::default(),
        },
        starts: Starts::acting_since(Fence::unelected(), acting_since),
        sightings: Default::default(),
    });
    Setup {
        ctx,
        apiserver: ApiServerVerifier(handle),
        _keys: keys,
    }
}

/// Awaits `fut`, failing the test if it takes longer than a generous bound.
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}
