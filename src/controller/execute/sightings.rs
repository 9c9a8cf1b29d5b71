//! When this process first heard DSS say, in its own words, that an object's run does not exist.
//! The run core fails the run only when DSS says so again after a delay (`gone_confirm`); what was
//! heard lives here and dies with the process (a restart simply asks again).

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::jiff::Timestamp;

use crate::sync::lock;

/// First "does not exist" answers, by object uid and run.
#[derive(Default)]
pub(crate) struct Sightings {
    gone: Mutex<HashMap<String, (String, Timestamp)>>,
}

impl Sightings {
    /// Notes that DSS says the run `run` of object `uid` does not exist; returns when this was first
    /// heard, if before this answer.
    pub(crate) fn gone(&self, uid: &str, run: &str, now: Timestamp) -> Option<Timestamp> {
        let mut gone = lock(&self.gone);
        match gone.get(uid) {
            Some((r, first)) if r == run => Some(*first),
            _ => {
                gone.insert(uid.to_owned(), (run.to_owned(), now));
                None
            }
        }
    }

    /// Forgets what was heard about `uid`'s run (it was seen, or it is settled).
    pub(crate) fn clear(&self, uid: &str) {
        lock(&self.gone).remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_is_remembered_per_run_until_cleared() {
        let s = Sightings::default();
        let (t0, t1) = (
            Timestamp::from_second(100).unwrap(),
            Timestamp::from_second(110).unwrap(),
        );
        assert_eq!(s.gone("u", "job1", t0), None, "first heard now");
        assert_eq!(s.gone("u", "job1", t1), Some(t0), "heard before");
        assert_eq!(s.gone("u", "job2", t1), None, "another run starts over");
        s.clear("u");
        assert_eq!(s.gone("u", "job2", t1), None, "cleared");
    }
}
