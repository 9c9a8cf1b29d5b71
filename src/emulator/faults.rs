//! Faults injected into DSS API calls: latency, 5xx answers, a gateway's bare 404 or 5xx pages,
//! 429 with `Retry-After`, connection resets, job starts and scenario runs whose response is lost, a
//! hung server and a full outage. They never apply to the admin API. Random draws come from one
//! seeded generator, so a run with a given seed and request order injects the same faults.

use std::time::{Duration, Instant};

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
    /// A gateway in front of DSS answering instead of it (nginx while it reloads): a bare status
    /// with an HTML page, never a DSS JSON error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayFault>,
    /// While true, every DSS call is accepted and left without any answer (a hung DSS): it is held
    /// until the hang is lifted (then served) or the emulator stops.
    #[serde(default)]
    pub hang: bool,
}

/// Calls answered by a gateway instead of DSS, for a window of time after the fault is set and/or
/// at a rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayFault {
    /// The status of the gateway's answer: 404 (default) or a 5xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For this many milliseconds after the fault set is installed, every matching call gets the
    /// gateway's answer. Read back, it is the time left.
    #[serde(default)]
    pub window_ms: u64,
    /// Besides the window, the share of matching calls that get the gateway's answer.
    #[serde(default)]
    pub rate: f64,
    /// The routes it applies to (stats keys, as `routes`); empty means every DSS route.
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
            return Err(format!(
                "faults.errorStatus must be a 5xx status, got {status} (a gateway's bare 404 is faults.gateway)"
            ));
        }
        if let Some(g) = &self.gateway {
            if !(0.0..=1.0).contains(&g.rate) {
                return Err(format!(
                    "faults.gateway.rate must be between 0 and 1, got {}",
                    g.rate
                ));
            }
            if let Some(status) = g.status
                && status != 404
                && !(500..=599).contains(&status)
            {
                return Err(format!(
                    "faults.gateway.status must be 404 or a 5xx status, got {status}"
                ));
            }
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
    /// Calls answered by the gateway fault.
    #[serde(default)]
    pub gateway: u64,
    /// Calls held by the hang switch.
    #[serde(default)]
    pub hung: u64,
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
    /// Answer with a gateway's HTML page and this status.
    Gateway(u16),
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
    /// When the gateway's window closes.
    gateway_until: Option<Instant>,
    pub(crate) counters: FaultCounters,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> FaultState {
        let mut state = FaultState {
            rng: StdRng::seed_from_u64(0),
            drops_left: 0,
            run_drops_left: 0,
            gateway_until: None,
            faults: Faults::default(),
            counters: FaultCounters::default(),
        };
        state.set_at(faults, Instant::now());
        state
    }

    /// Replaces the fault set, re-seeding the generator; the counters are kept.
    pub(crate) fn set(&mut self, faults: Faults) {
        self.set_at(faults, Instant::now());
    }

    fn set_at(&mut self, faults: Faults, now: Instant) {
        self.rng = StdRng::seed_from_u64(faults.seed);
        self.drops_left = faults.drop_start_responses;
        self.run_drops_left = faults.drop_run_responses;
        self.gateway_until = faults
            .gateway
            .as_ref()
            .filter(|g| g.window_ms > 0)
            .map(|g| now + Duration::from_millis(g.window_ms));
        self.faults = faults;
    }

    /// The fault set as it stands, with the remaining dropped-start and dropped-run budgets and
    /// what is left of the gateway's window.
    pub(crate) fn current(&self) -> Faults {
        self.current_at(Instant::now())
    }

    fn current_at(&self, now: Instant) -> Faults {
        let gateway = self.faults.gateway.clone().map(|g| GatewayFault {
            window_ms: self.gateway_until.map_or(0, |until| {
                u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }),
            ..g
        });
        Faults {
            drop_start_responses: self.drops_left,
            drop_run_responses: self.run_drops_left,
            gateway,
            ..self.faults.clone()
        }
    }

    /// Whether DSS calls are held without an answer; counts the call when it is.
    pub(crate) fn hang(&mut self) -> bool {
        if self.faults.hang && !self.faults.outage {
            self.counters.hung += 1;
            return true;
        }
        false
    }

    /// Whether the hang switch is on (a held call waits until it is off).
    pub(crate) fn hanging(&self) -> bool {
        self.faults.hang && !self.faults.outage
    }

    fn applies_to(&self, route: &str) -> bool {
        self.faults.routes.is_empty() || self.faults.routes.iter().any(|r| r == route)
    }

    /// The status of the gateway's answer to a call on `route` at `now`, if the gateway answers.
    fn gateway(&mut self, route: &str, now: Instant) -> Option<u16> {
        let g = self.faults.gateway.as_ref()?;
        if !(g.routes.is_empty() || g.routes.iter().any(|r| r == route)) {
            return None;
        }
        let (status, rate) = (g.status.unwrap_or(404), g.rate);
        let in_window = self.gateway_until.is_some_and(|until| now < until);
        (in_window || self.roll(rate)).then_some(status)
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
        self.verdict_at(route, Instant::now())
    }

    fn verdict_at(&mut self, route: &str, now: Instant) -> Verdict {
        if self.faults.outage {
            self.counters.outage += 1;
            return Verdict::Outage(self.faults.outage_mode.unwrap_or(DropMode::Unavailable));
        }
        if let Some(status) = self.gateway(route, now) {
            self.counters.gateway += 1;
            return Verdict::Gateway(status);
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
    fn the_gateway_answers_its_routes_for_its_window_then_at_its_rate() {
        let t0 = Instant::now();
        let mut state = FaultState::new(Faults::default());
        state.set_at(
            Faults {
                gateway: Some(GatewayFault {
                    window_ms: 2000,
                    routes: vec!["GET /a".into()],
                    ..GatewayFault::default()
                }),
                ..Faults::default()
            },
            t0,
        );
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(state.verdict_at("GET /a", soon), Verdict::Gateway(404));
        assert_eq!(state.verdict_at("GET /b", soon), Verdict::Pass);
        assert_eq!(
            state.current_at(soon).gateway.map(|g| g.window_ms),
            Some(1500),
            "the window left is read back"
        );
        let later = t0 + Duration::from_millis(2000);
        assert_eq!(state.verdict_at("GET /a", later), Verdict::Pass);
        assert_eq!(state.current_at(later).gateway.map(|g| g.window_ms), Some(0));
        assert_eq!(state.counters.gateway, 1);
        // Without a window, at a rate, with another status.
        state.set_at(
            Faults {
                seed: 3,
                gateway: Some(GatewayFault {
                    status: Some(502),
                    rate: 0.5,
                    ..GatewayFault::default()
                }),
                ..Faults::default()
            },
            t0,
        );
        let answers: Vec<Verdict> = (0..200).map(|_| state.verdict_at("GET /b", t0)).collect();
        let gateway = answers.iter().filter(|v| **v == Verdict::Gateway(502)).count();
        assert!((60..=140).contains(&gateway), "{gateway}");
        assert_eq!(
            gateway + answers.iter().filter(|v| **v == Verdict::Pass).count(),
            200
        );
    }

    #[test]
    fn the_hang_switch_holds_every_route_until_lifted() {
        let mut state = FaultState::new(Faults {
            hang: true,
            ..Faults::default()
        });
        assert!(state.hang() && state.hang());
        assert_eq!(state.counters.hung, 2);
        state.set(Faults::default());
        assert!(!state.hang() && !state.hanging());
        assert_eq!(state.counters.hung, 2);
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
        let gateway = |status, rate| Faults {
            gateway: Some(GatewayFault {
                status,
                rate,
                ..GatewayFault::default()
            }),
            ..Faults::default()
        };
        assert!(gateway(Some(404), 0.5).validate().is_ok());
        assert!(gateway(Some(502), 0.0).validate().is_ok());
        assert!(gateway(None, 1.0).validate().is_ok());
        assert!(gateway(Some(200), 0.0).validate().is_err());
        assert!(gateway(Some(404), 1.5).validate().is_err());
    }
}
