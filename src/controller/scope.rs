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
    execute::{self, starts::Starts},
    job::{JobIo, JobKind, poller::Poller},
    leader::Fence,
    metrics::{DssObserver, Metrics},
    run::vocabulary::EventAction,
};
use crate::crd::{DSSConnection, DatasetBuild};

/// What every scope shares.
pub(crate) struct Common {
    pub(crate) client: Client,
    pub(crate) concurrency: u16,
    pub(crate) request_timeout: Duration,
    pub(crate) default: Option<DefaultConnection>,
    pub(crate) recorder: Recorder,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: Settings,
    pub(crate) fence: Fence,
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
    let (builds, conns): (Api<DatasetBuild>, Api<DSSConnection>) = match namespace {
        Some(ns) => (
            Api::namespaced(common.client.clone(), ns),
            Api::namespaced(common.client.clone(), ns),
        ),
        None => (Api::all(common.client.clone()), Api::all(common.client.clone())),
    };
    let wc = watcher::Config::default().any_semantic();
    let conn_controller =
        Controller::new(conns.clone(), wc.clone()).with_config(controller::Config::default().concurrency(4));
    let conn_store = conn_controller.store();
    // The cache keeps what reconciles read: managedFields and the last-applied annotation are dropped,
    // which is most of an object's size once it has a status (memory with many finished builds).
    let (build_store, writer) = kube::runtime::reflector::store();
    common.metrics.watch_builds(build_store.clone());
    common.metrics.watch_connections(conn_store.clone());
    let trigger = watcher(builds, wc.clone())
        .default_backoff()
        .modify(|b: &mut DatasetBuild| {
            b.managed_fields_mut().clear();
            b.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .touched_objects();
    let shared = shared(common, conn_store.clone());
    let jobs = Arc::new(RunContext {
        shared: shared.clone(),
        io: JobIo {
            poller: Poller::new(Duration::from_secs(2)),
            builds: build_store.clone(),
        },
        starts: Starts::new(common.fence.clone()),
    });
    let build_controller = Controller::for_stream(trigger, build_store.clone())
        .with_config(controller::Config::default().concurrency(common.concurrency))
        .watches(conns, wc, wake_builds_of(build_store.clone()));
    let report_b = shared.clone();
    let builds_fut = build_controller
        .graceful_shutdown_on(super::process::stopped(shutdown.clone()))
        .run(execute::reconcile::<JobKind>, build_error_policy, jobs)
        .for_each(move |res| report(res, report_b.clone()));
    let report_c = shared.clone();
    let conns_fut = conn_controller
        .graceful_shutdown_on(super::process::stopped(shutdown))
        .run(connection::reconcile, conn_error_policy, shared)
        .for_each(move |res| report(res, report_c.clone()));
    let fut = async move {
        futures::join!(builds_fut, conns_fut, schedules_fut);
    };
    let ready = async move {
        synced(build_store, conn_store).await;
        schedules_ready.await;
    };
    (fut, ready)
}

/// What the reconcilers of one scope share.
fn shared(common: &Common, conn_store: Store<DSSConnection>) -> Arc<Shared> {
    let observer = Arc::new(DssObserver(common.metrics.clone()));
    Arc::new(Shared {
        kube: common.client.clone(),
        connections: Connections::new(
            common.client.clone(),
            conn_store,
            common.default.clone(),
            observer,
            common.request_timeout,
        ),
        recorder: common.recorder.clone(),
        metrics: common.metrics.clone(),
        settings: common.settings.clone(),
        backoff: ErrorBackoff::default(),
    })
}

/// A connection change (or its Ready flip) wakes the builds that use it.
fn wake_builds_of(store: Store<DatasetBuild>) -> impl Fn(DSSConnection) -> Vec<ObjectRef<DatasetBuild>> {
    move |conn: DSSConnection| {
        let (ns, name) = (conn.namespace(), conn.name_any());
        store
            .state()
            .into_iter()
            .filter(|b| b.namespace() == ns && b.spec.connection_ref.as_ref().is_some_and(|r| r.name == name))
            .map(|b| ObjectRef::from(b.as_ref()))
            .collect()
    }
}

/// Ends once both caches have synced.
async fn synced(builds: Store<DatasetBuild>, conns: Store<DSSConnection>) {
    // The controller's own runner also waits on these stores, and a store wakes only its latest
    // waiter: re-poll with a timeout instead of parking once.
    let tick = Duration::from_millis(250);
    while !matches!(
        tokio::time::timeout(tick, builds.wait_until_ready()).await,
        Ok(Ok(()))
    ) {}
    while !matches!(
        tokio::time::timeout(tick, conns.wait_until_ready()).await,
        Ok(Ok(()))
    ) {}
}

fn build_error_policy(build: Arc<DatasetBuild>, err: &Error, ctx: Arc<RunContext<JobKind>>) -> Action {
    error_policy(&build.uid().unwrap_or_default(), err, &ctx.shared)
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
