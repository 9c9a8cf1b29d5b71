//! [`DssClient`]: the DSS jobs calls, each through the client's budget, with one deadline for the
//! whole call (request and body), a bounded or streamed body read, and a report to the
//! [`RequestObserver`].
//!
//! A call takes an in-flight slot and a token from the connection's budget (waiting at most what the
//! handle allows, see [`DssClient::with_max_budget_wait`]), sends the request and reads the answer
//! before giving the slot back: a DSS that answers slowly, or trickles its body, occupies its own
//! connection's slots only. Listings are decoded item by item as they arrive (`listing.rs`) and
//! logs are reduced to their tail as they arrive (`log_tail.rs`), so no answer is held whole unless
//! it is small.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tracing::Instrument as _;
use url::Url;

use super::clock::{Clock, ClockOffset};
use super::{
    ApiKey, ClientConfig, Error, JobDefinition, Limits, Operation,
    error::{ErrorBody, parse_retry_after},
    limiter::{Class, Limiter, Permit},
    listing::{JobListing, Listing, ListingError, ProjectListing, keep_all},
    log_tail::{LogTail, LogTailLimits, TailCollector},
    model::{
        AuthInfo, JobListItem, JobSearch, JobStatus, StartedJob, decode_auth_info, decode_started,
        decode_status,
    },
};
use crate::sync::{read, write};

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
            Err(Error::Decode { .. } | Error::TooLarge { .. }) => Outcome::Decode,
            // No request was made (a budget refusal included).
            Err(_) => return None,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which running-jobs listing [`DssClient::scan_running_jobs`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running<'a> {
    /// The key's own running jobs in every project (`GET /jobs/running/?allUsers=False`).
    Mine,
    /// One project's running jobs, every user's (`GET /projects/{pk}/jobs/running/`).
    Project(&'a str),
}

/// Receives one report per DSS call (for metrics). Implementations must be cheap and must not block.
pub trait RequestObserver: Send + Sync {
    /// A call finished: its outcome and duration (from sending to the decoded answer; budget waits
    /// excluded).
    fn observe(&self, operation: Operation, outcome: Outcome, elapsed: Duration);
    /// A call waited `wait` for the budget (rate, in-flight cap or a 429 pause) before being sent, or
    /// was refused by it after `wait` ([`Error::Throttled`]).
    fn throttled(&self, _operation: Operation, _wait: Duration) {}
}

/// Body size caps: a hostile server cannot make the client buffer more than this. Listings and logs
/// are streamed instead (their caps are on items and on the tail).
pub(super) const MAX_JSON_BODY: usize = 32 * 1024 * 1024;
const MAX_STATUS_BODY: usize = 16 * 1024 * 1024;
pub(super) const MAX_LOG_BODY: usize = 16 * 1024 * 1024;
pub(super) const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most jobs a listing returned whole ([`DssClient::list_jobs`] and the running-jobs listings)
/// may hold. [`DssClient::search_jobs`] has no such cap: it keeps only what it is asked to.
pub const MAX_LISTED_JOBS: usize = 10_000;
/// The most projects [`DssClient::list_project_keys`] returns.
pub const MAX_LISTED_PROJECTS: usize = 10_000;
/// The pause after a 429 that carries no usable `Retry-After`.
const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause a 429 imposes on the connection's calls, whatever its `Retry-After` (which the
/// error still reports, up to 600 s, for callers that requeue instead of waiting).
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// Characters left as they are in a path segment: RFC 3986 unreserved. Everything else, including `/`,
/// `%`, `?`, `#`, space and non-ASCII, is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A client of one DSS. Cheap to clone: clones share the HTTP connection pool, the API key and the
/// request budget. The observer and the budget wait limit belong to the handle (see
/// [`DssClient::with_observer`], [`DssClient::with_max_budget_wait`]).
#[derive(Clone)]
pub struct DssClient {
    shared: Arc<Shared>,
    observer: Option<Arc<dyn RequestObserver>>,
    max_budget_wait: Option<Duration>,
    class: Class,
}

struct Shared {
    http: reqwest::Client,
    base_url: Url,
    prefix: super::ApiPrefix,
    api_key: RwLock<ApiKey>,
    limiter: Limiter,
    request_timeout: Duration,
    /// How far DSS's clock is from ours.
    clock: Clock,
}

impl fmt::Debug for DssClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DssClient")
            .field("base_url", &self.shared.base_url.as_str())
            .field("prefix", &self.shared.prefix)
            .field("api_key", &"ApiKey(***)")
            .field("observer", &self.observer.is_some())
            .field("max_budget_wait", &self.max_budget_wait)
            .finish_non_exhaustive()
    }
}

/// A raw successful answer.
pub(super) struct Answer {
    pub(super) body: Vec<u8>,
}

/// A successful answer whose body is still to be read, with everything the call holds until it is.
struct Exchange {
    op: Operation,
    response: reqwest::Response,
    /// The in-flight slot, given back when the body has been read.
    _permit: Permit,
    /// The end of the call's time: request and body together.
    deadline: tokio::time::Instant,
    /// The key the request was sent with (to remove it from the log).
    key: ApiKey,
}

impl Exchange {
    /// The next piece of the body, before the deadline.
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, Error> {
        let op = self.op;
        match tokio::time::timeout_at(self.deadline, self.response.chunk()).await {
            Ok(chunk) => chunk.map_err(|e| transport(op, e)),
            Err(_) => Err(Error::Timeout { operation: op }),
        }
    }

    /// The whole body, refused over `cap` bytes.
    async fn bytes(mut self, cap: usize) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if body.len() + chunk.len() > cap {
                return Err(Error::TooLarge {
                    operation: self.op,
                    limit: format!("a body over {cap} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
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
                clock: Clock::default(),
            }),
            observer: None,
            max_budget_wait: None,
            class: Class::Ordinary,
        })
    }

    /// This handle, waiting at most `wait` for the connection's budget before each call (an in-flight
    /// slot, a token, the end of a 429 pause); beyond that a call fails at once with
    /// [`Error::Throttled`] and its `retry_after`, without being sent, so that a caller such as a
    /// reconciler can requeue instead of holding its slot. Without it a call waits as long as the
    /// budget needs (a 429 pause lasts at most [`MAX_RATE_LIMIT_PAUSE`]), which suits the CLI.
    /// Clones made from the returned handle share the limit; other handles are unaffected.
    pub fn with_max_budget_wait(mut self, wait: Duration) -> Self {
        self.max_budget_wait = Some(wait);
        self
    }

    /// This handle, whose calls take the connection's budget only when no call of an ordinary handle
    /// waits for it and a share of the burst is left (job starts give way to the looks at running
    /// jobs, so that a backlog of starts never delays noticing that jobs ended). Clones made from the
    /// returned handle give way too.
    pub fn giving_way(mut self) -> Self {
        self.class = Class::GivesWay;
        self
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
        *write(&self.shared.api_key) = key;
    }

    /// Changes the request budget at run time, for every clone. Invalid fields are replaced (see
    /// [`Limits::sanitized`]).
    pub fn set_limits(&self, limits: Limits) {
        if limits.validate().is_err() {
            tracing::warn!(?limits, "invalid DSS request limits; using sanitized values");
        }
        self.shared.limiter.set_limits(limits);
    }

    /// How far DSS's clock is from ours (`DSS − ours`), bounded by the `Date` headers of its
    /// answers so far; `None` before the first answer that had one.
    pub fn clock_offset(&self) -> Option<ClockOffset> {
        self.shared.clock.offset()
    }

    /// The DSS URL (without the API prefix).
    pub fn base_url(&self) -> &Url {
        &self.shared.base_url
    }

    /// `GET /projects/`: the keys of the projects the API key can read. The cheapest "does my key work"
    /// call. More than [`MAX_LISTED_PROJECTS`] projects is an [`Error::TooLarge`].
    pub async fn list_project_keys(&self) -> Result<Vec<String>, Error> {
        let op = Operation::ListProjects;
        self.observed(op, async {
            let url = self.url(op, &["projects", ""], &[])?;
            let exchange = self.exchange(op, Method::GET, url, None).await?;
            let mut keys = Vec::new();
            stream_listing(
                exchange,
                ProjectListing::new(),
                &mut keep_all(&mut keys, MAX_LISTED_PROJECTS, "projects"),
            )
            .await?;
            Ok(keys)
        })
        .instrument(tracing::debug_span!("dss.list_project_keys"))
        .await
    }

    /// `GET /auth/info`: who the key authenticates as.
    pub async fn auth_info(&self) -> Result<AuthInfo, Error> {
        let op = Operation::AuthInfo;
        self.observed(op, async {
            let url = self.url(op, &["auth", "info"], &[])?;
            let body = self
                .exchange(op, Method::GET, url, None)
                .await?
                .bytes(MAX_JSON_BODY)
                .await?;
            decode_auth_info(&body).map_err(|detail| Error::Decode {
                operation: op,
                detail,
            })
        })
        .instrument(tracing::debug_span!("dss.auth_info"))
        .await
    }

    /// `GET /projects/{pk}/jobs/`: every job DSS retains for the project, finished or not. More than
    /// [`MAX_LISTED_JOBS`] jobs is an [`Error::TooLarge`]: use [`DssClient::search_jobs`] to look
    /// for jobs in a project that may keep many.
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

    /// `GET /projects/{pk}/jobs/`, keeping only the jobs `keep` accepts, decided as the listing
    /// streams in: however many jobs the project retains, only the accepted ones are held, at most
    /// `max_matches` of them (the count of all accepted ones is still reported). For searches such as
    /// "which job did my lost start request create". Jobs are seen in DSS's order.
    #[tracing::instrument(name = "dss.search_jobs", level = "debug", skip_all, fields(project = project_key))]
    pub async fn search_jobs(
        &self,
        project_key: &str,
        max_matches: usize,
        mut keep: impl FnMut(&JobListItem) -> bool + Send,
    ) -> Result<JobSearch, Error> {
        let path = ["projects", project_key, "jobs", ""];
        self.search(
            Operation::ListJobs,
            &path,
            &[],
            Some(project_key),
            max_matches,
            &mut keep,
        )
        .await
    }

    /// A running-jobs listing (`GET /jobs/running/?allUsers=False` for [`Running::Mine`],
    /// `GET /projects/{pk}/jobs/running/` for [`Running::Project`]), keeping only the jobs `keep`
    /// accepts as the listing streams in, at most `max_matches` of them: a watcher of a few jobs
    /// holds those few, however many jobs DSS is running (DSS 15.2+).
    #[tracing::instrument(name = "dss.scan_running_jobs", level = "debug", skip_all)]
    pub async fn scan_running_jobs(
        &self,
        which: Running<'_>,
        max_matches: usize,
        mut keep: impl FnMut(&JobListItem) -> bool + Send,
    ) -> Result<JobSearch, Error> {
        let (op, path, query, project): (_, Vec<&str>, &[(&str, &str)], _) = match which {
            // The Python client's spelling of booleans.
            Running::Mine => (
                Operation::ListAllRunningJobs,
                vec!["jobs", "running", ""],
                &[("allUsers", "False")],
                None,
            ),
            Running::Project(pk) => (
                Operation::ListRunningJobs,
                vec!["projects", pk, "jobs", "running", ""],
                &[],
                Some(pk),
            ),
        };
        self.search(op, &path, query, project, max_matches, &mut keep)
            .await
    }

    /// A job listing read as it streams in, keeping only the jobs `keep` accepts (at most
    /// `max_matches`; all accepted ones are counted).
    async fn search(
        &self,
        op: Operation,
        path: &[&str],
        query: &[(&str, &str)],
        default_project: Option<&str>,
        max_matches: usize,
        keep: &mut (dyn FnMut(&JobListItem) -> bool + Send),
    ) -> Result<JobSearch, Error> {
        self.observed(op, async {
            let url = self.url(op, path, query)?;
            let exchange = self.exchange(op, Method::GET, url, None).await?;
            let (mut matches, mut total_matches) = (Vec::new(), 0);
            let listed = stream_listing(exchange, JobListing::new(default_project), &mut |job| {
                if keep(&job) {
                    total_matches += 1;
                    if matches.len() < max_matches {
                        matches.push(job);
                    }
                }
                Ok(())
            })
            .await?;
            Ok(JobSearch {
                matches,
                total_matches,
                listed,
            })
        })
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
            let exchange = self.exchange(op, Method::GET, url, None).await?;
            let mut jobs = Vec::new();
            stream_listing(
                exchange,
                JobListing::new(default_project),
                &mut keep_all(&mut jobs, MAX_LISTED_JOBS, "jobs"),
            )
            .await?;
            Ok(jobs)
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
                .exchange(op, Method::POST, url, Some(body))
                .await?
                .bytes(MAX_JSON_BODY)
                .await?;
            let started = decode_started(&answer).map_err(|detail| Error::Decode {
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
            let body = self
                .exchange(op, Method::GET, url, None)
                .await?
                .bytes(MAX_STATUS_BODY)
                .await?;
            decode_status(&body).map_err(|detail| Error::Decode {
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
            self.exchange(op, Method::POST, url, None)
                .await?
                .bytes(MAX_ERROR_BODY)
                .await
                .map(|_| ())
        })
        .await
    }

    /// `GET /projects/{pk}/jobs/{id}/log[?activity=]`: the job's log, or one activity's. Decoded as
    /// UTF-8 (invalid bytes replaced). A log larger than 16 MiB is cut to its last 16 MiB, after a
    /// first line saying so. For a failure record use [`DssClient::get_log_tail`], which holds far
    /// less and removes the API key.
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
            let exchange = self.exchange(op, Method::GET, url, None).await?;
            keep_tail(exchange).await
        })
        .await
    }

    /// `GET /projects/{pk}/jobs/{id}/log[?activity=]`, reduced to its end as it streams in: the last
    /// `limits.max_lines` non-blank lines, cut from the front to `limits.max_bytes` bytes so that the
    /// final error is kept, with the API key and its Basic form (`base64("key:")`) removed anywhere
    /// in the text before anything is cut, and values after credential markers (`password=`,
    /// `jobTicketSecret=` ...) masked. Memory stays within a few times `limits.max_bytes` plus one
    /// chunk, however long the log; the whole read is bounded by the request timeout like any call.
    /// [`LogTail::failure_message`] picks the line that explains a failure.
    #[tracing::instrument(name = "dss.get_log_tail", level = "debug", skip_all, fields(project = project_key, job_id = job_id))]
    pub async fn get_log_tail(
        &self,
        project_key: &str,
        job_id: &str,
        activity: Option<&str>,
        limits: LogTailLimits,
    ) -> Result<LogTail, Error> {
        let op = Operation::GetLog;
        self.observed(op, async {
            let query: Vec<(&str, &str)> = activity.map(|a| ("activity", a)).into_iter().collect();
            let url = self.url(op, &["projects", project_key, "jobs", job_id, "log"], &query)?;
            self.send_tail(op, url, limits).await
        })
        .await
    }

    // -----------------------------------------------------------------------------------------------

    /// Runs a call and reports its outcome and duration to the observer.
    pub(super) async fn observed<T>(
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
    pub(super) fn url(&self, op: Operation, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, Error> {
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
        read(&self.shared.api_key).clone()
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

    /// Sends one request (see [`Self::exchange`]) and reads its 2xx body, refused over `cap` bytes.
    pub(super) async fn send(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        cap: usize,
    ) -> Result<Answer, Error> {
        let body = self.exchange(op, method, url, body).await?.bytes(cap).await?;
        Ok(Answer { body })
    }

    /// A `GET` of a log, reduced to its end as it streams in (see [`Self::get_log_tail`]).
    pub(super) async fn send_tail(
        &self,
        op: Operation,
        url: Url,
        limits: LogTailLimits,
    ) -> Result<LogTail, Error> {
        let mut exchange = self.exchange(op, Method::GET, url, None).await?;
        let mut tail = TailCollector::new(limits, exchange.key.expose_secret());
        while let Some(chunk) = exchange.chunk().await? {
            tail.push(&chunk);
        }
        Ok(tail.finish())
    }

    /// A `GET` of text, keeping the last [`MAX_LOG_BODY`] bytes of a longer body.
    pub(super) async fn send_keep_tail(&self, op: Operation, url: Url) -> Result<String, Error> {
        keep_tail(self.exchange(op, Method::GET, url, None).await?).await
    }

    /// Takes the budget (within the handle's wait limit), sends the request and checks the status,
    /// all before one deadline (the request timeout) that also bounds reading the body. A 2xx answer
    /// is returned unread, holding its in-flight slot; error statuses become [`Error::Api`] once their
    /// (bounded) body is read. A 429 pauses the connection's calls, for at most
    /// [`MAX_RATE_LIMIT_PAUSE`]. Never retries.
    async fn exchange(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Exchange, Error> {
        let permit = self.take_budget(op).await?;
        let deadline = tokio::time::Instant::now() + self.shared.request_timeout;
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
        let sent = std::time::SystemTime::now();
        let response = tokio::time::timeout_at(deadline, request.send())
            .await
            .map_err(|_| Error::Timeout { operation: op })?
            .map_err(|e| transport(op, e))?;
        if let Some(date) = response
            .headers()
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(super::error::parse_http_date)
        {
            self.shared
                .clock
                .observe(date.timestamp(), sent, std::time::SystemTime::now());
        }
        let status = response.status();
        let mut exchange = Exchange {
            op,
            response,
            _permit: permit,
            deadline,
            key,
        };
        if status.is_success() {
            return Ok(exchange);
        }
        let retry_after = exchange
            .response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        if status.as_u16() == 429 {
            let pause = retry_after
                .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)
                .min(MAX_RATE_LIMIT_PAUSE);
            tracing::warn!(operation = %op, ?pause, "DSS is rate limiting; pausing every call of this connection");
            self.shared
                .limiter
                .pause_until(tokio::time::Instant::now() + pause);
        }
        // An unreadable error body still gives an error with the status.
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = exchange.chunk().await {
            let room = MAX_ERROR_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        let parsed = ErrorBody::parse(&body, exchange.key.expose_secret());
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

    /// An in-flight slot and a token, waiting at most the handle's limit.
    async fn take_budget(&self, op: Operation) -> Result<Permit, Error> {
        match self
            .shared
            .limiter
            .acquire_within(self.max_budget_wait, self.class)
            .await
        {
            Ok((permit, waited)) => {
                if !waited.is_zero() {
                    tracing::debug!(operation = %op, ?waited, "DSS call waited for the request budget");
                    if let Some(observer) = &self.observer {
                        observer.throttled(op, waited);
                    }
                }
                Ok(permit)
            }
            Err(busy) => {
                tracing::debug!(operation = %op, retry_after = ?busy.retry_after, "DSS call refused by the request budget");
                if let Some(observer) = &self.observer {
                    observer.throttled(op, busy.waited);
                }
                Err(Error::Throttled {
                    operation: op,
                    retry_after: busy.retry_after,
                })
            }
        }
    }
}

/// Reads a listing's body to its end, handing each decoded item to `sink`; returns how many items the
/// array had.
async fn stream_listing<L: Listing>(
    mut exchange: Exchange,
    mut listing: L,
    sink: &mut (dyn FnMut(L::Item) -> Result<(), ListingError> + Send),
) -> Result<usize, Error> {
    let op = exchange.op;
    while let Some(chunk) = exchange.chunk().await? {
        listing.push(&chunk, sink).map_err(|e| listing_error(op, e))?;
    }
    listing.finish().map_err(|e| listing_error(op, e))
}

/// The text of a body, keeping its last [`MAX_LOG_BODY`] bytes: older chunks are dropped as newer
/// ones arrive, so at most the cap plus one chunk is held, without copying.
async fn keep_tail(mut exchange: Exchange) -> Result<String, Error> {
    let mut chunks: VecDeque<bytes::Bytes> = VecDeque::new();
    let mut held = 0usize;
    let mut truncated = false;
    while let Some(chunk) = exchange.chunk().await? {
        held += chunk.len();
        chunks.push_back(chunk);
        while let Some(front) = chunks.front() {
            if held - front.len() < MAX_LOG_BODY {
                break;
            }
            held -= front.len();
            chunks.pop_front();
            truncated = true;
        }
    }
    let skip = held.saturating_sub(MAX_LOG_BODY);
    let note = if truncated || skip > 0 {
        format!("[kube-dss: log truncated, only its last {MAX_LOG_BODY} bytes are shown]\n")
    } else {
        String::new()
    };
    let mut body = Vec::with_capacity(note.len() + held - skip);
    body.extend_from_slice(note.as_bytes());
    for (i, chunk) in chunks.drain(..).enumerate() {
        body.extend_from_slice(if i == 0 { &chunk[skip..] } else { &chunk });
    }
    Ok(String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn listing_error(op: Operation, err: ListingError) -> Error {
    match err {
        ListingError::Invalid(detail) => Error::Decode {
            operation: op,
            detail,
        },
        ListingError::TooLarge(limit) => Error::TooLarge { operation: op, limit },
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
