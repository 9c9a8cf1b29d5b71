//! The executor: the IO around the run core, generic over the kind of run ([`RunKind`]). One
//! reconcile of a live object goes
//!
//! 1. resolve the connection ([`observe`]),
//! 2. observe the current run ([`observe`]),
//! 3. ask the core ([`run::decide`]) and perform the one action it names: record and send a start
//!    ([`start`]), search for a lost start ([`search`]) or abort; feed the answer back to the core,
//! 4. record the whole status once it waits ([`record`]) and publish the events.
//!
//! Deleted objects go through [`cleanup`]. The book of start requests this process has not sent is
//! [`starts`].

pub(crate) mod cleanup;
pub(crate) mod controls;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod observe;
pub(crate) mod record;
pub(crate) mod search;
pub(crate) mod sightings;
pub(crate) mod start;
pub(crate) mod starts;
#[cfg(test)]
mod tests;

use std::{fmt::Debug, future::Future, sync::Arc, time::Duration};

use futures::stream::BoxStream;
use k8s_openapi::{NamespaceResourceScope, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    connections::Resolved,
    context::RunContext,
    error::{Error, from_finalizer},
    metrics::Metrics,
    run::{
        self, Blocker, Candidate, Controls, Current, Event, Fact, Kind, Next, Observation, RunStatus, Signal,
        contract::Derived, fold::whole_seconds,
    },
};
use crate::{
    crd::{ConnectionRef, StartRequest},
    dss,
};

/// A kind of run with its IO: the resource it is run for, how its status maps onto the run core's,
/// and the DSS calls that start, observe, abort and find its runs.
pub(crate) trait RunKind: Kind + Send + Sync {
    /// The resource (`DatasetBuild`).
    type Resource: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static;
    /// Its status type.
    type Status: Clone + Debug + PartialEq + Serialize + Send + Sync;
    /// What the kind's calls share in this process (listings, caches).
    type Io: Send + Sync;

    /// The finalizer that guards its runs.
    const FINALIZER: &'static str;
    /// The controller's name in metrics.
    const CONTROLLER: &'static str;

    /// The run controls of the resource's spec and annotations.
    fn controls(res: &Self::Resource) -> Controls;
    /// The connection the resource names.
    fn connection(res: &Self::Resource) -> Option<&ConnectionRef>;
    /// The run core's view of the resource's status.
    fn read(res: &Self::Resource) -> RunStatus<Self>;
    /// The resource's status as it was read.
    fn written(res: &Self::Resource) -> Option<&Self::Status>;
    /// The status to write for the run core's status and the derived fields.
    fn write(run: RunStatus<Self>, derived: Derived) -> Self::Status;
    /// A key naming a run across builds (claims: one run is never given to two objects).
    fn key(handle: &Self::Handle) -> String;

    /// Adds a watch scope's cache of the resource: searches and claims look across every scope.
    fn watch(io: &Self::Io, store: Store<Self::Resource>);

    /// Wake-ups of the scope's objects from the kind's own watch of its runs (a listing that saw a
    /// run change), for the scope's controller.
    fn wakes(io: &Self::Io, namespace: Option<&str>) -> BoxStream<'static, ObjectRef<Self::Resource>>;

    /// Counts what the core signalled, in the kind's own metric families.
    fn count(metrics: &Metrics, signal: Signal);

    /// Sends the start request `request` records; the new run's handle.
    fn start(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &Self::Resource,
        request: &StartRequest,
    ) -> impl Future<Output = Result<Self::Handle, dss::Error>> + Send;

    /// Observes the current run, of age `age` (see [`Look`]).
    fn observe(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &Self::Resource,
        current: &Current<Self>,
        age: Duration,
        look: Look,
    ) -> impl Future<Output = Result<Sighting<Self>, dss::Error>> + Send;

    /// Aborts a run.
    fn abort(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &Self::Resource,
        handle: &Self::Handle,
    ) -> impl Future<Output = Result<(), dss::Error>> + Send;

    /// The runs that may be the one `request` created (sent at the latest at `since`): not tracked
    /// by any other object, not claimed.
    fn search(
        ctx: &RunContext<Self>,
        conn: &Resolved,
        res: &Self::Resource,
        status: &RunStatus<Self>,
        request: &StartRequest,
        since: Timestamp,
    ) -> impl Future<Output = Result<Vec<Candidate<Self::Handle>>, Error>> + Send;
}

/// What a look at the current run found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sighting<K: Kind> {
    /// The run as DSS reports it, or `None` when nothing changed since it was recorded (a watch of
    /// the kind says so, and will wake the object when that changes).
    pub(crate) observation: Option<Observation<K>>,
    /// Whether a watch of the kind follows the run and wakes the object when it changes, so that
    /// it needs no poll of its own.
    pub(crate) watched: bool,
}

impl<K: Kind> Sighting<K> {
    /// An observation with no watch behind it: the object polls its run itself.
    pub(crate) fn polled(observation: Observation<K>) -> Self {
        Self {
            observation: Some(observation),
            watched: false,
        }
    }
}

/// How closely a run is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Look {
    /// A poll: shared listings may answer, and a run seen failed for the first time comes with its
    /// failure details (the failing activity and the end of its log).
    Poll,
    /// A direct question about the run's state, nothing more (deletion).
    Confirm,
}

/// Reconciles one object: the finalizer first, then its live path or its deletion.
pub(crate) async fn reconcile<K: RunKind>(
    res: Arc<K::Resource>,
    ctx: Arc<RunContext<K>>,
) -> Result<Action, Error> {
    ctx.shared.metrics.reconciled(K::CONTROLLER);
    let ns = res.namespace().unwrap_or_default();
    let api: Api<K::Resource> = Api::namespaced(ctx.shared.kube.clone(), &ns);
    finalizer(&api, K::FINALIZER, res, |event| async {
        match event {
            Finalizer::Apply(r) => apply(r.as_ref(), &api, &ctx).await,
            Finalizer::Cleanup(r) => cleanup::cleanup(r.as_ref(), &api, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer)
}

/// The most actions one reconcile performs before it records and requeues (start, then a search
/// that starts again, then the send).
const MAX_ACTIONS: usize = 4;

/// The live path: observe, then decide and act until the core says wait, then record.
async fn apply<K: RunKind>(
    res: &K::Resource,
    api: &Api<K::Resource>,
    ctx: &RunContext<K>,
) -> Result<Action, Error> {
    let mut pass = Pass::new(res, ctx);
    let (conn, mut fact) = observe::observe(&mut pass).await?;
    for _ in 0..MAX_ACTIONS {
        let next = pass.decide(fact);
        let Some(conn) = conn.as_ref() else {
            return record::record(&mut pass, api, next).await;
        };
        fact = match next {
            Next::Wait(_) => return record::record(&mut pass, api, next).await,
            Next::Start => match start::start(&mut pass, api, conn).await? {
                start::Then::Fact(f) => f,
                start::Then::Requeue(action) => return Ok(action),
            },
            Next::Send => start::send(&mut pass, api, conn).await?,
            Next::Abort(reason) => observe::abort(&pass, conn, reason).await,
            Next::Search { since } => search::search(&pass, conn, since).await,
        };
    }
    // The core asked for more actions than one reconcile performs: record, and go on soon.
    record::record(
        &mut pass,
        api,
        Next::Wait(run::Wake::After(Duration::from_secs(1))),
    )
    .await
}

/// The current time in whole seconds, as Kubernetes stores times.
pub(crate) fn now_seconds() -> Timestamp {
    whole_seconds(Timestamp::now())
}

/// One reconcile of one object: what was read, the status being decided, and what happened.
pub(crate) struct Pass<'a, K: RunKind> {
    /// The object as read.
    pub(crate) res: &'a K::Resource,
    /// The reconciler's context.
    pub(crate) ctx: &'a RunContext<K>,
    /// Its run controls.
    pub(crate) controls: Controls,
    /// The status being decided.
    pub(crate) status: RunStatus<K>,
    /// What keeps it waiting.
    pub(crate) blocker: Option<Blocker>,
    /// Events to publish once recorded.
    pub(crate) events: Vec<Event>,
    /// What to count once recorded.
    pub(crate) signals: Vec<Signal>,
    /// Now, in whole seconds (Kubernetes times have whole seconds).
    pub(crate) now: Timestamp,
    /// The status last written (or read): a write happens only when the new one differs.
    pub(crate) written: Option<K::Status>,
    /// The resourceVersion every write must find (the one read, then the one last written).
    pub(crate) rv: Option<String>,
    /// A run was started in this reconcile (its handle must not be lost to a write conflict).
    pub(crate) started: bool,
    /// The start request was recorded and could not be sent yet (the book notes it once recorded).
    pub(crate) queued: bool,
    /// The start request as it was sent in this reconcile.
    pub(crate) sent: Option<StartRequest>,
    /// A watch of the kind follows the current run and wakes the object when it changes.
    pub(crate) watched: bool,
}

impl<'a, K: RunKind> Pass<'a, K> {
    fn new(res: &'a K::Resource, ctx: &'a RunContext<K>) -> Self {
        Self {
            res,
            ctx,
            controls: K::controls(res),
            status: K::read(res),
            blocker: None,
            events: Vec::new(),
            signals: Vec::new(),
            now: now_seconds(),
            written: K::written(res).cloned(),
            rv: res.resource_version(),
            started: false,
            queued: false,
            sent: None,
            watched: false,
        }
    }

    /// The object's uid.
    pub(crate) fn uid(&self) -> String {
        self.res.uid().unwrap_or_default()
    }

    /// Asks the core: folds `fact` into the status and returns the next step.
    fn decide(&mut self, fact: Fact<K>) -> Next {
        let settings = &self.ctx.shared.settings.run;
        let mut process = self
            .ctx
            .starts
            .process(&self.uid(), &self.status, settings.start_grace);
        process.watched = self.watched;
        let input = run::Input {
            controls: &self.controls,
            process,
            now: self.now,
            settings,
        };
        let status = std::mem::take(&mut self.status);
        let d = run::decide(&input, status, fact);
        tracing::debug!(next = ?d.next, "decided");
        self.status = d.status;
        self.blocker = d.blocker;
        self.events.extend(d.events);
        self.signals.extend(d.signals);
        d.next
    }

    /// The status as it would be written now.
    pub(crate) fn to_write(&self) -> K::Status {
        let derived = run::contract::derive(&self.controls, &self.status, self.blocker.as_ref(), self.now);
        K::write(self.status.clone(), derived)
    }
}
