//! Request statistics of the DSS API (the admin API is not counted): totals by route template and
//! status, injected faults, jobs started, trigger fires and scenario runs, and requests per second
//! over the last ten minutes.
//! Reliability tests read them through `GET /__emulator/stats` to count calls and jobs.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::faults::FaultCounters;

/// Seconds of per-second history kept.
const WINDOW_SECONDS: usize = 600;

/// The statistics document of `GET /__emulator/stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// DSS API requests received (including those answered by an injected fault).
    pub requests_total: u64,
    /// Requests by `"<METHOD> <route template>"`, e.g. `"POST /projects/{pk}/jobs/"`, without the
    /// API prefix; `"<METHOD> unmatched"` for unknown paths.
    pub requests_by_route: BTreeMap<String, u64>,
    /// Responses by status code (connections reset without a response are not counted here).
    pub responses_by_status: BTreeMap<String, u64>,
    /// Bytes of response bodies sent (as their size is known when the response starts; a streamed
    /// body of unknown size counts what it announced at least).
    #[serde(default)]
    pub response_bytes_total: u64,
    /// Response body bytes by route, keyed as `requests_by_route`.
    #[serde(default)]
    pub response_bytes_by_route: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults_injected: FaultCounters,
    /// Jobs created by `POST /projects/{pk}/jobs/` (including those whose response was dropped)
    /// and by scenario build steps.
    pub jobs_started: u64,
    /// Trigger fires of `POST .../scenarios/{id}/run` (including those whose response was dropped).
    #[serde(default)]
    pub trigger_fires: u64,
    /// Scenario runs started (fires that were not cancelled).
    #[serde(default)]
    pub scenario_runs_started: u64,
    /// The highest number of requests received within one wall-clock second.
    pub peak_requests_per_second: u64,
    /// `[unixSecond, count]` for every second with requests in the last 600 seconds, oldest first.
    pub requests_per_second: Vec<(i64, u64)>,
}

/// What the simulations started, for the statistics.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Started {
    pub(crate) jobs: u64,
    pub(crate) trigger_fires: u64,
    pub(crate) scenario_runs: u64,
}

/// The live counters.
#[derive(Default)]
pub(crate) struct StatsState {
    requests_total: u64,
    by_route: BTreeMap<String, u64>,
    by_status: BTreeMap<String, u64>,
    bytes_total: u64,
    bytes_by_route: BTreeMap<String, u64>,
    per_second: VecDeque<(i64, u64)>,
    peak: u64,
}

impl StatsState {
    /// Counts a request when it arrives.
    pub(crate) fn request(&mut self, route: &str, unix_second: i64) {
        self.requests_total += 1;
        *self.by_route.entry(route.to_owned()).or_default() += 1;
        match self.per_second.back_mut() {
            Some((s, n)) if *s == unix_second => *n += 1,
            // A late request from a second already closed counts in the current one.
            Some((s, n)) if *s > unix_second => *n += 1,
            _ => self.per_second.push_back((unix_second, 1)),
        }
        if let Some((_, n)) = self.per_second.back() {
            self.peak = self.peak.max(*n);
        }
        self.trim(unix_second);
    }

    fn trim(&mut self, now: i64) {
        let oldest = now - WINDOW_SECONDS as i64;
        while self.per_second.front().is_some_and(|(s, _)| *s <= oldest) {
            self.per_second.pop_front();
        }
    }

    /// Counts a response status.
    pub(crate) fn response(&mut self, status: u16) {
        *self.by_status.entry(status.to_string()).or_default() += 1;
    }

    /// Counts the bytes of a response body.
    pub(crate) fn response_bytes(&mut self, route: &str, bytes: u64) {
        self.bytes_total += bytes;
        *self.bytes_by_route.entry(route.to_owned()).or_default() += bytes;
    }

    pub(crate) fn snapshot(&mut self, faults: FaultCounters, started: Started, unix_second: i64) -> Stats {
        self.trim(unix_second);
        Stats {
            requests_total: self.requests_total,
            requests_by_route: self.by_route.clone(),
            responses_by_status: self.by_status.clone(),
            response_bytes_total: self.bytes_total,
            response_bytes_by_route: self.bytes_by_route.clone(),
            faults_injected: faults,
            jobs_started: started.jobs,
            trigger_fires: started.trigger_fires,
            scenario_runs_started: started.scenario_runs,
            peak_requests_per_second: self.peak,
            requests_per_second: self.per_second.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_window_and_peak() {
        let mut s = StatsState::default();
        for _ in 0..3 {
            s.request("GET /projects/", 100);
        }
        s.request("GET /projects/", 101);
        s.request("GET /projects/", 800);
        let snap = s.snapshot(FaultCounters::default(), Started::default(), 800);
        assert_eq!(snap.peak_requests_per_second, 3);
        assert_eq!(snap.requests_per_second, vec![(800, 1)]);
        assert_eq!(snap.requests_total, 5);
        assert_eq!(snap.requests_by_route["GET /projects/"], 5);
        s.response_bytes("GET /projects/", 120);
        s.response_bytes("GET /projects/", 30);
        let snap = s.snapshot(FaultCounters::default(), Started::default(), 800);
        assert_eq!(snap.response_bytes_total, 150);
        assert_eq!(snap.response_bytes_by_route["GET /projects/"], 150);
    }
}
