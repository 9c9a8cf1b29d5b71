//! What only this process knows about the start requests it recorded.
//!
//! A build whose start has to wait for the connection's budget records its start request once (so it
//! shows as `Starting` and the crash guard covers it) and sends it when its turn comes, without
//! another status write. The status is the durable record; whether the request has been sent yet,
//! and when, lives here and dies with the process. Another process (or this one after a restart)
//! finds no entry and treats the request as possibly sent, so it waits for the crash guard's grace,
//! counted from when it began to act, before it searches DSS for the run.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::jiff::Timestamp;

use crate::{
    controller::{
        leader::Fence,
        run::{
            Kind, Lease, Process, RunStatus, Sending,
            plan::{elapsed, in_flight},
        },
    },
    crd::StartRequest,
    sync::lock,
};

/// One recorded start request of this process.
struct Entry {
    request: StartRequest,
    /// When it was sent; `None` while it waits for its turn.
    sent_at: Option<Timestamp>,
}

/// How long this process remembers a run it started or adopted: long enough for the object's
/// status (and so every other object's search) to show it.
const CLAIM_MEMORY: Duration = Duration::from_secs(600);

/// The start requests this process recorded, by build uid, and the runs it claimed for a build.
pub(crate) struct Starts {
    acting_since: Timestamp,
    fence: Fence,
    entries: Mutex<HashMap<String, Entry>>,
    /// The keys of the runs this process started or adopted, with when: a search for another
    /// object's lost start never takes one of them, even before the owner's status shows it.
    claimed: Mutex<HashMap<u128, std::time::Instant>>,
}

impl Starts {
    /// The book of a process that begins to act now, alone as far as `fence` says.
    pub(crate) fn new(fence: Fence) -> Self {
        Self::acting_since(fence, Timestamp::now())
    }

    /// The book of a process that began to act at `acting_since` (tests start from a process that
    /// has been acting for longer than the crash guard's grace).
    pub(crate) fn acting_since(fence: Fence, acting_since: Timestamp) -> Self {
        Self {
            acting_since,
            fence,
            entries: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashMap::new()),
        }
    }

    /// Claims a run (by its kind's key) for one object. False when this process already gave it to
    /// an object.
    pub(crate) fn claim(&self, key: &str) -> bool {
        let mut claimed = lock(&self.claimed);
        claimed.retain(|_, at| at.elapsed() < CLAIM_MEMORY);
        let key = crate::digest::of(key);
        if claimed.contains_key(&key) {
            return false;
        }
        claimed.insert(key, std::time::Instant::now());
        true
    }

    /// Whether this process recently started or adopted the run for an object.
    pub(crate) fn claimed(&self, key: &str) -> bool {
        lock(&self.claimed)
            .get(&crate::digest::of(key))
            .is_some_and(|at| at.elapsed() < CLAIM_MEMORY)
    }

    fn set(&self, uid: &str, entry: Option<Entry>) {
        let mut entries = lock(&self.entries);
        match entry {
            Some(e) => {
                entries.insert(uid.to_string(), e);
            }
            None => {
                entries.remove(uid);
            }
        }
    }

    /// Notes a start request recorded in the status and not sent.
    pub(crate) fn queued(&self, uid: &str, request: &StartRequest) {
        let entry = Entry {
            request: request.clone(),
            sent_at: None,
        };
        self.set(uid, Some(entry));
    }

    /// Notes that the request is being sent (before the call, so a call cut short counts as sent).
    pub(crate) fn sending(&self, uid: &str, request: &StartRequest, now: Timestamp) {
        let entry = Entry {
            request: request.clone(),
            sent_at: Some(now),
        };
        self.set(uid, Some(entry));
    }

    /// Forgets the build's request (its outcome is recorded, or it was withdrawn).
    pub(crate) fn forget(&self, uid: &str) {
        self.set(uid, None);
    }

    /// What is known of `request`, the object's recorded start request that has no run yet.
    pub(crate) fn sending_state(&self, uid: &str, request: &StartRequest) -> Sending {
        let mine = lock(&self.entries)
            .get(uid)
            .filter(|e| e.request == *request)
            .map(|e| e.sent_at);
        match mine {
            Some(None) => Sending::NotSent,
            Some(Some(at)) => Sending::MaybeSent {
                since: at.max(request.requested_at.0),
            },
            // Recorded by another process, or by this one before a restart: it may have been sent
            // at any time before this process began to act.
            None => Sending::MaybeSent {
                since: self.acting_since.max(request.requested_at.0),
            },
        }
    }

    /// Whether another build of this process sent a start of the same definition less than `within`
    /// ago: its run may be listed before its handle is known, so a search must wait for it.
    pub(crate) fn sending_alike(&self, uid: &str, definition_hash: Option<&str>, within: Duration) -> bool {
        let now = Timestamp::now();
        lock(&self.entries).iter().any(|(other, e)| {
            other != uid
                && e.request.definition_hash.as_deref() == definition_hash
                && e.sent_at.is_some_and(|at| elapsed(at, now) < within)
        })
    }

    /// What this process knows about a run's recorded start request, for the run core.
    pub(crate) fn process<K: Kind>(&self, uid: &str, status: &RunStatus<K>, grace: Duration) -> Process {
        let request = in_flight(status);
        Process {
            sending: request.map_or(Sending::NotSent, |r| self.sending_state(uid, r)),
            lease: self.lease(),
            alike_in_flight: request
                .is_some_and(|r| self.sending_alike(uid, r.definition_hash.as_deref(), grace)),
            watched: false,
        }
    }

    /// Whether this process is surely alone in acting (for sending queued requests as recorded).
    pub(crate) fn lease(&self) -> Lease {
        match self.fence.lease_held() {
            None => Lease::Unelected,
            Some(true) => Lease::Held,
            Some(false) => Lease::Unsure,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn request(at: i64) -> StartRequest {
        StartRequest {
            requested_at: Time(Timestamp::from_second(at).unwrap()),
            fingerprint: "fp".into(),
            attempt: Some(1),
            definition_hash: None,
            refused: None,
        }
    }

    #[test]
    fn a_request_is_unsent_only_for_the_process_that_queued_it() {
        let starts = Starts::new(Fence::unelected());
        let since = starts.acting_since;
        let old = request(1_800_000_000);
        assert_eq!(
            starts.sending_state("u", &old),
            Sending::MaybeSent {
                since: since.max(old.requested_at.0)
            }
        );
        starts.queued("u", &old);
        assert_eq!(starts.sending_state("u", &old), Sending::NotSent);
        // Another request (recorded again elsewhere) is not the one queued here.
        let newer = request(1_800_000_005);
        assert!(matches!(
            starts.sending_state("u", &newer),
            Sending::MaybeSent { .. }
        ));
        let sent_at = Timestamp::from_second(1_900_000_000).unwrap();
        starts.sending("u", &old, sent_at);
        assert_eq!(
            starts.sending_state("u", &old),
            Sending::MaybeSent { since: sent_at }
        );
        starts.forget("u");
        assert!(matches!(
            starts.sending_state("u", &old),
            Sending::MaybeSent { .. }
        ));
    }

    #[test]
    fn a_job_is_claimed_for_one_build_only() {
        let starts = Starts::new(Fence::unelected());
        assert!(!starts.claimed("j1"));
        assert!(starts.claim("j1"));
        assert!(starts.claimed("j1"));
        assert!(!starts.claim("j1"), "a second build cannot take it");
        assert!(starts.claim("j2"));
    }

    #[test]
    fn the_lease_is_read_from_the_fence() {
        assert_eq!(Starts::new(Fence::unelected()).lease(), Lease::Unelected);
    }
}
