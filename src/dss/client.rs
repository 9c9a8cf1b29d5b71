//! [`DssClient`]: the DSS jobs calls, each through the client's budget, with a timeout, a bounded body
//! read, and a report to the [`RequestObserver`].

use std::{
    fmt,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tracing::Instrument as _;
use url::Url;

use super::{
    ApiKey, ClientConfig, Error, JobDefinition, Limits, Operation,
    error::{ErrorBody, parse_retry_after},
    limiter::Limiter,
    model::{
        AuthInfo, JobListItem, JobStatus, StartedJob, decode_auth_info, decode_job_list, decode_project_keys,
        decode_started, decode_status,
    },
};

/// The class of a call's result, for metrics. A closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A 2xx answer that decoded.
    Success,
    /// A 4xx answer other than 429.
    ClientError,
    /// A 5xx answer.
    ServerError,
    /// A 429 answer.
    RateLimited,
    /// The request timed out.
    Timeout,
    /// The request could not be sent or the answer not read.
    Transport,
    /// A 2xx answer that could not be decoded.
    Decode,
    /// Any other status (1xx, 3xx): DSS never sends them on these calls.
    UnexpectedStatus,
}

impl Outcome {
    /// Every outcome, for metric pre-registration.
    pub const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::RateLimited,
        Outcome::Timeout,
        Outcome::Transport,
        Outcome::Decode,
        Outcome::UnexpectedStatus,
    ];

    /// The label: `2xx`, `4xx`, `5xx`, `429`, `timeout`, `transport`, `decode` or `unexpected_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "2xx",
            Outcome::ClientError => "4xx",
            Outcome::ServerError => "5xx",
            Outcome::RateLimited => "429",
            Outcome::Timeout => "timeout",
            Outcome::Transport => "transport",
            Outcome::Decode => "decode",
            Outcome::UnexpectedStatus => "unexpected_status",
        }
    }

    fn of(result: &Result<(), &Error>) -> Option<Self> {
        Some(match result {
            Ok(()) => Outcome::Success,
            Err(Error::Api { status: 429, .. }) => Outcome::RateLimited,
            Err(Error::Api {
                status: 400..=499, ..
            }) => Outcome::ClientError,
            Err(Error::Api {
                status: 500..=599, ..
            }) => Outcome::ServerError,
            Err(Error::Api { .. }) => Outcome::UnexpectedStatus,
            Err(Error::Timeout { .. }) => Outcome::Timeout,
            Err(Error::Transport { .. }) => Outcome::Transport,
            Err(Error::Decode { .. }) => Outcome::Decode,
            // No request was made.
            Err(_) => return None,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives one report per DSS call (for metrics). Implementations must be cheap and must not block.
pub trait RequestObserver: Send + Sync {
    /// A call finished: its outcome and duration (from sending to the decoded answer; budget waits
    /// excluded).
    fn observe(&self, operation: Operation, outcome: Outcome, elapsed: Duration);
    /// A call waited `wait` for the budget (rate, in-flight cap or a 429 pause) before being sent.
    fn throttled(&self, _operation: Operation, _wait: Duration) {}
}

/// Body size caps: a hostile server cannot make the client buffer more than this.
const MAX_JSON_BODY: usize = 32 * 1024 * 1024;
const MAX_STATUS_BODY: usize = 16 * 1024 * 1024;
const MAX_LOG_BODY: usize = 16 * 1024 * 1024;
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The pause after a 429 that carries no usable `Retry-After`.
const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);

/// Characters left as they are in a path segment: RFC 3986 unreserved. Everything else, including `/`,
/// `%`, `?`, `#`, space and non-ASCII, is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A client of one DSS. Cheap to clone: clones share the HTTP connection pool, the API key and the
/// request budget. The observer belongs to the handle (see [`DssClient::with_observer`]).
#[derive(Clone)]
pub struct DssClient {
    shared: Arc<Shared>,
    observer: Option<Arc<dyn RequestObserver>>,
}

struct Shared {
    http: reqwest::Client,
    base_url: Url,
    prefix: super::ApiPrefix,
    api_key: RwLock<ApiKey>,
    limiter: Limiter,
    request_timeout: Duration,
}

impl fmt::Debug for DssClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DssClient")
            .field("base_url", &self.shared.base_url.as_str())
            .field("prefix", &self.shared.prefix)
            .field("api_key", &"ApiKey(***)")
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// A raw successful answer.
struct Answer {
    body: Vec<u8>,
}

impl DssClient {
    /// Builds a client. Fails on an invalid configuration (see [`ClientConfig::validate`]) or an
    /// unreadable CA bundle. No request is made.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut builder = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout);
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::InvalidConfig(format!("cannot read the CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(Error::InvalidConfig(
                    "the CA bundle holds no certificate".to_owned(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                http,
                base_url: config.base_url,
                prefix: config.prefix,
                api_key: RwLock::new(config.api_key),
                limiter: Limiter::new(config.limits),
                request_timeout: config.request_timeout,
            }),
            observer: None,
        })
    }

    /// This handle, reporting every call to `observer`. Clones made from the returned handle report too;
    /// other handles sharing the budget are unaffected.
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Replaces the API key (rotation). Calls started afterwards use the new key; the budget and the
    /// connection pool are kept.
    pub fn set_api_key(&self, key: ApiKey) {
        *self
            .shared
            .api_key
            .write()
            .unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// Changes the request budget at run time, for every clone. Invalid fields are replaced (see
    /// [`Limits::sanitized`]).
    pub fn set_limits(&self, limits: Limits) {
        if limits.validate().is_err() {
            tracing::warn!(?limits, "invalid DSS request limits; using sanitized values");
        }
        self.shared.limiter.set_limits(limits);
    }

    /// The DSS URL (without the API prefix).
    pub fn base_url(&self) -> &Url {
        &self.shared.base_url
    }

    /// `GET /projects/`: the keys of the projects the API key can read. The cheapest "does my key work"
    /// call.
    pub async fn list_project_keys(&self) -> Result<Vec<String>, Error> {
        let op = Operation::ListProjects;
        self.observed(op, async {
            let url = self.url(op, &["projects", ""], &[])?;
            let answer = self.send(op, Method::GET, url, None, MAX_JSON_BODY).await?;
            decode_project_keys(&answer.body).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })
        })
        .instrument(tracing::debug_span!("dss.list_project_keys"))
        .await
    }

    /// `GET /auth/info`: who the key authenticates as.
    pub async fn auth_info(&self) -> Result<AuthInfo, Error> {
        let op = Operation::AuthInfo;
        self.observed(op, async {
            let url = self.url(op, &["auth", "info"], &[])?;
            let answer = self.send(op, Method::GET, url, None, MAX_JSON_BODY).await?;
            decode_auth_info(&answer.body).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })
        })
        .instrument(tracing::debug_span!("dss.auth_info"))
        .await
    }

    /// `GET /projects/{pk}/jobs/`: every job DSS retains for the project, finished or not.
    #[tracing::instrument(name = "dss.list_jobs", level = "debug", skip_all, fields(project = project_key))]
    pub async fn list_jobs(&self, project_key: &str) -> Result<Vec<JobListItem>, Error> {
        self.list(
            Operation::ListJobs,
            &["projects", project_key, "jobs", ""],
            &[],
            Some(project_key),
        )
        .await
    }

    /// `GET /projects/{pk}/jobs/running/`: the project's jobs still being processed (DSS 15.2+).
    #[tracing::instrument(name = "dss.list_running_jobs", level = "debug", skip_all, fields(project = project_key))]
    pub async fn list_running_jobs(&self, project_key: &str) -> Result<Vec<JobListItem>, Error> {
        let path = ["projects", project_key, "jobs", "running", ""];
        self.list(Operation::ListRunningJobs, &path, &[], Some(project_key))
            .await
    }

    /// `GET /jobs/running/?allUsers=`: running jobs of every project; of every user visible to the key
    /// when `all_users`, else only the key's own (DSS 15.2+).
    #[tracing::instrument(
        name = "dss.list_all_running_jobs",
        level = "debug",
        skip_all,
        fields(all_users)
    )]
    pub async fn list_all_running_jobs(&self, all_users: bool) -> Result<Vec<JobListItem>, Error> {
        // The Python client's spelling of booleans.
        let flag = if all_users { "True" } else { "False" };
        self.list(
            Operation::ListAllRunningJobs,
            &["jobs", "running", ""],
            &[("allUsers", flag)],
            None,
        )
        .await
    }

    async fn list(
        &self,
        op: Operation,
        path: &[&str],
        query: &[(&str, &str)],
        default_project: Option<&str>,
    ) -> Result<Vec<JobListItem>, Error> {
        self.observed(op, async {
            let url = self.url(op, path, query)?;
            let answer = self.send(op, Method::GET, url, None, MAX_JSON_BODY).await?;
            decode_job_list(&answer.body, default_project).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })
        })
        .await
    }

    /// `POST /projects/{pk}/jobs/`: starts a job.
    ///
    /// Sent exactly once, never retried, whatever the error: after a timeout, a transport error or a
    /// 5xx the job may or may not exist, and only the caller can decide how to find out (for instance by
    /// listing the project's jobs).
    #[tracing::instrument(name = "dss.start_job", level = "debug", skip_all, fields(project = project_key, job_id))]
    pub async fn start_job(
        &self,
        project_key: &str,
        definition: &JobDefinition,
    ) -> Result<StartedJob, Error> {
        let op = Operation::StartJob;
        self.observed(op, async {
            definition.validate().map_err(|detail| Error::InvalidArgument {
                operation: op,
                detail,
            })?;
            let url = self.url(op, &["projects", project_key, "jobs", ""], &[])?;
            let body = serde_json::to_vec(definition).map_err(|e| Error::InvalidArgument {
                operation: op,
                detail: format!("cannot serialize the job definition: {e}"),
            })?;
            let answer = self
                .send(op, Method::POST, url, Some(body), MAX_JSON_BODY)
                .await?;
            let started = decode_started(&answer.body).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })?;
            tracing::Span::current().record("job_id", started.id.as_str());
            Ok(started)
        })
        .await
    }

    /// `GET /projects/{pk}/jobs/{id}/`: the job's status document. A document without
    /// `baseStatus.state` is an [`Error::Decode`].
    #[tracing::instrument(name = "dss.get_status", level = "debug", skip_all, fields(project = project_key, job_id = job_id))]
    pub async fn get_status(&self, project_key: &str, job_id: &str) -> Result<JobStatus, Error> {
        let op = Operation::GetStatus;
        self.observed(op, async {
            let url = self.url(op, &["projects", project_key, "jobs", job_id, ""], &[])?;
            let answer = self.send(op, Method::GET, url, None, MAX_STATUS_BODY).await?;
            decode_status(&answer.body).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })
        })
        .await
    }

    /// `POST /projects/{pk}/jobs/{id}/abort`: asks DSS to abort the job. Any 2xx answer is success
    /// (aborting a finished job is not an error for DSS).
    #[tracing::instrument(name = "dss.abort", level = "debug", skip_all, fields(project = project_key, job_id = job_id))]
    pub async fn abort(&self, project_key: &str, job_id: &str) -> Result<(), Error> {
        let op = Operation::Abort;
        self.observed(op, async {
            let url = self.url(op, &["projects", project_key, "jobs", job_id, "abort"], &[])?;
            self.send(op, Method::POST, url, None, MAX_ERROR_BODY)
                .await
                .map(|_| ())
        })
        .await
    }

    /// `GET /projects/{pk}/jobs/{id}/log[?activity=]`: the job's log, or one activity's. Decoded as
    /// UTF-8 (invalid bytes replaced). A log larger than 16 MiB is cut to its last 16 MiB, after a
    /// first line saying so.
    #[tracing::instrument(name = "dss.get_log", level = "debug", skip_all, fields(project = project_key, job_id = job_id))]
    pub async fn get_log(
        &self,
        project_key: &str,
        job_id: &str,
        activity: Option<&str>,
    ) -> Result<String, Error> {
        let op = Operation::GetLog;
        self.observed(op, async {
            let query: Vec<(&str, &str)> = activity.map(|a| ("activity", a)).into_iter().collect();
            let url = self.url(op, &["projects", project_key, "jobs", job_id, "log"], &query)?;
            let answer = self.send_keep_tail(op, url).await?;
            Ok(answer)
        })
        .await
    }

    // -----------------------------------------------------------------------------------------------

    /// Runs a call and reports its outcome and duration to the observer.
    async fn observed<T>(
        &self,
        op: Operation,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = tokio::time::Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        let outcome = Outcome::of(&result.as_ref().map(|_| ()));
        match &result {
            Ok(_) => tracing::debug!(operation = %op, ?elapsed, "DSS call succeeded"),
            Err(err) => tracing::debug!(operation = %op, ?elapsed, error = %err, "DSS call failed"),
        }
        if let (Some(observer), Some(outcome)) = (&self.observer, outcome) {
            observer.observe(op, outcome, elapsed);
        }
        result
    }

    /// `{base}{prefix}/{segments...}` with every segment percent-encoded, then the query. An empty last
    /// segment gives the trailing slash.
    fn url(&self, op: Operation, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, Error> {
        let mut path = self.shared.base_url.path().trim_end_matches('/').to_owned();
        path.push_str(self.shared.prefix.as_str());
        for (i, segment) in segments.iter().enumerate() {
            let is_trailing_slash = i + 1 == segments.len() && segment.is_empty();
            if !is_trailing_slash {
                check_segment(op, segment)?;
            }
            path.push('/');
            path.push_str(&encode_segment(segment));
        }
        let mut url = self.shared.base_url.clone();
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn current_key(&self) -> ApiKey {
        self.shared
            .api_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn headers(&self, key: &ApiKey, json_body: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:", key.expose_secret()));
        // Base64 output is always a valid header value; should that ever fail, the request goes out
        // unauthenticated and DSS answers 401, which is reported as such.
        if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {token}")) {
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if json_body {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        headers
    }

    /// Sends one request through the budget and returns a 2xx body (read up to `cap` bytes, else a decode
    /// error), or the error. Never retries.
    async fn send(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        cap: usize,
    ) -> Result<Answer, Error> {
        let response = self.start(op, method, url, body).await?;
        let read = read_capped(op, response, cap, false);
        let (body, truncated) = self.within_timeout(op, read).await??;
        if truncated {
            return Err(Error::Decode {
                operation: op,
                detail: format!("the answer is larger than {cap} bytes"),
            });
        }
        Ok(Answer { body })
    }

    /// Like [`Self::send`] for a `GET` of text, keeping the last [`MAX_LOG_BODY`] bytes of a longer body.
    async fn send_keep_tail(&self, op: Operation, url: Url) -> Result<String, Error> {
        let response = self.start(op, Method::GET, url, None).await?;
        let read = read_capped(op, response, MAX_LOG_BODY, true);
        let (body, truncated) = self.within_timeout(op, read).await??;
        let text = String::from_utf8_lossy(&body);
        Ok(if truncated {
            format!("[kube-dss: log truncated, only its last {MAX_LOG_BODY} bytes are shown]\n{text}")
        } else {
            text.into_owned()
        })
    }

    /// Waits for the budget, sends the request and checks the status. Error statuses become
    /// [`Error::Api`]; a 429 pauses the whole client.
    async fn start(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, Error> {
        let (permit, waited) = self.shared.limiter.acquire().await;
        if !waited.is_zero() {
            tracing::debug!(operation = %op, ?waited, "DSS call waited for the request budget");
            if let Some(observer) = &self.observer {
                observer.throttled(op, waited);
            }
        }
        let key = self.current_key();
        let mut request = self
            .shared
            .http
            .request(method, url)
            .headers(self.headers(&key, body.is_some()))
            .timeout(self.shared.request_timeout);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = self
            .within_timeout(op, request.send())
            .await?
            .map_err(|e| transport(op, e))?;
        // The permit covers the request until its answer's headers are in; reading the body does not need
        // a slot of DSS's capacity any more.
        drop(permit);
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        if status.as_u16() == 429 {
            let pause = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE);
            tracing::warn!(operation = %op, ?pause, "DSS is rate limiting; pausing every call of this client");
            self.shared
                .limiter
                .pause_until(tokio::time::Instant::now() + pause);
        }
        // An unreadable error body still gives an error with the status.
        let body = match self
            .within_timeout(op, read_capped(op, response, MAX_ERROR_BODY, false))
            .await
        {
            Ok(Ok((body, _))) => body,
            _ => Vec::new(),
        };
        let parsed = ErrorBody::parse(&body, key.expose_secret());
        Err(Error::Api {
            operation: op,
            status: status.as_u16(),
            error_type: parsed.error_type,
            message: parsed.message,
            detailed_message: parsed.detailed_message,
            body_excerpt: parsed.body_excerpt,
            retry_after,
        })
    }

    /// A second guard on top of reqwest's own timeout, so no call can outlive the request timeout.
    async fn within_timeout<T>(&self, op: Operation, fut: impl Future<Output = T>) -> Result<T, Error> {
        tokio::time::timeout(self.shared.request_timeout, fut)
            .await
            .map_err(|_| Error::Timeout { operation: op })
    }
}

fn transport(op: Operation, err: reqwest::Error) -> Error {
    if err.is_timeout() {
        Error::Timeout { operation: op }
    } else {
        Error::Transport {
            operation: op,
            source: err,
        }
    }
}

/// Reads a body up to `cap` bytes. Beyond it, either stops (`keep_tail == false`) or keeps reading and
/// retains only the last `cap` bytes. Returns the bytes and whether anything was dropped.
async fn read_capped(
    op: Operation,
    mut response: reqwest::Response,
    cap: usize,
    keep_tail: bool,
) -> Result<(Vec<u8>, bool), Error> {
    let mut buf: Vec<u8> = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(op, e))? {
        buf.extend_from_slice(&chunk);
        if buf.len() > cap {
            truncated = true;
            if !keep_tail {
                buf.truncate(cap);
                break;
            }
            // Drop the oldest bytes in large steps to keep this linear.
            if buf.len() > cap * 2 {
                let excess = buf.len() - cap;
                buf.drain(..excess);
            }
        }
    }
    if buf.len() > cap {
        let excess = buf.len() - cap;
        buf.drain(..excess);
    }
    Ok((buf, truncated))
}

fn check_segment(op: Operation, segment: &str) -> Result<(), Error> {
    // `.` and `..` (even percent-encoded) are resolved away by URL parsers and proxies.
    if segment.is_empty() || segment == "." || segment == ".." {
        return Err(Error::InvalidArgument {
            operation: op,
            detail: format!("{segment:?} is not a valid project key or job id"),
        });
    }
    Ok(())
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters.
pub(crate) fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}
