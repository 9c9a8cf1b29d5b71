//! Deletion, as one `match` over the state of the run (the way kube-runtime's `finalizer.rs` matches
//! its finalizer state): orphan, abort, wait, release, or release by force once the finalizer timeout
//! passed with DSS unreachable or the credentials gone.
//!
//! Contract: `Release` lets the executor remove the finalizer; every other step keeps it. A release
//! on a DSS answer that does not settle the question only happens past the timeout.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    announce_abort,
    model::{Candidate, Controls, Event, Kind, Process, RunStatus, Search, Sending, Settings, Trouble},
    plan::{active, elapsed, in_flight},
};
use crate::crd::{AbortReason, AbortRequest, DeletionPolicy};

/// Where the run is when its resource is being deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Deleting<H> {
    /// No start was ever in flight: nothing to abort.
    NothingStarted,
    /// `deletionPolicy: Orphan`: the run (or a start in flight) is left as it is.
    Orphan {
        /// What is left, for the note.
        what: String,
    },
    /// A start request this process recorded and never sent.
    Unsent,
    /// A start request that may have been sent, without a recorded run.
    LostStart {
        /// The latest moment it may have been sent.
        since: Timestamp,
    },
    /// The run has ended.
    Ended,
    /// The run is active (or may be: it must be asked).
    Active {
        /// Which run.
        handle: H,
        /// How it is named in notes.
        name: String,
    },
}

/// What the executor learned during deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Learned<H> {
    /// Nothing yet.
    Nothing,
    /// The search for a lost start's run answered.
    Searched(Search<H>),
    /// DSS reports the run ended (or, in its own words, that it does not exist).
    Ended,
    /// DSS reports the run active.
    Running,
    /// The abort was sent.
    AbortSent,
    /// DSS or the connection failed; `credentials` when the credentials are what is missing.
    Failed {
        /// What went wrong.
        trouble: Trouble,
        /// The Secret or key file is gone or unusable (rather than DSS being unreachable).
        credentials: bool,
    },
}

/// Why a finalizer was released without DSS confirming the end of the run (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forced {
    /// The abort was sent but DSS never confirmed a terminal state.
    AbortUnconfirmed,
    /// The credentials were gone.
    CredentialsUnavailable,
    /// DSS could not be reached.
    DssUnreachable,
}

impl Forced {
    /// Every reason, for metric pre-registration.
    pub(crate) const ALL: [Forced; 3] = [
        Self::AbortUnconfirmed,
        Self::CredentialsUnavailable,
        Self::DssUnreachable,
    ];

    /// The PascalCase label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AbortUnconfirmed => "AbortUnconfirmed",
            Self::CredentialsUnavailable => "CredentialsUnavailable",
            Self::DssUnreachable => "DssUnreachable",
        }
    }
}

/// What to do next during deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cleanup<H> {
    /// Remove the finalizer; with a note (an event) unless nothing needed saying.
    Release {
        /// The event note.
        note: Option<String>,
        /// Whether the event is a Warning.
        warning: bool,
        /// Set when released without DSS confirming the run ended.
        forced: Option<Forced>,
    },
    /// Ask DSS for the state of this run (found by a search, or the recorded one).
    Observe(Deleting<H>),
    /// Send the abort.
    Abort,
    /// Search DSS for a lost start's run.
    Search {
        /// The latest moment the start may have been sent.
        since: Timestamp,
    },
    /// Keep the finalizer and look again after this long; `record_abort` when the abort request is
    /// to be recorded in the status (the first time).
    Wait {
        /// When to look again.
        after: Duration,
        /// Record `abortRequest: Deleted` and say so in an event.
        record_abort: bool,
    },
    /// Keep the finalizer and back off (the error policy's per-object backoff).
    Backoff(Trouble),
}

/// The state of the run at deletion.
pub(crate) fn deleting<K: Kind>(c: &Controls, s: &RunStatus<K>, p: &Process) -> Deleting<K::Handle> {
    let orphan = c.deletion_policy == DeletionPolicy::Orphan;
    if let Some(current) = &s.current {
        let name = K::describe(&current.handle);
        return match (orphan, active(s).is_some()) {
            (true, _) => Deleting::Orphan {
                what: format!("{name} left running"),
            },
            (false, true) => Deleting::Active {
                handle: current.handle.clone(),
                name,
            },
            (false, false) => Deleting::Ended,
        };
    }
    match (in_flight(s), orphan, p.sending) {
        (None, _, _) => Deleting::NothingStarted,
        (Some(_), true, _) => Deleting::Orphan {
            what: "a start in flight".to_string(),
        },
        (Some(_), false, Sending::NotSent) => Deleting::Unsent,
        (Some(r), false, Sending::MaybeSent { since }) => Deleting::LostStart {
            since: since.max(r.requested_at.0),
        },
    }
}

/// The next deletion step. `overdue` when the finalizer timeout has passed since deletion began;
/// `abort_recorded` when the status already shows the abort.
pub(crate) fn next<H: Clone>(
    state: &Deleting<H>,
    learned: Learned<H>,
    overdue: bool,
    abort_recorded: bool,
    now: Timestamp,
    settings: &Settings,
) -> Cleanup<H> {
    let release = |note: String, warning: bool, forced: Option<Forced>| Cleanup::Release {
        note: Some(note),
        warning,
        forced,
    };
    match (state, learned) {
        (Deleting::NothingStarted | Deleting::Ended, _) => Cleanup::Release {
            note: None,
            warning: false,
            forced: None,
        },
        (Deleting::Orphan { what }, _) => {
            release(format!("released; {what} (deletionPolicy: Orphan)"), false, None)
        }
        (Deleting::Unsent, _) => release(
            "released; the start request waiting for its turn was never sent".to_string(),
            false,
            None,
        ),
        (Deleting::LostStart { since }, Learned::Nothing) => wait_or_search(*since, now, settings),
        (Deleting::LostStart { .. }, Learned::Searched(Search::Found(found))) => lost_start(found),
        (Deleting::LostStart { .. }, Learned::Searched(Search::Raced)) => Cleanup::Wait {
            after: Duration::from_secs(1),
            record_abort: false,
        },
        (Deleting::Active { .. }, Learned::Nothing) => Cleanup::Observe(state.clone()),
        (Deleting::Active { name, .. }, Learned::Ended) => release(
            format!("{name} is no longer running; finalizer released"),
            false,
            None,
        ),
        (Deleting::Active { .. }, Learned::Running) => Cleanup::Abort,
        (Deleting::Active { name, .. }, Learned::AbortSent) if overdue => release(
            format!(
                "DSS did not confirm the abort of {name} within the finalizer timeout ({}); released",
                Forced::AbortUnconfirmed.as_str()
            ),
            true,
            Some(Forced::AbortUnconfirmed),
        ),
        (Deleting::Active { .. }, Learned::AbortSent) => Cleanup::Wait {
            after: settings.abort_poll,
            record_abort: !abort_recorded,
        },
        (_, Learned::Failed { trouble, credentials }) if overdue => {
            let forced = if credentials {
                Forced::CredentialsUnavailable
            } else {
                Forced::DssUnreachable
            };
            let what = match state {
                Deleting::Active { name, .. } => format!("abort {name}"),
                _ => "look for the run of the start request in flight".to_string(),
            };
            // The note names the cause as the metric does: credentials gone or DSS unreachable.
            release(
                format!(
                    "could not {what} within the finalizer timeout ({}: {}); released",
                    forced.as_str(),
                    trouble.message
                ),
                true,
                Some(forced),
            )
        }
        (_, Learned::Failed { trouble, .. }) => Cleanup::Backoff(trouble),
        // Facts that do not belong to the state: start that state's own path again.
        (Deleting::Active { .. }, Learned::Searched(_)) => Cleanup::Observe(state.clone()),
        (Deleting::LostStart { since }, _) => Cleanup::Search { since: *since },
    }
}

/// Deletion's abort, once sent, is recorded: `abortRequest: Deleted` in the status (the phase and
/// the conditions then show the abort) and an event naming the run. Written once, when `next` says
/// `record_abort`.
pub(crate) fn abort_recorded<K: Kind>(
    mut status: RunStatus<K>,
    state: &Deleting<K::Handle>,
    now: Timestamp,
) -> (RunStatus<K>, Event) {
    status.abort_request = Some(AbortRequest {
        reason: AbortReason::Deleted,
        requested_at: Time(now),
    });
    let name = match state {
        Deleting::Active { name, .. } => name.as_str(),
        _ => "the run",
    };
    let (reason, note) = announce_abort(AbortReason::Deleted, name);
    let event = Event {
        warning: false,
        reason,
        action: K::WORDS.abort,
        note,
    };
    (status, event)
}

/// A start in flight: its starter may still record its run, so look again when it surely has; then
/// search.
fn wait_or_search<H>(since: Timestamp, now: Timestamp, settings: &Settings) -> Cleanup<H> {
    let waited = elapsed(since, now);
    match settings.start_grace.checked_sub(waited).filter(|l| !l.is_zero()) {
        Some(left) => Cleanup::Wait {
            after: left,
            record_abort: false,
        },
        None => Cleanup::Search { since },
    }
}

/// A search for the run of a start in flight answered.
fn lost_start<H: Clone>(found: Vec<Candidate<H>>) -> Cleanup<H> {
    match found.as_slice() {
        [one] => Cleanup::Observe(Deleting::Active {
            handle: one.handle.clone(),
            name: one.name.clone(),
        }),
        [] => Cleanup::Release {
            note: Some("released: the start request in flight created no run".to_string()),
            warning: true,
            forced: None,
        },
        many => Cleanup::Release {
            note: Some(format!(
                "released: several runs match the start request in flight ({}); check which to abort",
                many.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            warning: true,
            forced: None,
        },
    }
}

#[cfg(test)]
mod tests;
