//! One watch scope (all namespaces, or one of `--namespace`): its watches and caches, the
//! DatasetBuild and DSSConnection controllers over them, and the one place where reconcile outcomes
//! are logged and turned into Warning events.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::EventType,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;

use super::{
    backoff::ErrorBackoff,
    connection,
    connections::{Connections, DefaultConnection},
    context::{RunContext, Settings, Shared},
    error::Error,
    events::{self, Recorder},
    execute::RunKind,
    execute::{self, sightings::Sightings, starts::Starts},
    job::{JobIo, JobKind, poller::Poller},
    leader::Fence,
    metrics::{DssObserver, Metrics},
    run::vocabulary::EventAction,
    scenario::{ScenarioIo, ScenarioKind},
    stores::Stores,
};
use crate::crd::DSSConnection;

/// What every scope shares: one of each per process.
pub(crate) struct Common {
    pub(crate) client: Client,
    pub(crate) concurrency: u16,
    pub(crate) recorder: Recorder,
    pub(crate) metrics: Arc<Metrics>,
    /// What every reconciler shares (connections, backoff, tunables).
    pub(crate) shared: Arc<Shared>,
    /// The DatasetBuild reconcilers' context: the job watch, the book of starts and claims.
    pub(crate) jobs: Arc<RunContext<JobKind>>,
    /// The ScenarioRun reconcilers' context.
    pub(crate) scenarios: Arc<RunContext<ScenarioKind>>,
}

impl Common {
    /// The process-wide state of the controllers.
    pub(crate) fn new(
        client: Client,
        concurrency: u16,
        default: Option<DefaultConnection>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        settings: Settings,
        fence: &Fence,
    ) -> Self {
        let observer = Arc::new(DssObserver(metrics.clone()));
        let shared = Arc::new(Shared {
            kube: client.clone(),
            connections: Connections::new(
                client.clone(),
                default,
                observer,
                settings.request_timeout,
                settings.max_budget_wait,
            )
            .with_policy(settings.connection_policy),
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            backoff: ErrorBackoff::default(),
            settings,
        });
        let jobs = Arc::new(RunContext {
            shared: shared.clone(),
            io: JobIo {
                poller: Poller::new(shared.settings.listing_interval),
                builds: Stores::default(),
            },
            starts: Starts::new(fence.clone()),
            sightings: Sightings::default(),
        });
        let scenarios = Arc::new(RunContext {
            shared: shared.clone(),
            io: ScenarioIo {
                runs: Stores::default(),
            },
            starts: Starts::new(fence.clone()),
            sightings: Sightings::default(),
        });
        Self {
            client,
            concurrency,
            recorder,
            metrics,
            shared,
            jobs,
            scenarios,
        }
    }
}

/// A scope's controllers, and a future that ends when its caches have synced.
pub(crate) fn run(
    common: &Common,
    namespace: Option<&str>,
    shutdown: watch::Receiver<bool>,
) -> (impl Future<Output = ()> + use<>, impl Future<Output = ()> + use<>) {
    let (schedules_fut, schedules_ready) = super::schedule::controller(
        common.client.clone(),
        namespace,
        common.recorder.clone(),
        common.metrics.clone(),
        shutdown.clone(),
    );
    let conns: Api<DSSConnection> = api(common, namespace);
    let wc = watcher::Config::default().any_semantic();
    let conn_controller =
        Controller::new(conns.clone(), wc.clone()).with_config(controller::Config::default().concurrency(4));
    let conn_store = conn_controller.store();
    common.metrics.watch_connections(conn_store.clone());
    common.shared.connections.watch(conn_store.clone());
    let (builds_fut, build_store) = runs(common, namespace, &common.jobs, &shutdown);
    common.metrics.watch_builds(build_store.clone());
    let (scenarios_fut, scenario_store) = runs(common, namespace, &common.scenarios, &shutdown);
    let shared = common.shared.clone();
    let report_c = shared.clone();
    let conns_fut = conn_controller
        .graceful_shutdown_on(super::process::stopped(shutdown))
        .run(connection::reconcile, conn_error_policy, shared)
        .for_each(move |res| report(res, report_c.clone()));
    let fut = async move {
        futures::join!(builds_fut, scenarios_fut, conns_fut, schedules_fut);
    };
    let ready = async move {
        synced(&build_store).await;
        synced(&scenario_store).await;
        synced(&conn_store).await;
        schedules_ready.await;
    };
    (fut, ready)
}

/// An Api over the scope.
fn api<K>(common: &Common, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(common.client.clone(), ns),
        None => Api::all(common.client.clone()),
    }
}

/// What the caches keep of an object: what reconciles read. managedFields (most of an object's size
/// once it has a status), labels, owner references and every annotation but the operator's own
/// (`kube-dss.dev/...`: rerun, abort, adopt-job) are dropped; with many finished objects (and tools
/// such as Argo CD adding their own annotations and labels) that is most of the operator's memory.
fn trim<K: kube::Resource>(r: &mut K) {
    let meta = r.meta_mut();
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(OWN_ANNOTATIONS));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The prefix of the annotations the operator reads.
const OWN_ANNOTATIONS: &str = "kube-dss.dev/";

/// The controller of one kind of run in the scope, and its cache (objects [`trim`]med).
fn runs<K: RunKind>(
    common: &Common,
    namespace: Option<&str>,
    ctx: &Arc<RunContext<K>>,
    shutdown: &watch::Receiver<bool>,
) -> (impl Future<Output = ()> + use<K>, Store<K::Resource>) {
    let wc = watcher::Config::default().any_semantic();
    let (store, writer) = kube::runtime::reflector::store();
    let trigger = watcher(api::<K::Resource>(common, namespace), wc.clone())
        .default_backoff()
        .modify(trim::<K::Resource>)
        .reflect(writer)
        .touched_objects();
    K::watch(&ctx.io, store.clone());
    let reporting = ctx.shared.clone();
    let fut = Controller::for_stream(trigger, store.clone())
        .with_config(controller::Config::default().concurrency(common.concurrency))
        .watches(
            api::<DSSConnection>(common, namespace),
            wc,
            wake_users_of::<K>(store.clone()),
        )
        .reconcile_on(K::wakes(&ctx.io, namespace))
        .graceful_shutdown_on(super::process::stopped(shutdown.clone()))
        .run(execute::reconcile::<K>, run_error_policy::<K>, ctx.clone())
        .for_each(move |res| report(res, reporting.clone()));
    (fut, store)
}

/// A connection change (or its Ready flip) wakes the objects that use it.
fn wake_users_of<K: RunKind>(
    store: Store<K::Resource>,
) -> impl Fn(DSSConnection) -> Vec<ObjectRef<K::Resource>> {
    move |conn: DSSConnection| {
        let (ns, name) = (conn.namespace(), conn.name_any());
        store
            .state()
            .into_iter()
            .filter(|r| r.namespace() == ns && K::connection(r).is_some_and(|c| c.name == name))
            .map(|r| ObjectRef::from(r.as_ref()))
            .collect()
    }
}

/// Ends once a cache has synced. The controller's own runner also waits on the store, and a store
/// wakes only its latest waiter: re-poll with a timeout instead of parking once.
async fn synced<K>(store: &Store<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let tick = Duration::from_millis(250);
    while !matches!(
        tokio::time::timeout(tick, store.wait_until_ready()).await,
        Ok(Ok(()))
    ) {}
}

fn run_error_policy<K: RunKind>(res: Arc<K::Resource>, err: &Error, ctx: Arc<RunContext<K>>) -> Action {
    error_policy(&res.uid().unwrap_or_default(), err, &ctx.shared)
}

fn conn_error_policy(conn: Arc<DSSConnection>, err: &Error, ctx: Arc<Shared>) -> Action {
    error_policy(&conn.uid().unwrap_or_default(), err, &ctx)
}

fn error_policy(uid: &str, err: &Error, shared: &Shared) -> Action {
    match err {
        Error::AbortPending { retry_after, .. } => Action::requeue(*retry_after),
        _ => {
            shared.metrics.reconcile_error(err.category());
            Action::requeue(shared.backoff.next(uid))
        }
    }
}

/// Logs every reconcile outcome and turns failures into Warning events, from one place.
async fn report<K>(
    res: Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>,
    shared: Arc<Shared>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + 'static,
{
    match res {
        Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
        Err(controller::Error::ReconcilerFailed(err, obj)) => {
            if matches!(err, Error::AbortPending { .. }) {
                tracing::debug!(object = %obj, "{err}");
                return;
            }
            tracing::warn!(object = %obj, category = err.category(), error = %err.chain(), "reconcile failed");
            let reference = (*obj).into();
            let action = EventAction::Reconcile.as_str();
            events::publish_to(
                &shared.recorder,
                &reference,
                EventType::Warning,
                err.category(),
                action,
                err.chain(),
            )
            .await;
        }
        Err(err) => tracing::warn!(error = %err, "controller error"),
    }
}
