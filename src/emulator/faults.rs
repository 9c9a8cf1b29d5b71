//! Faults injected into DSS API calls: latency, 5xx answers, 429 with `Retry-After`, connection
//! resets, job starts and scenario runs whose response is lost, and a full outage. They never apply to the
//! admin API. Random draws come from one seeded generator, so a run with a given seed and request
//! order injects the same faults.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// The set of faults to inject. The same JSON shape is used in the config's `faults:` section
/// and by `GET/PUT /__emulator/faults`. All rates are probabilities between 0 and 1.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Seed of the random generator (default 0). Setting faults re-seeds it.
    #[serde(default)]
    pub seed: u64,
    /// Latency added to every matching call, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// A random extra latency between 0 and this many milliseconds.
    #[serde(default)]
    pub latency_jitter_ms: u64,
    /// Share of calls answered with `errorStatus` instead of being served.
    #[serde(default)]
    pub error_rate: f64,
    /// The status of injected errors (default 500). 500 carries a DSS JSON error body; 502, 503
    /// and 504 carry an HTML page, as a gateway in front of DSS would send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// Share of calls answered with 429 Too Many Requests.
    #[serde(default)]
    pub rate_limit_rate: f64,
    /// The `Retry-After` of injected 429s, in seconds (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Share of calls whose connection is closed without any response.
    #[serde(default)]
    pub reset_rate: f64,
    /// The next N job starts create the job but the caller never receives the response.
    #[serde(default)]
    pub drop_start_responses: u64,
    /// Share of job starts that create the job but lose the response.
    #[serde(default)]
    pub drop_start_response_rate: f64,
    /// How a lost start response looks to the caller: `reset` (default), `502` or `504`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_start_response_mode: Option<DropMode>,
    /// The next N scenario runs (`POST .../scenarios/{id}/run`) fire the trigger but the caller never
    /// receives the trigger fire.
    #[serde(default)]
    pub drop_run_responses: u64,
    /// Share of scenario runs that fire the trigger but lose the response.
    #[serde(default)]
    pub drop_run_response_rate: f64,
    /// How a lost run response looks to the caller: `reset` (default), `502` or `504`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_run_response_mode: Option<DropMode>,
    /// When true every DSS call fails (see `outageMode`).
    #[serde(default)]
    pub outage: bool,
    /// How calls fail during an outage: `503` (default, HTML gateway page) or `reset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_mode: Option<DropMode>,
    /// Limits latency, errors, 429s and resets to these routes (`"GET /projects/{pk}/jobs/{id}/"`,
    /// the keys of `requestsByRoute` in the stats). Empty means every DSS route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// How a call fails when its response is dropped.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum DropMode {
    /// Close the connection without a response.
    #[serde(rename = "reset")]
    Reset,
    /// 502 Bad Gateway with an HTML body.
    #[serde(rename = "502")]
    BadGateway,
    /// 503 Service Unavailable with an HTML body.
    #[serde(rename = "503")]
    Unavailable,
    /// 504 Gateway Timeout with an HTML body.
    #[serde(rename = "504")]
    GatewayTimeout,
}

impl Faults {
    /// Checks the rates and statuses, so a bad fault set is refused as a whole.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("errorRate", self.error_rate),
            ("rateLimitRate", self.rate_limit_rate),
            ("resetRate", self.reset_rate),
            ("dropStartResponseRate", self.drop_start_response_rate),
            ("dropRunResponseRate", self.drop_run_response_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("faults.{name} must be between 0 and 1, got {rate}"));
            }
        }
        if let Some(status) = self.error_status
            && !(500..=599).contains(&status)
        {
            return Err(format!("faults.errorStatus must be a 5xx status, got {status}"));
        }
        Ok(())
    }
}

/// How many faults of each kind were injected (part of the stats).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FaultCounters {
    /// Calls that were delayed.
    pub latency: u64,
    /// Injected 5xx answers.
    pub error5xx: u64,
    /// Injected 429 answers.
    pub rate_limited: u64,
    /// Connections closed without a response (outage resets excluded).
    pub reset: u64,
    /// Job starts whose response was dropped (the job exists).
    pub dropped_start_responses: u64,
    /// Scenario runs whose response was dropped (the trigger fired).
    #[serde(default)]
    pub dropped_run_responses: u64,
    /// Calls failed by the outage switch.
    pub outage: u64,
}

/// What the fault layer decided for one call, before it reaches its handler.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fail with this mode because of the outage switch.
    Outage(DropMode),
    /// Close the connection.
    Reset,
    /// Answer 429 with this `Retry-After`.
    RateLimited(u64),
    /// Answer with this 5xx status.
    Error(u16),
    /// Serve the call.
    Pass,
}

/// A call whose effect happens even when its response is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// `POST /projects/{pk}/jobs/`: the job exists.
    JobStart,
    /// `POST .../scenarios/{id}/run`: the trigger fired.
    ScenarioRun,
}

/// The live fault set, its random generator and its counters.
pub(crate) struct FaultState {
    faults: Faults,
    rng: StdRng,
    /// Dropped-start budget left from `dropStartResponses`.
    drops_left: u64,
    /// Dropped-run budget left from `dropRunResponses`.
    run_drops_left: u64,
    pub(crate) counters: FaultCounters,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> FaultState {
        FaultState {
            rng: StdRng::seed_from_u64(faults.seed),
            drops_left: faults.drop_start_responses,
            run_drops_left: faults.drop_run_responses,
            faults,
            counters: FaultCounters::default(),
        }
    }

    /// Replaces the fault set, re-seeding the generator; the counters are kept.
    pub(crate) fn set(&mut self, faults: Faults) {
        self.rng = StdRng::seed_from_u64(faults.seed);
        self.drops_left = faults.drop_start_responses;
        self.run_drops_left = faults.drop_run_responses;
        self.faults = faults;
    }

    /// The fault set as it stands, with the remaining dropped-start and dropped-run budgets.
    pub(crate) fn current(&self) -> Faults {
        Faults {
            drop_start_responses: self.drops_left,
            drop_run_responses: self.run_drops_left,
            ..self.faults.clone()
        }
    }

    fn applies_to(&self, route: &str) -> bool {
        self.faults.routes.is_empty() || self.faults.routes.iter().any(|r| r == route)
    }

    fn roll(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random::<f64>() < rate
    }

    /// The latency to add to a call on `route`, in milliseconds.
    pub(crate) fn latency_ms(&mut self, route: &str) -> u64 {
        if self.faults.outage || !self.applies_to(route) {
            return 0;
        }
        let jitter = match self.faults.latency_jitter_ms {
            0 => 0,
            j => self.rng.random_range(0..=j),
        };
        let total = self.faults.latency_ms.saturating_add(jitter);
        if total > 0 {
            self.counters.latency += 1;
        }
        total
    }

    /// Decides whether a call on `route` fails before reaching its handler.
    pub(crate) fn verdict(&mut self, route: &str) -> Verdict {
        if self.faults.outage {
            self.counters.outage += 1;
            return Verdict::Outage(self.faults.outage_mode.unwrap_or(DropMode::Unavailable));
        }
        if !self.applies_to(route) {
            return Verdict::Pass;
        }
        if self.roll(self.faults.reset_rate) {
            self.counters.reset += 1;
            return Verdict::Reset;
        }
        if self.roll(self.faults.rate_limit_rate) {
            self.counters.rate_limited += 1;
            return Verdict::RateLimited(self.faults.retry_after_seconds.unwrap_or(1));
        }
        if self.roll(self.faults.error_rate) {
            self.counters.error5xx += 1;
            return Verdict::Error(self.faults.error_status.unwrap_or(500));
        }
        Verdict::Pass
    }

    /// Decides, after the call took effect, whether its response is lost, and how.
    pub(crate) fn drop_response(&mut self, call: Lost) -> Option<DropMode> {
        let (budget, rate, mode) = match call {
            Lost::JobStart => (
                &mut self.drops_left,
                self.faults.drop_start_response_rate,
                self.faults.drop_start_response_mode,
            ),
            Lost::ScenarioRun => (
                &mut self.run_drops_left,
                self.faults.drop_run_response_rate,
                self.faults.drop_run_response_mode,
            ),
        };
        let drop = if *budget > 0 {
            *budget -= 1;
            true
        } else {
            self.roll(rate)
        };
        if !drop {
            return None;
        }
        match call {
            Lost::JobStart => self.counters.dropped_start_responses += 1,
            Lost::ScenarioRun => self.counters.dropped_run_responses += 1,
        }
        Some(mode.unwrap_or(DropMode::Reset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_injects_the_same_faults() {
        let faults = Faults {
            seed: 7,
            error_rate: 0.3,
            reset_rate: 0.2,
            ..Faults::default()
        };
        let run = |f: &Faults| {
            let mut state = FaultState::new(f.clone());
            (0..200)
                .map(|_| state.verdict("GET /projects/"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&faults), run(&faults));
        let errors = run(&faults)
            .iter()
            .filter(|v| matches!(v, Verdict::Error(500)))
            .count();
        assert!(errors > 20 && errors < 80, "{errors}");
    }

    #[test]
    fn drop_budget_is_consumed_then_stops() {
        let mut state = FaultState::new(Faults {
            drop_start_responses: 2,
            ..Faults::default()
        });
        assert_eq!(state.drop_response(Lost::JobStart), Some(DropMode::Reset));
        assert_eq!(state.drop_response(Lost::JobStart), Some(DropMode::Reset));
        assert_eq!(state.drop_response(Lost::JobStart), None);
        assert_eq!(state.counters.dropped_start_responses, 2);
        assert_eq!(state.drop_response(Lost::ScenarioRun), None);
    }

    #[test]
    fn run_drops_have_their_own_budget_and_mode() {
        let mut state = FaultState::new(Faults {
            drop_run_responses: 1,
            drop_run_response_mode: Some(DropMode::GatewayTimeout),
            ..Faults::default()
        });
        assert_eq!(state.drop_response(Lost::JobStart), None);
        assert_eq!(
            state.drop_response(Lost::ScenarioRun),
            Some(DropMode::GatewayTimeout)
        );
        assert_eq!(state.drop_response(Lost::ScenarioRun), None);
        assert_eq!(state.current().drop_run_responses, 0);
        assert_eq!(
            (
                state.counters.dropped_start_responses,
                state.counters.dropped_run_responses
            ),
            (0, 1)
        );
    }

    #[test]
    fn route_filter_limits_faults() {
        let faults = Faults {
            error_rate: 1.0,
            routes: vec!["GET /a".into()],
            ..Faults::default()
        };
        let mut state = FaultState::new(faults);
        assert_eq!(state.verdict("GET /b"), Verdict::Pass);
        assert_eq!(state.verdict("GET /a"), Verdict::Error(500));
    }

    #[test]
    fn invalid_rates_are_refused() {
        assert!(
            Faults {
                error_rate: 1.5,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Faults {
                error_status: Some(404),
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
    }
}
