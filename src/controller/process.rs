//! The operator process: the admin server (health, readiness, metrics), optional leader election, one
//! set of controllers per watch scope ([`scope`](super::scope)), all under one shutdown signal.

use std::{
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::future::join_all;
use kube::{Api, Client, api::ListParams, runtime::events::Reporter};
use tokio::sync::watch;

use super::{admin, args::Args, events, leader, metrics::Metrics, scope};
use crate::{
    crd::{DSSConnection, DatasetBuild, DatasetBuildSchedule, ScenarioRun},
    telemetry,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

async fn run(args: Args) -> Result<(), BoxError> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(admin::Readiness::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(signal_shutdown(shutdown_tx.clone()));
    let listener = admin::bind(args.admin_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    let admin = tokio::spawn(admin::serve(
        listener,
        readiness.clone(),
        metrics.clone(),
        stopped(shutdown_rx.clone()),
    ));
    let identity = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("kube-dss-{}", std::process::id()));
    let elector = args.leader_election.then(|| elector(&client, &args, &identity));
    wait_for_crds(&client, &shutdown_rx).await;
    readiness.crds_found.store(true, Ordering::Relaxed);
    if !lead(elector.as_ref(), &readiness, &shutdown_rx).await {
        return Ok(());
    }
    metrics.set_leader(true);
    let fence = elector
        .as_ref()
        .map_or_else(leader::Fence::unelected, leader::Elector::fence);
    let common = scope::Common::new(
        client.clone(),
        args.concurrency,
        args.default_connection()?,
        events::Recorder::new(
            client,
            Reporter {
                controller: "kube-dss".into(),
                instance: Some(identity),
            },
        ),
        metrics.clone(),
        args.settings(),
        &fence,
    );
    let (running, synced): (Vec<_>, Vec<_>) = args
        .scopes()
        .iter()
        .map(|ns| scope::run(&common, ns.as_deref(), shutdown_rx.clone()))
        .unzip();
    tokio::spawn(async move {
        join_all(synced).await;
        readiness.caches_synced.store(true, Ordering::Relaxed);
        tracing::info!("watch caches synced; ready");
    });
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let lost_lease = tokio::select! {
        _ = join_all(running) => false,
        () = lost => true,
    };
    let _ = shutdown_tx.send(true);
    metrics.set_leader(false);
    if let Some(e) = &elector
        && !lost_lease
    {
        e.release().await;
    }
    let _ = admin.await;
    if lost_lease {
        return Err("lost the leader lease".into());
    }
    tracing::info!("shut down");
    Ok(())
}

/// Waits to lead (at once without leader election). False when shutdown came first.
async fn lead(
    elector: Option<&leader::Elector>,
    readiness: &admin::Readiness,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let Some(elector) = elector else {
        return true;
    };
    // A follower is ready as a standby: readiness must not depend on leadership, or a rolling update
    // of several replicas would never complete.
    readiness.caches_synced.store(true, Ordering::Relaxed);
    let leading = tokio::select! {
        () = elector.acquire() => true,
        () = stopped(shutdown.clone()) => false,
    };
    readiness.caches_synced.store(false, Ordering::Relaxed);
    leading
}

fn elector(client: &Client, args: &Args, identity: &str) -> leader::Elector {
    leader::Elector::new(
        client.clone(),
        leader::Settings {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(args.lease_duration_seconds.max(2)),
            retry_period: Duration::from_secs((args.lease_duration_seconds / 5).max(1)),
        },
    )
}

/// Waits until the CRDs answer, logging every 10 s: a missing CRD is not fixed by a restart.
async fn wait_for_crds(client: &Client, shutdown: &watch::Receiver<bool>) {
    let builds: Api<DatasetBuild> = Api::all(client.clone());
    let conns: Api<DSSConnection> = Api::all(client.clone());
    let schedules: Api<DatasetBuildSchedule> = Api::all(client.clone());
    let scenarios: Api<ScenarioRun> = Api::all(client.clone());
    let mut last_log = None::<tokio::time::Instant>;
    loop {
        let lp = ListParams::default().limit(1);
        let b = builds.list_metadata(&lp).await.map(|_| ());
        let c = conns.list_metadata(&lp).await.map(|_| ());
        let s = schedules.list_metadata(&lp).await.map(|_| ());
        let r = scenarios.list_metadata(&lp).await.map(|_| ());
        match b.and(c).and(s).and(r) {
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

/// Ends when shutdown is requested.
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
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
