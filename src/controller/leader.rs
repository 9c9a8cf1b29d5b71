//! Leader election on a `coordination.k8s.io/v1` Lease, for `replicas > 1`: only the holder runs the
//! controllers. Updates use the Lease's resourceVersion, so two replicas can never both win a round.
//! A leader that cannot renew within the lease duration stops (the process exits and restarts as a
//! follower), so at most one replica acts on DSS at a time.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::sync::lock;

/// Leader election settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and followers retry.
    pub retry_period: Duration,
}

/// Whether this process still acts alone on DSS. Without leader election the deployment guarantees it
/// (one replica, replaced with strategy Recreate), as far as anything can: a pod cut off on a lost node
/// may still run, so only what was just recorded counts. With leader election it holds until the
/// lease could expire in another replica's eyes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fence {
    lease_valid_until: Option<Arc<Mutex<Option<tokio::time::Instant>>>>,
}

impl Fence {
    /// The fence of a process that runs without leader election.
    pub(crate) fn unelected() -> Self {
        Self::default()
    }

    fn lease() -> Self {
        Self {
            lease_valid_until: Some(Arc::new(Mutex::new(None))),
        }
    }

    /// `Some(true)` while the lease is surely held, `Some(false)` once it may not be, `None` without
    /// leader election.
    pub(crate) fn lease_held(&self) -> Option<bool> {
        let cell = self.lease_valid_until.as_ref()?;
        let until = *lock(cell);
        Some(until.is_some_and(|u| tokio::time::Instant::now() < u))
    }

    fn extend(&self, until: tokio::time::Instant) {
        if let Some(cell) = &self.lease_valid_until {
            *lock(cell) = Some(until);
        }
    }
}

/// What of a Lease shows its holder is alive: any write changes one of these.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    resource_version: Option<String>,
    holder: Option<String>,
    renew_time: Option<MicroTime>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            resource_version: lease.metadata.resource_version.clone(),
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.clone()),
        }
    }
}

/// The Lease record as this replica last saw it change, and when, on this replica's own clock. The
/// holder is judged gone once the record has not changed for a whole lease duration as measured
/// here, as client-go does: comparing the holder's `renewTime` with this node's clock would let a
/// clock difference between the two nodes hand the lease over while its holder still acts.
#[derive(Debug, Default)]
struct Observed {
    last: Option<(Record, tokio::time::Instant)>,
}

impl Observed {
    /// Notes `record`, read at `now`; whether its holder has let it expire, as seen from here. A
    /// record without a duration has no holder to wait for.
    fn expired(&mut self, record: Record, duration: Option<Duration>, now: tokio::time::Instant) -> bool {
        let since = match &self.last {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.last = Some((record, now));
                now
            }
        };
        duration.is_none_or(|d| since + d <= now)
    }
}

/// Campaigns for and holds the lease.
pub(crate) struct Elector {
    api: Api<Lease>,
    settings: Settings,
    fence: Fence,
    observed: Mutex<Observed>,
}

impl Elector {
    /// An elector for the Lease in `settings`.
    pub(crate) fn new(client: Client, settings: Settings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            fence: Fence::lease(),
            observed: Mutex::new(Observed::default()),
        }
    }

    /// The fence the reconcilers check before acting on what they recorded earlier.
    pub(crate) fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Until when the lease is surely ours after a successful call that started at `started`: a retry
    /// period short of its expiry, as in [`Elector::hold`].
    fn valid_after(&self, started: tokio::time::Instant) -> tokio::time::Instant {
        started
            + self
                .settings
                .lease_duration
                .saturating_sub(self.settings.retry_period)
    }

    /// Waits until this replica holds the lease.
    pub(crate) async fn acquire(&self) {
        loop {
            let started = tokio::time::Instant::now();
            match self
                .try_in_time(self.settings.retry_period.max(Duration::from_secs(1)))
                .await
            {
                Ok(true) => {
                    self.fence.extend(self.valid_after(started));
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: lease not acquired"),
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews the lease until a renewal is impossible; then returns. It returns before the lease can
    /// expire in anyone's eyes: the renewal time written is taken before the call, and each call is
    /// bounded by what is left of the lease.
    pub(crate) async fn hold(&self) {
        let mut valid_until = tokio::time::Instant::now() + self.settings.lease_duration;
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            let started = tokio::time::Instant::now();
            // Stop a retry period before the lease runs out, so another leader never overlaps.
            let Some(left) = valid_until.checked_duration_since(started + self.settings.retry_period) else {
                self.fence.extend(started);
                tracing::error!("leader election: could not renew the lease in time");
                return;
            };
            match self.try_in_time(left).await {
                Ok(true) => {
                    valid_until = started + self.settings.lease_duration;
                    self.fence.extend(self.valid_after(started));
                }
                Ok(false) => {
                    self.fence.extend(started);
                    tracing::error!("leader election: another replica holds the lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renewal failed"),
            }
        }
    }

    async fn try_in_time(&self, limit: Duration) -> Result<bool, String> {
        match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the Lease call timed out".to_string()),
        }
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    pub(crate) async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.settings.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                if let Err(e) = self
                    .api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
                {
                    tracing::warn!(error = %e, "leader election: could not release the lease");
                }
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let me = self.settings.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map(|secs| Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
        let expired = lock(&self.observed).expired(Record::of(&lease), duration, tokio::time::Instant::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(me.as_str());
        if !(ours || holder.is_none() || expired) {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me);
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_secs);
        // replace() carries the resourceVersion read above: a concurrent winner makes this a 409.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rv: &str, holder: &str, renewed_at_second: i64) -> Record {
        Record {
            resource_version: Some(rv.into()),
            holder: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_at_second).unwrap())),
        }
    }

    #[test]
    fn expiry_is_measured_on_the_followers_clock_from_the_last_change_it_saw() {
        let d = Some(Duration::from_secs(15));
        let t0 = tokio::time::Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut seen = Observed::default();
        // The holder's renewTime is an hour behind this node's clock (skewed clocks): what counts is
        // that the record keeps changing, not the timestamp in it.
        let stale_clock = Timestamp::now().as_second() - 3600;
        assert!(!seen.expired(record("1", "a", stale_clock), d, at(0)));
        assert!(!seen.expired(record("2", "a", stale_clock + 5), d, at(10)));
        assert!(!seen.expired(record("3", "a", stale_clock + 10), d, at(20)));
        // Unchanged for less than a lease duration since it was last seen to change: still held.
        assert!(!seen.expired(record("3", "a", stale_clock + 10), d, at(34)));
        assert!(seen.expired(record("3", "a", stale_clock + 10), d, at(35)));
        // A renewTime far ahead of this clock does not keep a silent holder alive either.
        let mut seen = Observed::default();
        let future_clock = Timestamp::now().as_second() + 3600;
        assert!(!seen.expired(record("7", "b", future_clock), d, at(0)));
        assert!(seen.expired(record("7", "b", future_clock), d, at(15)));
        // A new holder (or any write) starts the count again.
        assert!(!seen.expired(record("8", "c", future_clock), d, at(16)));
        // A lease first seen is given a whole duration, whatever its renewTime says.
        let mut seen = Observed::default();
        assert!(!seen.expired(record("9", "a", 0), d, at(100)));
        assert!(
            seen.expired(record("9", "a", 0), None, at(100)),
            "no duration: nothing to wait for"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_holds_until_the_lease_could_expire() {
        assert_eq!(Fence::unelected().lease_held(), None);
        let fence = Fence::lease();
        assert_eq!(
            fence.lease_held(),
            Some(false),
            "not held before the first acquisition"
        );
        fence.extend(tokio::time::Instant::now() + Duration::from_secs(10));
        assert_eq!(fence.lease_held(), Some(true));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            fence.lease_held(),
            Some(false),
            "a lease not renewed in time is not held"
        );
    }
}
