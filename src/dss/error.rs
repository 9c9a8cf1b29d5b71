//! Errors of the DSS client and their classification.
//!
//! DSS reports errors as a JSON body `{"errorType","message","detailedMessage"}` with an HTTP status
//! (`dss-api.md` 1.6); gateways in front of it send HTML. [`Error::Api`] keeps the status, the parsed
//! fields and a bounded excerpt of the raw body, so callers can classify an error by status *and* by text
//! (real DSS may answer 500 for an object that does not exist).

use std::{fmt, time::Duration};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::model::JobState;

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
            out.push_str(&truncate_chars(text, DISPLAY_MAX_CHARS));
        }
        None if !body_excerpt.is_empty() && error_type.is_none() => {
            out.push_str(": ");
            out.push_str(&truncate_chars(body_excerpt, DISPLAY_MAX_CHARS));
        }
        None => {}
    }
    out
}

const DISPLAY_MAX_CHARS: usize = 300;

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
            | Error::InvalidArgument { operation, .. } => Some(*operation),
            Error::InvalidConfig(_) | Error::WaitTimeout { .. } => None,
        }
    }

    /// Whether the same call may succeed later: 5xx (except 501 and "not found" answers), 429,
    /// timeouts and transport errors. The client itself never retries; this is advice for callers, who
    /// must never retry a job start blindly (it may have been accepted).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => {
                *status == 429 || (*status >= 500 && *status != 501 && !self.is_not_found())
            }
            Error::Timeout { .. } | Error::Transport { .. } => true,
            Error::Decode { .. }
            | Error::InvalidConfig(_)
            | Error::InvalidArgument { .. }
            | Error::WaitTimeout { .. } => false,
        }
    }

    /// Whether DSS says the project or job does not exist: HTTP 404, or an `errorType` / message saying
    /// so with a 4xx or 500 status (real DSS may use 500 for unknown objects).
    pub fn is_not_found(&self) -> bool {
        let Error::Api {
            status,
            error_type,
            message,
            detailed_message,
            ..
        } = self
        else {
            return false;
        };
        match *status {
            404 => true,
            401 | 403 | 429 => false,
            400..=500 => {
                error_type.as_deref().is_some_and(|t| {
                    let t = t.to_ascii_lowercase();
                    t.contains("notfound") || t.contains("unknownobject") || t.contains("nosuch")
                }) || [message, detailed_message]
                    .into_iter()
                    .flatten()
                    .any(|m| says_not_found(m))
            }
            _ => false,
        }
    }

    /// Whether DSS asked the caller to slow down (429).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Error::Api { status: 429, .. })
    }

    /// Whether DSS said the request itself is wrong, so sending it again cannot help: a 4xx other than
    /// 401/403 (credentials), 408 (the request did not arrive in time) and 429 (slow down), or an
    /// argument refused before anything was sent.
    pub fn is_rejection(&self) -> bool {
        match self {
            Error::Api { status, .. } => {
                (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429)
            }
            Error::InvalidArgument { .. } => true,
            _ => false,
        }
    }

    /// Whether DSS refused the credentials or their privileges (401 / 403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Error::Api {
                status: 401 | 403,
                ..
            }
        )
    }

    /// How long the server asked to wait before the next call (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A PascalCase class for metric labels, event and condition reasons (see [`Category`]).
    pub fn category(&self) -> &'static str {
        self.class().as_str()
    }

    /// The class of the error, from its status, its DSS error type and its cause (never its text).
    pub fn class(&self) -> Category {
        match self {
            Error::Api { status, .. } => {
                if *status == 429 {
                    Category::RateLimited
                } else if self.is_unauthorized() {
                    Category::Unauthorized
                } else if self.is_not_found() {
                    Category::NotFound
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
            Error::Decode { .. } => Category::BadResponse,
            Error::InvalidConfig(_) | Error::InvalidArgument { .. } => Category::Rejected,
        }
    }
}

/// The classes of DSS errors: a closed set, shared by metric labels, event and condition reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// DSS cannot be reached (DNS, refused, reset).
    Unreachable,
    /// The TLS handshake failed (unknown issuer, bad certificate, protocol).
    Tls,
    /// The call did not complete in time.
    Timeout,
    /// DSS asked the caller to slow down (429).
    RateLimited,
    /// DSS answered with a server error (5xx).
    ServerError,
    /// DSS refused the credentials (401 / 403).
    Unauthorized,
    /// DSS says the object does not exist.
    NotFound,
    /// DSS rejected the request (4xx), or it was refused before it was sent.
    Rejected,
    /// DSS answered with something the client cannot use.
    BadResponse,
}

impl Category {
    /// The PascalCase name, e.g. `DssUnreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Unreachable => "DssUnreachable",
            Category::Tls => "DssTlsError",
            Category::Timeout => "DssTimeout",
            Category::RateLimited => "DssRateLimited",
            Category::ServerError => "DssServerError",
            Category::Unauthorized => "DssUnauthorized",
            Category::NotFound => "DssNotFound",
            Category::Rejected => "DssRejected",
            Category::BadResponse => "DssBadResponse",
        }
    }
}

/// Whether a transport error is a TLS failure: its cause chain holds a rustls error (the TLS stack
/// reports handshake failures as I/O errors that wrap one).
fn is_tls(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn says_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["not found", "doesn't exist", "does not exist", "no such"]
        .iter()
        .any(|p| m.contains(p))
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text.to_owned(),
    }
}

/// How much of an error body is kept in [`Error::Api::body_excerpt`].
pub(crate) const BODY_EXCERPT_MAX_CHARS: usize = 1024;
/// How much of a text field of an error body is kept.
const FIELD_MAX_CHARS: usize = 4096;

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
        let body_excerpt = redact(&truncate_chars(&collapsed, BODY_EXCERPT_MAX_CHARS), secret);
        let json = serde_json::from_slice::<serde_json::Value>(body).ok();
        let field = |name: &str| -> Option<String> {
            let value = json.as_ref()?.get(name)?;
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some(redact(&truncate_chars(text.trim(), FIELD_MAX_CHARS), secret))
        };
        Self {
            error_type: field("errorType"),
            message: field("message"),
            detailed_message: field("detailedMessage"),
            body_excerpt,
        }
    }
}

/// Replaces every occurrence of the API key `secret`, and of its Basic credentials (`base64("key:")`),
/// in `text` by `***`: a server or proxy echoing the request must not make the key visible.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    use base64::Engine as _;
    if secret.is_empty() {
        return text.to_owned();
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{secret}:"));
    text.replace(secret, "***").replace(&basic, "***")
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
    let date = DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(value, fmt).ok())
                .map(|naive| naive.and_utc())
        })?;
    let delta = date.signed_duration_since(now).to_std().unwrap_or(Duration::ZERO);
    Some(delta.min(MAX_RETRY_AFTER))
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
        assert!(err.is_not_found());
        assert!(!err.is_retryable());
        assert_eq!(err.category(), "DssNotFound");
        assert_eq!(err.status(), Some(404));
    }

    #[test]
    fn unauthorized_and_forbidden() {
        for status in [401, 403] {
            let err = api(
                status,
                r#"{"errorType":"com.dataiku.dip.exceptions.ForbiddenException","message":"Invalid API key"}"#,
            );
            assert!(err.is_unauthorized());
            assert!(!err.is_not_found());
            assert!(!err.is_retryable());
            assert_eq!(err.category(), "DssUnauthorized");
            assert!(err.to_string().contains("ForbiddenException: Invalid API key"));
        }
    }

    #[test]
    fn server_errors() {
        let err = api(500, r#"{"message":"boom without errorType"}"#);
        assert!(err.is_retryable());
        assert_eq!(err.category(), "DssServerError");
        assert_eq!(
            err.to_string(),
            "DSS get_status: HTTP 500: boom without errorType"
        );

        let err = api(502, "<html><body><h1>502 Bad Gateway</h1></body></html>\n");
        assert!(err.is_retryable());
        assert_eq!(err.category(), "DssServerError");
        assert!(
            matches!(&err, Error::Api { error_type: None, message: None, body_excerpt, .. }
            if body_excerpt == "<html><body><h1>502 Bad Gateway</h1></body></html>")
        );
        assert!(err.to_string().contains("502 Bad Gateway"));

        let err = api(500, "");
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "DSS get_status: HTTP 500");

        assert!(!api(501, "").is_retryable());
        assert!(api(503, "").is_retryable());
        assert_eq!(api(400, "{}").category(), "DssRejected");
    }

    #[test]
    fn not_found_sent_as_500_is_recognised_and_not_retried() {
        let err = api(
            500,
            r#"{"errorType":"com.dataiku.dip.exceptions.UnknownObjectException","message":"Job build_x does not exist"}"#,
        );
        assert!(err.is_not_found());
        assert!(!err.is_retryable());
        assert_eq!(err.category(), "DssNotFound");
        assert!(api(500, r#"{"message":"Project FOO doesn't exist"}"#).is_not_found());
        assert!(!api(502, r#"{"message":"not found"}"#).is_not_found());
        assert!(!api(403, r#"{"message":"project does not exist"}"#).is_not_found());
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
