//! Errors of the DSS client and their classification.
//!
//! DSS reports errors as a JSON body `{"errorType","message","detailedMessage"}` with an HTTP status
//! (`dss-api.md` 1.6); gateways in front of it send HTML. [`Error::Api`] keeps the status, the parsed
//! fields and a bounded excerpt of the raw body. Classification ([`Error::class`]) trusts only what DSS
//! itself said: an answer without DSS's JSON error body (no `errorType`) comes from something in front
//! of DSS (a reverse proxy reloading, an ingress, an auth proxy) and says nothing about the job or the
//! key; it is [`Category::GatewayError`], transient. Real DSS may answer 500 for an object that does
//! not exist, so "not found" is read from the `errorType` (and message), not from the status alone.

use std::{fmt, time::Duration};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{model::JobState, redact::redact};
use crate::text::truncate;

/// The DSS calls the client makes. A closed set: used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `GET /projects/`
    ListProjects,
    /// `GET /auth/info`
    AuthInfo,
    /// `GET /projects/{pk}/jobs/`
    ListJobs,
    /// `GET /projects/{pk}/jobs/running/`
    ListRunningJobs,
    /// `GET /jobs/running/`
    ListAllRunningJobs,
    /// `POST /projects/{pk}/jobs/`
    StartJob,
    /// `GET /projects/{pk}/jobs/{id}/`
    GetStatus,
    /// `POST /projects/{pk}/jobs/{id}/abort`
    Abort,
    /// `GET /projects/{pk}/jobs/{id}/log`
    GetLog,
    /// `GET /projects/{pk}/scenarios/`
    ListScenarios,
    /// `POST /projects/{pk}/scenarios/{id}/run`
    RunScenario,
    /// `GET /projects/{pk}/scenarios/trigger/{id}/{triggerId}`
    GetTriggerFire,
    /// `GET /projects/{pk}/scenarios/{id}/get-run-for-trigger`
    GetRunForTrigger,
    /// `GET /projects/{pk}/scenarios/{id}/get-last-runs`
    GetLastScenarioRuns,
    /// `GET /projects/{pk}/scenarios/{id}/get-runs-by-date`
    GetScenarioRunsByDate,
    /// `GET /projects/{pk}/scenarios/{id}/{runId}/`
    GetScenarioRun,
    /// `GET /projects/{pk}/scenarios/{id}/light`
    GetScenarioStatus,
    /// `POST /projects/{pk}/scenarios/{id}/abort`
    AbortScenario,
    /// `GET /projects/{pk}/scenarios/{id}/{runId}/log`
    GetScenarioRunLog,
}

impl Operation {
    /// Every operation, for metric pre-registration and tests.
    pub const ALL: [Operation; 19] = [
        Operation::ListProjects,
        Operation::AuthInfo,
        Operation::ListJobs,
        Operation::ListRunningJobs,
        Operation::ListAllRunningJobs,
        Operation::StartJob,
        Operation::GetStatus,
        Operation::Abort,
        Operation::GetLog,
        Operation::ListScenarios,
        Operation::RunScenario,
        Operation::GetTriggerFire,
        Operation::GetRunForTrigger,
        Operation::GetLastScenarioRuns,
        Operation::GetScenarioRunsByDate,
        Operation::GetScenarioRun,
        Operation::GetScenarioStatus,
        Operation::AbortScenario,
        Operation::GetScenarioRunLog,
    ];

    /// The snake_case name, e.g. `get_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ListProjects => "list_projects",
            Operation::AuthInfo => "auth_info",
            Operation::ListJobs => "list_jobs",
            Operation::ListRunningJobs => "list_running_jobs",
            Operation::ListAllRunningJobs => "list_all_running_jobs",
            Operation::StartJob => "start_job",
            Operation::GetStatus => "get_status",
            Operation::Abort => "abort",
            Operation::GetLog => "get_log",
            Operation::ListScenarios => "list_scenarios",
            Operation::RunScenario => "run_scenario",
            Operation::GetTriggerFire => "get_trigger_fire",
            Operation::GetRunForTrigger => "get_run_for_trigger",
            Operation::GetLastScenarioRuns => "get_last_scenario_runs",
            Operation::GetScenarioRunsByDate => "get_scenario_runs_by_date",
            Operation::GetScenarioRun => "get_scenario_run",
            Operation::GetScenarioStatus => "get_scenario_status",
            Operation::AbortScenario => "abort_scenario",
            Operation::GetScenarioRunLog => "get_scenario_run_log",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of a DSS call. `Display` never contains the API key: server texts are redacted before they
/// are stored, and URLs never carry credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// DSS (or a gateway in front of it) answered with an error status.
    #[error("DSS {operation}: {}", api_summary(*.status, .error_type.as_deref(), .message.as_deref(), .detailed_message.as_deref(), .body_excerpt))]
    Api {
        /// The call.
        operation: Operation,
        /// The HTTP status code.
        status: u16,
        /// `errorType` of a DSS JSON error body, e.g. `com.dataiku.dip.exceptions.UnauthorizedException`.
        error_type: Option<String>,
        /// `message` of a DSS JSON error body.
        message: Option<String>,
        /// `detailedMessage` of a DSS JSON error body (preferred by the Python client when present).
        detailed_message: Option<String>,
        /// The start of the raw body (whitespace collapsed, bounded), for bodies that are not DSS JSON,
        /// such as a gateway's HTML page. Empty for an empty body.
        body_excerpt: String,
        /// How long the server asked us to wait (`Retry-After`, seconds or HTTP date).
        retry_after: Option<Duration>,
    },
    /// The call did not complete within the request timeout.
    #[error("DSS {operation}: request timed out")]
    Timeout {
        /// The call.
        operation: Operation,
    },
    /// The request could not be sent or the response could not be read (DNS, connection refused, TLS,
    /// reset). The source's text names the URL, which never carries credentials.
    #[error("DSS {operation}: cannot reach DSS")]
    Transport {
        /// The call.
        operation: Operation,
        /// The underlying HTTP error.
        #[source]
        source: reqwest::Error,
    },
    /// DSS answered with a success status but a body the client cannot use.
    #[error("DSS {operation}: unexpected response: {detail}")]
    Decode {
        /// The call.
        operation: Operation,
        /// What was wrong with it.
        detail: String,
    },
    /// The client configuration is unusable (bad URL, empty key, bad limits, unreadable CA).
    #[error("invalid DSS client configuration: {0}")]
    InvalidConfig(String),
    /// An argument cannot be sent to DSS (empty project key or job id, a job definition without
    /// outputs). No request was made.
    #[error("DSS {operation}: invalid request: {detail}")]
    InvalidArgument {
        /// The call.
        operation: Operation,
        /// What is wrong.
        detail: String,
    },
    /// A [`JobWaiter`](super::JobWaiter) gave up before the job reached a terminal state.
    #[error("job {job_id} did not finish in time (last state: {})", .last_state.as_ref().map_or("unknown", JobState::as_str))]
    WaitTimeout {
        /// The job.
        job_id: String,
        /// The last state polled, if any poll succeeded.
        last_state: Option<JobState>,
    },
    /// The connection's request budget (its rate, its in-flight cap or a 429 pause) would have made
    /// the call wait longer than the handle allows (see
    /// [`DssClient::with_max_budget_wait`](super::DssClient::with_max_budget_wait)). Nothing was sent.
    #[error("DSS {operation}: the connection's request budget is exhausted; next slot in {:.1}s", .retry_after.as_secs_f64())]
    Throttled {
        /// The call.
        operation: Operation,
        /// When the budget is expected to have room again (a lower bound for a busy in-flight cap).
        retry_after: Duration,
    },
    /// DSS's answer is larger than one of the client's caps (body bytes, bytes of one listed item,
    /// listed items). The same call would fail the same way until the answer shrinks.
    #[error("DSS {operation}: the answer exceeds the client's cap: {limit}")]
    TooLarge {
        /// The call.
        operation: Operation,
        /// Which cap, with its value, e.g. `more than 10000 listed jobs`.
        limit: String,
    },
}

/// The class of a DSS error, as a metric label and a condition or event reason. A closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// DSS cannot be reached: DNS, connection refused or reset.
    Unreachable,
    /// The TLS handshake failed (unknown issuer, bad certificate, protocol).
    Tls,
    /// The call (or a [`JobWaiter`](super::JobWaiter)) ran out of time, or DSS answered 408.
    Timeout,
    /// DSS (or a gateway) answered 429 Too Many Requests.
    RateLimited,
    /// The connection's own request budget refused to wait that long ([`Error::Throttled`]).
    Throttled,
    /// An error status without DSS's JSON error body: a gateway page (HTML, empty, or foreign JSON),
    /// whatever the status (404, 401/403, 5xx). Transient: it says nothing about the object or the key.
    GatewayError,
    /// DSS's own JSON error with a 5xx status that is not a "not found".
    ServerError,
    /// DSS's own JSON error with 401 or 403: DSS refused the key or its privileges.
    Unauthorized,
    /// DSS's own JSON error saying the project or job does not exist ([`Error::is_not_found`]).
    NotFound,
    /// DSS's own JSON error with another 4xx status, or a request refused before sending.
    Rejected,
    /// A success status with an unusable body, or an answer over a client cap.
    BadResponse,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 11] = [
        Category::Unreachable,
        Category::Tls,
        Category::Timeout,
        Category::RateLimited,
        Category::Throttled,
        Category::GatewayError,
        Category::ServerError,
        Category::Unauthorized,
        Category::NotFound,
        Category::Rejected,
        Category::BadResponse,
    ];

    /// The PascalCase name, e.g. `DssGatewayError`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Unreachable => "DssUnreachable",
            Category::Tls => "DssTlsError",
            Category::Timeout => "DssTimeout",
            Category::RateLimited => "DssRateLimited",
            Category::Throttled => "DssThrottled",
            Category::GatewayError => "DssGatewayError",
            Category::ServerError => "DssServerError",
            Category::Unauthorized => "DssUnauthorized",
            Category::NotFound => "DssNotFound",
            Category::Rejected => "DssRejected",
            Category::BadResponse => "DssBadResponse",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn api_summary(
    status: u16,
    error_type: Option<&str>,
    message: Option<&str>,
    detailed_message: Option<&str>,
    body_excerpt: &str,
) -> String {
    let mut out = format!("HTTP {status}");
    if let Some(error_type) = error_type {
        out.push_str(": ");
        out.push_str(error_type);
    }
    // Same preference as the Python client: detailedMessage, then message, then the raw body.
    let text = detailed_message.or(message).filter(|t| !t.is_empty());
    match text {
        Some(text) => {
            out.push_str(": ");
            out.push_str(&truncate(text, DISPLAY_MAX_BYTES));
        }
        None if !body_excerpt.is_empty() && error_type.is_none() => {
            out.push_str(": ");
            out.push_str(&truncate(body_excerpt, DISPLAY_MAX_BYTES));
        }
        None => {}
    }
    out
}

const DISPLAY_MAX_BYTES: usize = 300;

impl Error {
    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The call that failed, when the error belongs to one.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Error::Api { operation, .. }
            | Error::Timeout { operation }
            | Error::Transport { operation, .. }
            | Error::Decode { operation, .. }
            | Error::InvalidArgument { operation, .. }
            | Error::Throttled { operation, .. }
            | Error::TooLarge { operation, .. } => Some(*operation),
            Error::InvalidConfig(_) | Error::WaitTimeout { .. } => None,
        }
    }

    /// Whether the answer carries DSS's own JSON error body (a JSON object with an `errorType`).
    /// Everything else with an error status (HTML, an empty body, a proxy's own JSON) comes from
    /// something in front of DSS.
    pub fn is_dss_error(&self) -> bool {
        matches!(
            self,
            Error::Api {
                error_type: Some(_),
                ..
            }
        )
    }

    /// Whether this is an error status without DSS's JSON error body (429 aside, which is rate
    /// limiting whoever sends it): a gateway page, transient DSS trouble. A bare 404 or an HTML 404
    /// is one: it never means that the job is gone.
    pub fn is_gateway_error(&self) -> bool {
        matches!(self, Error::Api { status, .. } if *status != 429 && !self.is_dss_error())
    }

    /// The class of the error. Only DSS's own JSON error classifies an object or a key; see
    /// [`Category`] for each class.
    pub fn class(&self) -> Category {
        match self {
            Error::Api { status, .. } => {
                if *status == 429 {
                    Category::RateLimited
                } else if !self.is_dss_error() {
                    Category::GatewayError
                } else if self.is_unauthorized() {
                    Category::Unauthorized
                } else if self.is_not_found() {
                    Category::NotFound
                } else if *status == 408 {
                    Category::Timeout
                } else if *status >= 500 {
                    Category::ServerError
                } else if *status >= 400 {
                    Category::Rejected
                } else {
                    Category::BadResponse
                }
            }
            Error::Timeout { .. } | Error::WaitTimeout { .. } => Category::Timeout,
            Error::Transport { source, .. } if is_tls(source) => Category::Tls,
            Error::Transport { .. } => Category::Unreachable,
            Error::Throttled { .. } => Category::Throttled,
            Error::Decode { .. } | Error::TooLarge { .. } => Category::BadResponse,
            Error::InvalidConfig(_) | Error::InvalidArgument { .. } => Category::Rejected,
        }
    }

    /// Whether the same call may succeed later: 429, budget refusals, gateway pages (any status),
    /// timeouts, transport errors and DSS's own 5xx errors (except 501 and "not found"). The client
    /// itself never retries; this is advice for callers, who must never retry a job start blindly (see
    /// [`Error::is_rejection`]).
    pub fn is_retryable(&self) -> bool {
        match self.class() {
            // A TLS failure counts as transport trouble, as it always did: a fixed CA or certificate
            // is picked up by the next call.
            Category::RateLimited
            | Category::Throttled
            | Category::GatewayError
            | Category::Unreachable
            | Category::Tls => true,
            // A waiter that gave up is final for that wait; a timed-out call is not.
            Category::Timeout => !matches!(self, Error::WaitTimeout { .. }),
            Category::ServerError => self.status() != Some(501),
            Category::Unauthorized | Category::NotFound | Category::Rejected | Category::BadResponse => false,
        }
    }

    /// Whether DSS itself says that the project or job does not exist: its JSON error (an
    /// `errorType` is present) with status 404, or the 500 real DSS may use, whose `errorType` names
    /// a missing object (`...NotFoundException`, `...UnknownObjectException`, `...NoSuch...`) or, for a
    /// generic `errorType`, whose message says so ("does not exist", "not found", ...). A missing
    /// *file* inside DSS (`java.io.FileNotFoundException`, `NoSuchFileException`) is DSS trouble, not
    /// a missing object. A bare 404, an HTML 404 or any other gateway page is never "not found".
    ///
    /// Even this is an answer about one call: callers that act on it irreversibly (failing a build,
    /// releasing a finalizer) should confirm it once more after a delay.
    pub fn is_not_found(&self) -> bool {
        let Error::Api {
            status: 404 | 500,
            error_type: Some(error_type),
            message,
            detailed_message,
            ..
        } = self
        else {
            return false;
        };
        match object_error(error_type) {
            ObjectError::Missing => true,
            ObjectError::File => false,
            ObjectError::Other => [message, detailed_message]
                .into_iter()
                .flatten()
                .any(|m| says_not_found(m)),
        }
    }

    /// Whether DSS itself refused the credentials or their privileges: its JSON error with 401 or
    /// 403. A 401/403 page without DSS's JSON error body (an auth proxy, a WAF, an ingress in
    /// maintenance) is a [`Category::GatewayError`] instead: re-reading the API key cannot fix it,
    /// and blaming the key would send the user to the wrong place.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Error::Api {
                status: 401 | 403,
                error_type: Some(_),
                ..
            }
        )
    }

    /// Whether the call was refused so that the caller slows down, before anything was done: a 429
    /// (from DSS or a gateway), or the connection's own budget ([`Error::Throttled`], never sent).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Error::Api { status: 429, .. } | Error::Throttled { .. })
    }

    /// Whether DSS itself said the request is wrong, so sending it again cannot help: its own JSON
    /// error with a 4xx other than 401/403 (credentials), 408 (too late) and 429 (slow down), or a
    /// "not found" (an unknown project, at 404 or 500), or an argument refused before anything was
    /// sent. A gateway's page never is: for a job start it leaves open whether the job exists.
    pub fn is_rejection(&self) -> bool {
        match self {
            Error::Api { status, .. } if self.is_dss_error() => {
                self.is_not_found()
                    || ((400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429))
            }
            Error::InvalidArgument { .. } => true,
            _ => false,
        }
    }

    /// How long to wait before the next call: the server's `Retry-After` (at most 600 s), or the
    /// budget's estimate for [`Error::Throttled`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            Error::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The PascalCase name of [`Error::class`], for metric labels, event and condition reasons. A
    /// closed set: the names of [`Category::ALL`].
    pub fn category(&self) -> &'static str {
        self.class().as_str()
    }
}

/// Whether a transport error is a TLS failure: its cause chain holds a rustls error (the TLS stack
/// reports handshake failures as I/O errors that wrap one, sometimes twice).
fn is_tls(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if holds_rustls(e) {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether `e` is a rustls error or an I/O error wrapping one. `io::Error::source` skips the error
/// it wraps, so the wrapped one is looked at explicitly.
fn holds_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.downcast_ref::<rustls::Error>().is_some() {
        return true;
    }
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        Some(inner) => holds_rustls(inner),
        None => false,
    }
}

/// What an `errorType` says about the object of the call.
enum ObjectError {
    /// Names a missing object: a project, a job, an endpoint.
    Missing,
    /// About a file inside DSS: DSS trouble, never a missing object.
    File,
    /// Anything else: the message tells.
    Other,
}

fn object_error(error_type: &str) -> ObjectError {
    // The simple class name: `com.dataiku.dip.server.controllers.NotFoundException` -> `notfoundexception`.
    let name = error_type
        .rsplit(['.', '$'])
        .next()
        .unwrap_or(error_type)
        .to_ascii_lowercase();
    if name.contains("file") {
        ObjectError::File
    } else if ["notfound", "unknownobject", "nosuch", "doesnotexist"]
        .iter()
        .any(|m| name.contains(m))
    {
        ObjectError::Missing
    } else {
        ObjectError::Other
    }
}

fn says_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["not found", "doesn't exist", "does not exist", "no such"]
        .iter()
        .any(|p| m.contains(p))
}

/// How much of an error body is kept in [`Error::Api::body_excerpt`].
pub(crate) const BODY_EXCERPT_MAX_BYTES: usize = 1024;
/// How much of a text field of an error body is kept.
const FIELD_MAX_BYTES: usize = 4096;

/// The fields of an error response, parsed leniently: any body (JSON or not, valid UTF-8 or not) gives
/// a value, never a panic.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub error_type: Option<String>,
    pub message: Option<String>,
    pub detailed_message: Option<String>,
    pub body_excerpt: String,
}

impl ErrorBody {
    /// Parses `body`, removing every occurrence of `secret` (the API key in use) from the kept texts.
    pub(crate) fn parse(body: &[u8], secret: &str) -> Self {
        let text = String::from_utf8_lossy(body);
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        // Redact before cutting, so a cut never leaves part of a key behind.
        let body_excerpt = truncate(&redact(&collapsed, secret), BODY_EXCERPT_MAX_BYTES);
        let json = serde_json::from_slice::<serde_json::Value>(body).ok();
        let field = |name: &str| -> Option<String> {
            let value = json.as_ref()?.get(name)?;
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some(truncate(&redact(text.trim(), secret), FIELD_MAX_BYTES))
        };
        Self {
            error_type: field("errorType"),
            message: field("message"),
            detailed_message: field("detailedMessage"),
            body_excerpt,
        }
    }
}

/// The longest pause a `Retry-After` may impose, so a hostile or broken server cannot stop a client for
/// hours.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Parses a `Retry-After` value: delay seconds or an HTTP date (IMF-fixdate, RFC 850 or asctime),
/// relative to `now`. Dates in the past give zero; values are capped at [`MAX_RETRY_AFTER`].
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let date = parse_http_date(value)?;
    let delta = date.signed_duration_since(now).to_std().unwrap_or(Duration::ZERO);
    Some(delta.min(MAX_RETRY_AFTER))
}

/// An HTTP date (RFC 9110: IMF-fixdate, or the obsolete RFC 850 and asctime forms).
pub(crate) fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(value, fmt).ok())
                .map(|naive| naive.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, body: &str) -> Error {
        let parsed = ErrorBody::parse(body.as_bytes(), "the-key");
        Error::Api {
            operation: Operation::GetStatus,
            status,
            error_type: parsed.error_type,
            message: parsed.message,
            detailed_message: parsed.detailed_message,
            body_excerpt: parsed.body_excerpt,
            retry_after: None,
        }
    }

    #[test]
    fn operation_names_are_snake_case_and_distinct() {
        let names: std::collections::HashSet<_> = Operation::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names.len(), Operation::ALL.len());
        assert_eq!(Operation::ListAllRunningJobs.as_str(), "list_all_running_jobs");
        assert_eq!(Operation::GetLog.to_string(), "get_log");
    }

    #[test]
    fn dss_json_error_is_parsed_and_displayed_like_the_python_client() {
        let err = api(404, r#"{"errorType":"X","message":"m","detailedMessage":"d"}"#);
        assert_eq!(err.to_string(), "DSS get_status: HTTP 404: X: d");
        assert_eq!(err.status(), Some(404));
        assert!(err.is_dss_error());
    }

    #[test]
    fn display_prefers_detailed_message_then_message_then_the_raw_body() {
        let cases = [
            (
                500,
                r#"{"message":"boom without errorType"}"#,
                "DSS get_status: HTTP 500: boom without errorType",
            ),
            (500, "", "DSS get_status: HTTP 500"),
            (
                403,
                r#"{"errorType":"com.dataiku.dip.exceptions.ForbiddenException","message":"Invalid API key"}"#,
                "DSS get_status: HTTP 403: com.dataiku.dip.exceptions.ForbiddenException: Invalid API key",
            ),
            (
                502,
                "<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                "DSS get_status: HTTP 502: <html><body><h1>502 Bad Gateway</h1></body></html>",
            ),
        ];
        for (status, body, shown) in cases {
            let err = api(status, body);
            assert_eq!(err.to_string(), shown);
        }
        assert!(
            matches!(api(502, "<html>\n x </html>"), Error::Api { error_type: None, message: None, body_excerpt, .. }
            if body_excerpt == "<html> x </html>")
        );
    }

    const NOT_FOUND_TYPE: &str = "com.dataiku.dip.server.controllers.NotFoundException";
    const UNKNOWN_OBJECT: &str = "com.dataiku.dip.exceptions.UnknownObjectException";

    fn dss(error_type: &str, message: &str) -> String {
        serde_json::json!({"errorType": error_type, "message": message}).to_string()
    }

    /// (case, status, body, category, retryable)
    fn classification_cases() -> Vec<(&'static str, u16, String, Category, bool)> {
        use Category::*;
        let html404 = "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1></center><hr><center>nginx</center></body></html>";
        vec![
            (
                "DSS 404 naming a missing job",
                404,
                dss(NOT_FOUND_TYPE, "Job j does not exist"),
                NotFound,
                false,
            ),
            (
                "DSS 500 UnknownObject, as real DSS answers",
                500,
                dss(UNKNOWN_OBJECT, "Job j does not exist"),
                NotFound,
                false,
            ),
            (
                "DSS 500 generic errorType, message says missing",
                500,
                dss(
                    "com.dataiku.dip.exceptions.DKUException",
                    "Project FOO doesn't exist",
                ),
                NotFound,
                false,
            ),
            (
                "DSS 404 generic errorType and message",
                404,
                dss("X", "m"),
                Rejected,
                false,
            ),
            (
                "DSS 500 missing file inside DSS",
                500,
                dss(
                    "java.io.FileNotFoundException",
                    "/data/jobs/j/log (No such file or directory)",
                ),
                ServerError,
                true,
            ),
            (
                "DSS 500 NoSuchFile",
                500,
                dss("java.nio.file.NoSuchFileException", "no such file"),
                ServerError,
                true,
            ),
            (
                "DSS 500 without not-found words",
                500,
                dss("com.dataiku.dip.exceptions.DKUException", "boom"),
                ServerError,
                true,
            ),
            ("DSS 501", 501, dss("NotImplemented", "nope"), ServerError, false),
            (
                "DSS 503",
                503,
                dss("com.dataiku.dip.exceptions.DKUException", "starting"),
                ServerError,
                true,
            ),
            ("DSS 408", 408, dss("Timeout", "too slow"), Timeout, true),
            (
                "DSS 400 bad definition",
                400,
                dss("com.dataiku.dip.exceptions.BadRequestException", "no outputs"),
                Rejected,
                false,
            ),
            (
                "DSS 409 (not found words at 4xx other than 404)",
                409,
                dss("Conflict", "job does not exist yet"),
                Rejected,
                false,
            ),
            (
                "DSS 401",
                401,
                dss(
                    "com.dataiku.dip.exceptions.UnauthorizedException",
                    "Invalid API key",
                ),
                Unauthorized,
                false,
            ),
            (
                "DSS 403 whose message mentions a missing project",
                403,
                dss(
                    "com.dataiku.dip.exceptions.ForbiddenException",
                    "project does not exist",
                ),
                Unauthorized,
                false,
            ),
            ("bare 404", 404, String::new(), GatewayError, true),
            (
                "nginx HTML 404 while reloading",
                404,
                html404.to_owned(),
                GatewayError,
                true,
            ),
            (
                "HTML 404 mentioning a missing job",
                404,
                "<html>Job j does not exist</html>".to_owned(),
                GatewayError,
                true,
            ),
            (
                "foreign JSON 404 (no errorType)",
                404,
                r#"{"message":"no Route matched with those values"}"#.to_owned(),
                GatewayError,
                true,
            ),
            (
                "JSON 500 without errorType",
                500,
                r#"{"message":"boom without errorType"}"#.to_owned(),
                GatewayError,
                true,
            ),
            ("empty 500", 500, String::new(), GatewayError, true),
            (
                "HTML 502",
                502,
                "<html><body><h1>502 Bad Gateway</h1></body></html>\n".to_owned(),
                GatewayError,
                true,
            ),
            (
                "HTML 504",
                504,
                "<html>504 Gateway Time-out</html>".to_owned(),
                GatewayError,
                true,
            ),
            (
                "auth proxy HTML 401",
                401,
                "<html><h1>401 Authorization Required</h1></html>".to_owned(),
                GatewayError,
                true,
            ),
            (
                "WAF HTML 403",
                403,
                "<html><h1>403 Forbidden</h1></html>".to_owned(),
                GatewayError,
                true,
            ),
            ("bare 501", 501, String::new(), GatewayError, true),
            (
                "DSS 429",
                429,
                dss("com.dataiku.dip.exceptions.TooManyRequestsException", "slow down"),
                RateLimited,
                true,
            ),
            (
                "gateway 429",
                429,
                "<html>429 Too Many Requests</html>".to_owned(),
                RateLimited,
                true,
            ),
        ]
    }

    #[test]
    fn only_dss_own_json_error_classifies_the_object_or_the_key() {
        for (case, status, body, category, retryable) in classification_cases() {
            let err = api(status, &body);
            assert_eq!(err.class(), category, "{case}");
            assert_eq!(err.category(), category.as_str(), "{case}");
            assert_eq!(err.is_retryable(), retryable, "{case}");
            assert_eq!(err.is_not_found(), category == Category::NotFound, "{case}");
            assert_eq!(
                err.is_unauthorized(),
                category == Category::Unauthorized,
                "{case}"
            );
            assert_eq!(
                err.is_gateway_error(),
                category == Category::GatewayError,
                "{case}"
            );
        }
    }

    #[test]
    fn category_names_are_distinct_pascal_case() {
        let names: std::collections::HashSet<_> = Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Category::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("Dss") && !n.contains('_')));
        assert_eq!(Category::GatewayError.to_string(), "DssGatewayError");
    }

    #[test]
    fn errors_without_a_response_are_classified() {
        let op = Operation::GetStatus;
        let cases: [(&str, Error, Category, bool); 6] = [
            (
                "timeout",
                Error::Timeout { operation: op },
                Category::Timeout,
                true,
            ),
            (
                "waiter gave up",
                Error::WaitTimeout {
                    job_id: "j".into(),
                    last_state: None,
                },
                Category::Timeout,
                false,
            ),
            (
                "budget refused",
                Error::Throttled {
                    operation: op,
                    retry_after: Duration::from_secs(2),
                },
                Category::Throttled,
                true,
            ),
            (
                "too large",
                Error::TooLarge {
                    operation: op,
                    limit: "more than 1 listed jobs".into(),
                },
                Category::BadResponse,
                false,
            ),
            (
                "decode",
                Error::Decode {
                    operation: op,
                    detail: "x".into(),
                },
                Category::BadResponse,
                false,
            ),
            (
                "invalid argument",
                Error::InvalidArgument {
                    operation: op,
                    detail: "x".into(),
                },
                Category::Rejected,
                false,
            ),
        ];
        for (case, err, category, retryable) in cases {
            assert_eq!(err.class(), category, "{case}");
            assert_eq!(err.is_retryable(), retryable, "{case}");
            assert!(!err.is_not_found() && !err.is_gateway_error(), "{case}");
        }
        let throttled = Error::Throttled {
            operation: op,
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(throttled.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(
            throttled.to_string(),
            "DSS get_status: the connection's request budget is exhausted; next slot in 1.5s"
        );
    }

    #[test]
    fn what_a_failed_start_says_about_the_job() {
        // (case, error, nothing created so starting later is safe, DSS rejected the request itself)
        let cases: Vec<(&str, Error, bool, bool)> = vec![
            ("DSS 429", api(429, ""), true, false),
            ("gateway 429", api(429, "<html>429</html>"), true, false),
            (
                "budget refused: never sent",
                Error::Throttled {
                    operation: Operation::StartJob,
                    retry_after: Duration::from_secs(1),
                },
                true,
                false,
            ),
            (
                "DSS 400 bad definition",
                api(400, &dss("BadRequestException", "no outputs")),
                false,
                true,
            ),
            (
                "DSS unknown project",
                api(404, &dss(NOT_FOUND_TYPE, "Project P does not exist")),
                false,
                true,
            ),
            (
                "DSS unknown project, as a 500",
                api(500, &dss(UNKNOWN_OBJECT, "Project P does not exist")),
                false,
                true,
            ),
            (
                "never sent: no outputs",
                Error::InvalidArgument {
                    operation: Operation::StartJob,
                    detail: "x".into(),
                },
                false,
                true,
            ),
            // Whether the job exists is unknown: the caller must look before starting another.
            ("gateway 404 page", api(404, "<html>404</html>"), false, false),
            ("gateway 403 page", api(403, "<html>403</html>"), false, false),
            (
                "gateway 504 after forwarding",
                api(504, "<html>504</html>"),
                false,
                false,
            ),
            ("DSS 500", api(500, &dss("DKUException", "boom")), false, false),
            ("DSS 408", api(408, &dss("Timeout", "late")), false, false),
            (
                "timeout",
                Error::Timeout {
                    operation: Operation::StartJob,
                },
                false,
                false,
            ),
            (
                "unusable 2xx answer",
                Error::Decode {
                    operation: Operation::StartJob,
                    detail: "no id".into(),
                },
                false,
                false,
            ),
        ];
        for (case, err, rate_limited, rejection) in cases {
            assert_eq!(err.is_rate_limited(), rate_limited, "{case}");
            assert_eq!(err.is_rejection(), rejection, "{case}");
        }
        // DSS's own refusal of the key is the third "nothing was created" answer.
        assert!(api(401, &dss("UnauthorizedException", "bad key")).is_unauthorized());
    }

    #[test]
    fn rate_limited() {
        let mut err = api(429, "");
        if let Error::Api { retry_after, .. } = &mut err {
            *retry_after = Some(Duration::from_secs(3));
        }
        assert!(err.is_retryable());
        assert_eq!(err.category(), "DssRateLimited");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn the_key_is_redacted_from_server_texts() {
        let err = api(
            403,
            r#"{"errorType":"Forbidden","message":"bad key the-key given"}"#,
        );
        assert!(!err.to_string().contains("the-key"));
        assert!(!format!("{err:?}").contains("the-key"));
        let err = api(502, "echo: Basic the-key");
        assert!(!format!("{err:?}").contains("the-key"));
        // A key straddling the excerpt's end is removed before the cut, so no piece of it is left.
        let body = format!("{}the-key", "x".repeat(BODY_EXCERPT_MAX_BYTES - 3));
        let parsed = ErrorBody::parse(body.as_bytes(), "the-key");
        assert!(parsed.body_excerpt.ends_with("xxx***"), "{}", parsed.body_excerpt);
    }

    #[test]
    fn non_string_fields_and_garbage_do_not_panic() {
        let parsed = ErrorBody::parse(br#"{"errorType":12,"message":null,"detailedMessage":["a"]}"#, "");
        assert_eq!(parsed.error_type.as_deref(), Some("12"));
        assert_eq!(parsed.message, None);
        assert_eq!(parsed.detailed_message.as_deref(), Some("[\"a\"]"));
        let parsed = ErrorBody::parse(&[0xff, 0xfe, b'{', 0], "");
        assert!(parsed.error_type.is_none());
        let long = "x".repeat(10_000);
        assert!(ErrorBody::parse(long.as_bytes(), "").body_excerpt.chars().count() <= 1025);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn wait_timeout_display() {
        let err = Error::WaitTimeout {
            job_id: "j".into(),
            last_state: Some(JobState::Running),
        };
        assert_eq!(
            err.to_string(),
            "job j did not finish in time (last state: RUNNING)"
        );
        assert_eq!(err.category(), "DssTimeout");
    }
}
