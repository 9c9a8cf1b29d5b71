//! The operator: the DatasetBuild controller (start, poll, abort DSS jobs), the DSSConnection
//! controller (check credentials) and the DatasetBuildSchedule controller ([`schedule`]: a build per
//! cron slot), an admin server (health, readiness, metrics), optional leader election, all under one
//! shutdown signal.
//!
//! Pipeline of a DatasetBuild reconcile: resolve the connection -> observe the DSS job ([`poller`]) ->
//! decide ([`plan`], pure) -> act (start / abort / search) -> record the whole status ([`status`]) ->
//! publish events on transitions ([`events`]).

pub mod admin;
pub mod build;
pub mod connection;
pub mod connections;
pub mod definition;
pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod poller;
pub(crate) mod schedule;
pub mod starts;
pub mod status;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use futures::{StreamExt, future::join_all};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{EventType, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use rand::Rng;
use tokio::sync::watch;

pub use error::Error;

use crate::{
    crd::{DSSConnection, DatasetBuild},
    dss,
    telemetry::{self, LogFormat},
};

/// Arguments of `kube-dss controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// URL of the default DSS connection, used by builds that name no connection.
    #[arg(long, env = "DSS_URL")]
    pub dss_url: Option<url::Url>,

    /// File holding the default connection's API key (re-read when DSS refuses it).
    #[arg(long, env = "DSS_API_KEY_FILE")]
    pub dss_api_key_file: Option<PathBuf>,

    /// API prefix of the default connection: `/public/api` or `/dip/publicapi`.
    #[arg(long, env = "DSS_API_PREFIX", default_value = "/public/api")]
    pub dss_api_prefix: String,

    /// PEM CA bundle to trust for the default connection.
    #[arg(long, env = "DSS_CA_FILE")]
    pub dss_ca_file: Option<PathBuf>,

    /// Skip TLS verification for the default connection (sandboxes only).
    #[arg(long, env = "DSS_INSECURE_SKIP_VERIFY")]
    pub dss_insecure_skip_verify: bool,

    /// Request budget of the default connection (requests per second).
    #[arg(long, env = "DSS_REQUESTS_PER_SECOND", default_value_t = 10)]
    pub dss_requests_per_second: u32,

    /// Concurrent requests of the default connection.
    #[arg(long, env = "DSS_MAX_IN_FLIGHT", default_value_t = 8)]
    pub dss_max_in_flight: usize,

    /// Timeout of one DSS request, in seconds.
    #[arg(long, env = "DSS_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub dss_request_timeout_seconds: u64,

    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Builds reconciled at the same time.
    #[arg(long, env = "CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// After deletion, how long the finalizer waits for DSS to confirm an abort (or to become
    /// reachable) before it is released with a Warning event.
    #[arg(long, env = "FINALIZER_TIMEOUT_SECONDS", default_value_t = 600)]
    pub finalizer_timeout_seconds: u64,

    /// Tolerated clock difference between the operator and DSS when matching a lost start.
    #[arg(long, env = "CLOCK_SKEW_SECONDS", default_value_t = 30)]
    pub clock_skew_seconds: u64,

    /// Lines of the DSS log kept in `status.failure.logTail`.
    #[arg(long, env = "LOG_TAIL_LINES", default_value_t = 20)]
    pub log_tail_lines: usize,

    /// Slowest poll of an active job, in seconds.
    #[arg(long, env = "POLL_MAX_SECONDS", default_value_t = 8)]
    pub poll_max_seconds: u64,

    /// Elect a leader on a Lease so that only one replica acts.
    #[arg(long, env = "LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "kube-dss-controller")]
    pub lease_name: String,

    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Lease duration in seconds.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity (events' reporting instance, lease holder).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

/// Tunables of the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Decision tunables.
    pub plan: plan::Settings,
    /// See [`Args::finalizer_timeout_seconds`].
    pub finalizer_timeout: Duration,
    /// See [`Args::clock_skew_seconds`].
    pub clock_skew: Duration,
    /// See [`Args::log_tail_lines`].
    pub log_tail_lines: usize,
}

/// Shared state of the reconcilers of one watch scope.
pub struct Context {
    /// Kubernetes client.
    pub kube: Client,
    /// DSS connections and their shared clients.
    pub connections: connections::Connections,
    /// Shared observer of DSS jobs.
    pub poller: poller::Poller,
    /// The one event recorder (so repeated events aggregate).
    pub recorder: events::Recorder,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Tunables.
    pub settings: Settings,
    /// Per-object backoff of failing reconciles.
    pub backoff: ErrorBackoff,
    /// Every DatasetBuild of the scope (to tell this build's jobs from other builds' jobs).
    pub builds: kube::runtime::reflector::Store<DatasetBuild>,
    /// The start requests this process recorded and what became of them.
    pub starts: starts::Starts,
}

/// Per-object exponential backoff (5 s doubling to 5 min, with jitter), reset on success.
#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// The delay before the next try of `uid`, counting this failure.
    pub fn next(&self, uid: &str) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(uid.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        let base = Duration::from_secs(5)
            .saturating_mul(1 << (n - 1).min(6))
            .min(Duration::from_secs(300));
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    /// Forgets the failures of `uid`.
    pub fn reset(&self, uid: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(uid);
        }
    }
}

/// Runs `kube-dss controller`.
pub async fn main(args: Args) -> ExitCode {
    telemetry::init(args.log_format, "info,kube=warn,kube_dss=info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "the operator stopped");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: Args) -> Result<(), BoxError> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let readiness = Arc::new(admin::Readiness::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(signal_shutdown(shutdown_tx.clone()));

    let listener = admin::bind(args.admin_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    let admin = tokio::spawn(admin::serve(
        listener,
        readiness.clone(),
        metrics.clone(),
        wait(shutdown_rx.clone()),
    ));

    let identity = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("kube-dss-{}", std::process::id()));
    let elector = args.leader_election.then(|| {
        leader::Elector::new(
            client.clone(),
            leader::Settings {
                namespace: args.lease_namespace.clone(),
                name: args.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(args.lease_duration_seconds.max(2)),
                retry_period: Duration::from_secs((args.lease_duration_seconds / 5).max(1)),
            },
        )
    });
    wait_for_crds(&client, &shutdown_rx).await;
    readiness.crds_found.store(true, Ordering::Relaxed);

    if let Some(elector) = &elector {
        // A follower is ready as a standby: readiness must not depend on leadership, or a rolling
        // update of several replicas would never complete.
        readiness.caches_synced.store(true, Ordering::Relaxed);
        tokio::select! {
            () = elector.acquire() => {}
            () = wait(shutdown_rx.clone()) => return Ok(()),
        }
        readiness.caches_synced.store(false, Ordering::Relaxed);
    }
    metrics.set_leader(true);
    let fence = elector
        .as_ref()
        .map_or_else(leader::Fence::unelected, leader::Elector::fence);

    let default = default_connection(&args)?;
    let recorder = events::Recorder::new(
        client.clone(),
        Reporter {
            controller: "kube-dss".into(),
            instance: Some(identity),
        },
    );
    let settings = Settings {
        plan: plan::Settings {
            start_grace: Duration::from_secs(args.dss_request_timeout_seconds + 10),
            poll_max: Duration::from_secs(args.poll_max_seconds.max(1)),
            ..plan::Settings::default()
        },
        finalizer_timeout: Duration::from_secs(args.finalizer_timeout_seconds),
        clock_skew: Duration::from_secs(args.clock_skew_seconds),
        log_tail_lines: args.log_tail_lines.max(1),
    };
    let scopes: Vec<Option<String>> = {
        let list: Vec<String> = args
            .namespace
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if list.is_empty() {
            vec![None]
        } else {
            list.into_iter().map(Some).collect()
        }
    };
    let mut synced = Vec::new();
    let mut running = Vec::new();
    for scope in scopes {
        let (fut, ready) = run_scope(
            client.clone(),
            scope,
            args.concurrency,
            Duration::from_secs(args.dss_request_timeout_seconds),
            default.clone(),
            recorder.clone(),
            metrics.clone(),
            settings.clone(),
            fence.clone(),
            shutdown_rx.clone(),
        );
        running.push(fut);
        synced.push(ready);
    }
    let readiness2 = readiness.clone();
    tokio::spawn(async move {
        join_all(synced).await;
        readiness2.caches_synced.store(true, Ordering::Relaxed);
        tracing::info!("watch caches synced; ready");
    });

    let controllers = join_all(running);
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let mut lost_lease = false;
    tokio::select! {
        _ = controllers => {}
        () = lost => {
            lost_lease = true;
            let _ = shutdown_tx.send(true);
        }
    }
    metrics.set_leader(false);
    if let Some(e) = &elector
        && !lost_lease
    {
        e.release().await;
    }
    let _ = shutdown_tx.send(true);
    let _ = admin.await;
    if lost_lease {
        return Err("lost the leader lease".into());
    }
    tracing::info!("shut down");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_scope(
    client: Client,
    namespace: Option<String>,
    concurrency: u16,
    request_timeout: Duration,
    default: Option<connections::DefaultConnection>,
    recorder: events::Recorder,
    metrics: Arc<metrics::Metrics>,
    settings: Settings,
    fence: leader::Fence,
    shutdown: watch::Receiver<bool>,
) -> (impl Future<Output = ()>, impl Future<Output = ()>) {
    let (schedules_fut, schedules_ready) = schedule::controller(
        client.clone(),
        namespace.as_deref(),
        recorder.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let (builds, conns): (Api<DatasetBuild>, Api<DSSConnection>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let wc = watcher::Config::default().any_semantic();
    let conn_controller =
        Controller::new(conns.clone(), wc.clone()).with_config(controller::Config::default().concurrency(4));
    let conn_store = conn_controller.store();
    // The cache keeps what reconciles read: managedFields and the last-applied annotation are dropped,
    // which is most of an object's size once it has a status (memory with many finished builds).
    let (build_store, writer) = kube::runtime::reflector::store();
    let trigger = watcher(builds, wc.clone())
        .default_backoff()
        .modify(|b: &mut DatasetBuild| {
            b.managed_fields_mut().clear();
            b.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .touched_objects();
    let build_controller = Controller::for_stream(trigger, build_store.clone())
        .with_config(controller::Config::default().concurrency(concurrency));
    let observer = Arc::new(metrics::DssObserver(metrics.clone()));
    let ctx = Arc::new(Context {
        kube: client.clone(),
        connections: connections::Connections::new(
            client,
            conn_store.clone(),
            default,
            observer,
            request_timeout,
        ),
        poller: poller::Poller::new(Duration::from_secs(2)),
        recorder: recorder.clone(),
        metrics: metrics.clone(),
        settings,
        backoff: ErrorBackoff::default(),
        builds: build_store.clone(),
        starts: starts::Starts::new(fence),
    });

    let referencing = build_store.clone();
    let build_controller = build_controller.watches(conns, wc, move |conn: DSSConnection| {
        // A connection change (or its Ready flip) wakes the builds that use it.
        let ns = conn.namespace();
        let name = conn.name_any();
        referencing
            .state()
            .into_iter()
            .filter(|b| b.namespace() == ns && b.spec.connection_ref.as_ref().is_some_and(|r| r.name == name))
            .map(|b| ObjectRef::from(b.as_ref()))
            .collect::<Vec<_>>()
    });

    let ready = {
        let (b, c) = (build_store.clone(), conn_store.clone());
        async move {
            // The controller's own runner also waits on these stores, and a store wakes only its
            // latest waiter: re-poll with a timeout instead of parking once.
            for store_ready in [either::Left(b), either::Right(c)] {
                loop {
                    let wait = async {
                        match &store_ready {
                            either::Left(b) => b.wait_until_ready().await.is_ok(),
                            either::Right(c) => c.wait_until_ready().await.is_ok(),
                        }
                    };
                    if let Ok(true) = tokio::time::timeout(Duration::from_millis(250), wait).await {
                        break;
                    }
                }
            }
            schedules_ready.await;
        }
    };

    let ctx_b = ctx.clone();
    let builds_fut = build_controller
        .graceful_shutdown_on(wait(shutdown.clone()))
        .run(build::reconcile, build_error_policy, ctx.clone())
        .for_each(move |res| report(res, ctx_b.clone()));
    let ctx_c = ctx.clone();
    let conns_fut = conn_controller
        .graceful_shutdown_on(wait(shutdown))
        .run(connection::reconcile, conn_error_policy, ctx)
        .for_each(move |res| report(res, ctx_c.clone()));
    let fut = async move {
        futures::join!(builds_fut, conns_fut, schedules_fut);
    };
    (fut, ready)
}

fn build_error_policy(build: Arc<DatasetBuild>, err: &Error, ctx: Arc<Context>) -> Action {
    error_policy(build.uid().unwrap_or_default(), err, &ctx)
}

fn conn_error_policy(conn: Arc<DSSConnection>, err: &Error, ctx: Arc<Context>) -> Action {
    error_policy(conn.uid().unwrap_or_default(), err, &ctx)
}

fn error_policy(uid: String, err: &Error, ctx: &Context) -> Action {
    match err {
        Error::AbortPending { retry_after, .. } => Action::requeue(*retry_after),
        _ => {
            ctx.metrics.reconcile_error(err.category());
            Action::requeue(ctx.backoff.next(&uid))
        }
    }
}

/// Logs every reconcile outcome and turns failures into Warning events, from one place.
async fn report<K>(
    res: Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>,
    ctx: Arc<Context>,
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
            events::publish_to(
                &ctx.recorder,
                &reference,
                EventType::Warning,
                err.category(),
                "Reconcile",
                err.chain(),
            )
            .await;
        }
        Err(err) => tracing::warn!(error = %err, "controller error"),
    }
}

fn default_connection(args: &Args) -> Result<Option<connections::DefaultConnection>, BoxError> {
    let (Some(url), Some(key_file)) = (&args.dss_url, &args.dss_api_key_file) else {
        if args.dss_url.is_some() {
            return Err("--dss-url needs --dss-api-key-file".into());
        }
        return Ok(None);
    };
    let prefix = match args.dss_api_prefix.as_str() {
        "/public/api" => dss::ApiPrefix::PublicApi,
        "/dip/publicapi" => dss::ApiPrefix::DipPublicApi,
        other => {
            return Err(
                format!("--dss-api-prefix must be /public/api or /dip/publicapi, not {other}").into(),
            );
        }
    };
    let rps = args.dss_requests_per_second.max(1);
    Ok(Some(connections::DefaultConnection {
        url: url.clone(),
        api_key_file: key_file.clone(),
        prefix,
        ca_file: args.dss_ca_file.clone(),
        insecure_skip_verify: args.dss_insecure_skip_verify,
        limits: dss::Limits {
            requests_per_second: f64::from(rps),
            burst: rps,
            max_in_flight: args.dss_max_in_flight.max(1),
        },
    }))
}

/// Waits until the CRDs answer, logging every 10 s: a missing CRD is not fixed by a restart.
async fn wait_for_crds(client: &Client, shutdown: &watch::Receiver<bool>) {
    let builds: Api<DatasetBuild> = Api::all(client.clone());
    let conns: Api<DSSConnection> = Api::all(client.clone());
    let schedules: Api<crate::crd::DatasetBuildSchedule> = Api::all(client.clone());
    let mut last_log = None::<tokio::time::Instant>;
    loop {
        let lp = ListParams::default().limit(1);
        let b = builds.list_metadata(&lp).await.map(|_| ());
        let c = conns.list_metadata(&lp).await.map(|_| ());
        let s = schedules.list_metadata(&lp).await.map(|_| ());
        match b.and(c).and(s) {
            Ok(()) => return,
            // Namespaced RBAC cannot list cluster-wide: a 403 still proves the CRDs exist.
            Err(kube::Error::Api(a)) if a.code == 403 => return,
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "waiting for the kube-dss CRDs (kubectl apply --server-side -f crds/)");
                    last_log = Some(tokio::time::Instant::now());
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn signal_shutdown(tx: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                let _ = tx.send(true);
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    let _ = tx.send(true);
}
