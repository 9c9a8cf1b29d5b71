//! Configuration of a [`DssClient`](super::DssClient): where DSS is, how to authenticate, TLS, timeouts
//! and the request budget.

use std::{fmt, time::Duration};

use url::Url;

use super::Error;

/// A DSS API key. It is a secret: `Debug` and `Display` print `ApiKey(***)`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key as given (no trimming; see [`ApiKey::from_file_contents`]).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Wraps a key read from a file or a Secret: surrounding whitespace (a trailing newline, typically)
    /// is removed.
    pub fn from_file_contents(contents: &str) -> Self {
        Self(contents.trim().to_owned())
    }

    /// The key itself. Only the request code and the redaction of server messages need it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the key is empty (an empty key can never authenticate).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// The path prefix of the public API. DSS serves both.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum ApiPrefix {
    /// `/public/api`: the documented base path (default).
    #[default]
    #[serde(rename = "/public/api")]
    PublicApi,
    /// `/dip/publicapi`: the path the official Python client uses.
    #[serde(rename = "/dip/publicapi")]
    DipPublicApi,
}

impl std::str::FromStr for ApiPrefix {
    type Err = String;
    /// The prefix itself (`/public/api`) or its name (`public-api`, as command lines spell it).
    fn from_str(s: &str) -> Result<Self, String> {
        [ApiPrefix::PublicApi, ApiPrefix::DipPublicApi]
            .into_iter()
            .find(|p| p.as_str() == s || p.name() == s)
            .ok_or_else(|| format!("unknown API prefix {s}"))
    }
}

impl ApiPrefix {
    /// The prefix, starting with `/` and without a trailing slash.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiPrefix::PublicApi => "/public/api",
            ApiPrefix::DipPublicApi => "/dip/publicapi",
        }
    }

    /// Its name on a command line.
    pub fn name(self) -> &'static str {
        match self {
            ApiPrefix::PublicApi => "public-api",
            ApiPrefix::DipPublicApi => "dip-publicapi",
        }
    }
}

/// The request budget of one client (shared by its clones): a token bucket plus a cap on concurrent
/// requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Sustained request rate (tokens added per second). Must be finite and positive.
    pub requests_per_second: f64,
    /// Bucket size: how many requests may be sent at once after an idle period. At least 1.
    pub burst: u32,
    /// How many requests may be in flight at the same time. At least 1.
    pub max_in_flight: usize,
}

impl Limits {
    /// Limits with the given rate and in-flight cap, and a burst of `ceil(requests_per_second)`.
    pub fn new(requests_per_second: f64, max_in_flight: usize) -> Self {
        Self {
            requests_per_second,
            burst: default_burst(requests_per_second),
            max_in_flight,
        }
    }

    /// Checks the limits; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.requests_per_second.is_finite() || self.requests_per_second <= 0.0 {
            return Err(Error::InvalidConfig(format!(
                "requests_per_second must be a positive number, got {}",
                self.requests_per_second
            )));
        }
        if self.burst == 0 {
            return Err(Error::InvalidConfig("burst must be at least 1".to_owned()));
        }
        if self.max_in_flight == 0 {
            return Err(Error::InvalidConfig(
                "max_in_flight must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// The same limits with invalid fields replaced: a bad rate by the default rate, a zero burst or
    /// in-flight cap by 1. Used where a change cannot be refused (run-time updates).
    pub fn sanitized(self) -> Self {
        let requests_per_second = if self.requests_per_second.is_finite() && self.requests_per_second > 0.0 {
            self.requests_per_second
        } else {
            DEFAULT_REQUESTS_PER_SECOND
        };
        Self {
            requests_per_second,
            burst: self.burst.max(1),
            max_in_flight: self.max_in_flight.max(1),
        }
    }
}

const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;

fn default_burst(requests_per_second: f64) -> u32 {
    if requests_per_second.is_finite() && requests_per_second > 0.0 {
        // `as` saturates for huge rates; a burst above u32::MAX is meaningless anyway.
        (requests_per_second.ceil() as u32).max(1)
    } else {
        1
    }
}

impl Default for Limits {
    /// 10 requests per second, a burst of 10, 8 requests in flight.
    fn default() -> Self {
        Self::new(DEFAULT_REQUESTS_PER_SECOND, 8)
    }
}

/// Everything a [`DssClient`](super::DssClient) needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where DSS is, e.g. `https://dss.example.com:11200`. A path is kept (for DSS behind a reverse proxy
    /// under a sub-path); user info, query and fragment are refused.
    pub base_url: Url,
    /// The API key, sent as HTTP Basic user name with an empty password.
    pub api_key: ApiKey,
    /// The public API path prefix.
    pub prefix: ApiPrefix,
    /// Extra trusted CA certificates (PEM bundle), added to the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate. For sandboxes only.
    pub insecure_skip_verify: bool,
    /// Overall timeout of one request, from connecting to the end of the response body. Default 30 s.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// The request budget.
    pub limits: Limits,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl ClientConfig {
    /// A configuration with defaults: `/public/api`, system roots, 30 s request timeout, 5 s connect
    /// timeout, default [`Limits`], `kube-dss/<version>` user agent.
    pub fn new(base_url: Url, api_key: ApiKey) -> Self {
        Self {
            base_url,
            api_key,
            prefix: ApiPrefix::default(),
            ca_pem: None,
            insecure_skip_verify: false,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            user_agent: format!("kube-dss/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Checks what can be checked without a network call.
    pub fn validate(&self) -> Result<(), Error> {
        match self.base_url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Error::InvalidConfig(format!(
                    "DSS URL must use http or https, not {other:?}"
                )));
            }
        }
        if self.base_url.host_str().is_none_or(str::is_empty) {
            return Err(Error::InvalidConfig("DSS URL has no host".to_owned()));
        }
        // Credentials in the URL would end up in error messages (transport errors quote the URL).
        if !self.base_url.username().is_empty() || self.base_url.password().is_some() {
            return Err(Error::InvalidConfig(
                "DSS URL must not contain credentials; pass the API key separately".to_owned(),
            ));
        }
        if self.base_url.query().is_some() || self.base_url.fragment().is_some() {
            return Err(Error::InvalidConfig(
                "DSS URL must not have a query or fragment".to_owned(),
            ));
        }
        if self.api_key.is_empty() {
            return Err(Error::InvalidConfig("the API key is empty".to_owned()));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "timeouts must be greater than zero".to_owned(),
            ));
        }
        self.limits.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_never_printed() {
        let key = ApiKey::from("super-secret-key-123");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(format!("{key}"), "ApiKey(***)");
        let config = ClientConfig::new(Url::parse("https://dss.example.com").unwrap(), key);
        let debug = format!("{config:?}");
        assert!(!debug.contains("super-secret-key-123"), "{debug}");
        assert!(debug.contains("ApiKey(***)"));
    }

    #[test]
    fn key_from_file_is_trimmed() {
        assert_eq!(ApiKey::from_file_contents("  abc\n").expose_secret(), "abc");
    }

    #[test]
    fn default_limits_follow_the_contract() {
        let limits = Limits::default();
        assert_eq!(limits.requests_per_second, 10.0);
        assert_eq!(limits.burst, 10);
        assert_eq!(limits.max_in_flight, 8);
        assert_eq!(Limits::new(2.5, 1).burst, 3);
        assert_eq!(Limits::new(0.2, 1).burst, 1);
    }

    #[test]
    fn invalid_limits_are_refused_or_sanitized() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let limits = Limits {
                requests_per_second: bad,
                burst: 1,
                max_in_flight: 1,
            };
            assert!(limits.validate().is_err());
            assert_eq!(limits.sanitized().requests_per_second, 10.0);
        }
        let limits = Limits {
            requests_per_second: 1.0,
            burst: 0,
            max_in_flight: 0,
        }
        .sanitized();
        assert_eq!((limits.burst, limits.max_in_flight), (1, 1));
    }

    #[test]
    fn config_validation() {
        let ok = ClientConfig::new(Url::parse("http://127.0.0.1:1").unwrap(), ApiKey::from("k"));
        assert!(ok.validate().is_ok());
        for url in ["ftp://h", "http://user:pw@h", "http://h/?a=b", "http://h/#x"] {
            let config = ClientConfig::new(Url::parse(url).unwrap(), ApiKey::from("k"));
            assert!(config.validate().is_err(), "{url}");
        }
        let empty = ClientConfig::new(Url::parse("http://h").unwrap(), ApiKey::from(""));
        assert!(empty.validate().is_err());
        let err = ClientConfig::new(Url::parse("http://u:supersecret@h").unwrap(), ApiKey::from("k"))
            .validate()
            .unwrap_err();
        assert!(!err.to_string().contains("supersecret"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(ApiPrefix::default().as_str(), "/public/api");
        assert_eq!(ApiPrefix::DipPublicApi.as_str(), "/dip/publicapi");
    }
}
