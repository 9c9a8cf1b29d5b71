//! What the reconcilers share: the clients, the connection registry, the event recorder, the metrics,
//! the tunables and the error backoff ([`Shared`]), and per kind of run the kind's own IO state and
//! this process's book of start requests ([`RunContext`]). Both are one per process, whatever the
//! number of watched namespaces: one budget per connection, one book of claimed runs.

use std::{sync::Arc, time::Duration};

use kube::Client;

use super::{
    backoff::ErrorBackoff,
    connection_policy::ConnectionPolicy,
    connections::Connections,
    events::Recorder,
    execute::{RunKind, sightings::Sightings, starts::Starts},
    metrics::Metrics,
    run,
};

/// Tunables of the controllers.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The run core's tunables.
    pub(crate) run: run::Settings,
    /// After deletion, how long the finalizer waits for DSS to confirm an abort (or to become
    /// reachable) before it is released with a Warning event.
    pub(crate) finalizer_timeout: Duration,
    /// Tolerated clock difference between the operator and DSS when matching a lost start.
    pub(crate) clock_skew: Duration,
    /// Lines of the DSS log kept in `status.failure.logTail`.
    pub(crate) log_tail_lines: usize,
    /// How often a connection's running jobs are listed while it has jobs to watch.
    pub(crate) listing_interval: Duration,
    /// The longest a reconcile's DSS call waits for its connection's budget.
    pub(crate) max_budget_wait: Duration,
    /// Timeout of one DSS request.
    pub(crate) request_timeout: Duration,
    /// The connections this operator refuses.
    pub(crate) connection_policy: ConnectionPolicy,
}

/// Shared state of every reconciler of the process.
pub(crate) struct Shared {
    /// Kubernetes client.
    pub(crate) kube: Client,
    /// DSS connections and their shared clients.
    pub(crate) connections: Connections,
    /// The one event recorder (so repeated events aggregate).
    pub(crate) recorder: Recorder,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Tunables.
    pub(crate) settings: Settings,
    /// Per-object backoff of failing reconciles.
    pub(crate) backoff: ErrorBackoff,
}

/// The context of the reconciler of one kind of run.
pub(crate) struct RunContext<K: RunKind> {
    /// What every reconciler shares.
    pub(crate) shared: Arc<Shared>,
    /// What the kind's calls share (listings, the caches of every scope).
    pub(crate) io: K::Io,
    /// The start requests this process recorded and what became of them, and the runs it claimed.
    pub(crate) starts: Starts,
    /// Runs DSS said do not exist, and since when (confirmed before a run fails).
    pub(crate) sightings: Sightings,
}
