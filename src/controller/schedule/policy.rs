//! The concurrency decision: given the runnable slots and the schedule's builds, which builds to
//! create now, which active ones to delete (`Replace`), and which slot waits. Pure.

use jiff::Timestamp;

use super::children::{Child, State};
use crate::crd::ConcurrencyPolicy;

/// Why a due slot waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// `Forbid`: for the active build to finish.
    Forbidden,
    /// `Replace`: for the replaced build to be gone.
    Replacing,
}

/// What to do with the runnable slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Slots whose build to create now, oldest first.
    pub(crate) create: Vec<Timestamp>,
    /// Active builds to delete first (`Replace`), by name.
    pub(crate) delete: Vec<String>,
    /// The oldest due slot that is not created now, and why.
    pub(crate) waiting: Option<(Timestamp, Wait)>,
}

/// Applies the concurrency policy to the runnable slots (oldest first). `children` must be fresh
/// (read from the apiserver, not a cache) so that a build created a moment ago counts as active.
pub(crate) fn plan(runnable: &[Timestamp], policy: ConcurrencyPolicy, children: &[Child]) -> Plan {
    let Some((&first, rest)) = runnable.split_first() else {
        return Plan::default();
    };
    let active: Vec<&Child> = children.iter().filter(|c| c.state == State::Active).collect();
    match policy {
        ConcurrencyPolicy::Allow => Plan {
            create: runnable.to_vec(),
            ..Plan::default()
        },
        ConcurrencyPolicy::Forbid if !active.is_empty() => Plan {
            waiting: Some((first, Wait::Forbidden)),
            ..Plan::default()
        },
        // One at a time: the next runnable slot waits for the build created now.
        ConcurrencyPolicy::Forbid => Plan {
            create: vec![first],
            waiting: rest.first().map(|&slot| (slot, Wait::Forbidden)),
            ..Plan::default()
        },
        ConcurrencyPolicy::Replace => {
            // Only the newest slot is worth starting: each would replace the one before it.
            let newest = runnable.last().copied().unwrap_or(first);
            if active.is_empty() {
                Plan {
                    create: vec![newest],
                    ..Plan::default()
                }
            } else {
                Plan {
                    delete: active
                        .iter()
                        .filter(|c| !c.deleting)
                        .map(|c| c.name.clone())
                        .collect(),
                    waiting: Some((newest, Wait::Replacing)),
                    ..Plan::default()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn child(name: &str, state: State, deleting: bool) -> Child {
        Child {
            name: name.into(),
            uid: None,
            slot: None,
            state,
            deleting,
            completed: None,
            reference: ObjectReference::default(),
        }
    }

    /// (what, runnable slots, policy, the schedule's builds, the plan)
    type Case<'a> = (&'a str, &'a [Timestamp], ConcurrencyPolicy, Vec<Child>, Plan);

    fn check(cases: Vec<Case>) {
        for (name, runnable, policy, children, want) in cases {
            assert_eq!(plan(runnable, policy, &children), want, "{name}");
        }
    }

    fn done() -> Child {
        child("done", State::Succeeded, false)
    }

    fn running() -> Child {
        child("running", State::Active, false)
    }

    /// An active build being deleted.
    fn going() -> Child {
        child("going", State::Active, true)
    }

    const THREE: [i64; 3] = [60, 120, 180];

    #[test]
    fn allow_and_forbid() {
        use ConcurrencyPolicy::{Allow, Forbid};
        let three = THREE.map(t);
        check(vec![
            ("nothing due", &[], Forbid, vec![running()], Plan::default()),
            (
                "allow creates every slot beside an active build",
                &three,
                Allow,
                vec![running()],
                Plan {
                    create: three.to_vec(),
                    ..Plan::default()
                },
            ),
            (
                "forbid waits for an active build",
                &three,
                Forbid,
                vec![done(), running()],
                Plan {
                    waiting: Some((t(60), Wait::Forbidden)),
                    ..Plan::default()
                },
            ),
            (
                "forbid counts a build being deleted as active",
                &three[..1],
                Forbid,
                vec![going()],
                Plan {
                    waiting: Some((t(60), Wait::Forbidden)),
                    ..Plan::default()
                },
            ),
            (
                "forbid runs the oldest slot, the next one waits for it",
                &three,
                Forbid,
                vec![done()],
                Plan {
                    create: vec![t(60)],
                    waiting: Some((t(120), Wait::Forbidden)),
                    ..Plan::default()
                },
            ),
        ]);
    }

    #[test]
    fn replace() {
        use ConcurrencyPolicy::Replace;
        let three = THREE.map(t);
        check(vec![
            (
                "replace deletes the active build and waits",
                &three[..1],
                Replace,
                vec![done(), running(), going()],
                Plan {
                    delete: vec!["running".into()],
                    waiting: Some((t(60), Wait::Replacing)),
                    ..Plan::default()
                },
            ),
            (
                "replace waits while the replaced build is being deleted",
                &three[..1],
                Replace,
                vec![going()],
                Plan {
                    waiting: Some((t(60), Wait::Replacing)),
                    ..Plan::default()
                },
            ),
            (
                "replace starts the newest slot once nothing is active",
                &three,
                Replace,
                vec![done()],
                Plan {
                    create: vec![t(180)],
                    ..Plan::default()
                },
            ),
        ]);
    }
}
