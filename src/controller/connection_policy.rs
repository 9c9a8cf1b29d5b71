//! The connections a cluster may forbid (`--refuse-insecure-connections`, `--require-https`): a pure
//! verdict on a connection's URL and TLS settings, and the reason and message a user then sees (the
//! DSSConnection's `Ready=False`, the Reconciling condition of the objects that use it).

use super::{
    connections::{ConnKey, Connections},
    error::{Error, Unusable},
};
use crate::crd::DSSConnectionSpec;

/// What connections this operator refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnectionPolicy {
    /// Refuse connections that skip TLS verification.
    pub(crate) refuse_insecure: bool,
    /// Refuse URLs that are not `https://`.
    pub(crate) require_https: bool,
}

/// A way a connection breaks the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The URL's scheme is not https (the scheme named).
    NotHttps(String),
    /// TLS verification is skipped.
    InsecureSkipVerify,
}

impl ConnectionPolicy {
    /// How a connection to `url`, skipping TLS verification or not, breaks the policy (nothing for an
    /// unparsable URL: that is reported as such where the client is built).
    pub(crate) fn violations(&self, url: &str, insecure_skip_verify: bool) -> Vec<Violation> {
        let mut found = Vec::new();
        if self.require_https
            && let Ok(url) = url::Url::parse(url)
            && url.scheme() != "https"
        {
            found.push(Violation::NotHttps(url.scheme().to_string()));
        }
        if self.refuse_insecure && insecure_skip_verify {
            found.push(Violation::InsecureSkipVerify);
        }
        found
    }

    /// Whether the DSSConnection `key` with `spec` may be used; the refusal says why and what to do.
    pub(crate) fn admit(&self, key: &ConnKey, spec: &DSSConnectionSpec) -> Result<(), Error> {
        let insecure = spec
            .tls
            .as_ref()
            .and_then(|t| t.insecure_skip_verify)
            .unwrap_or(false);
        let violations = self.violations(&spec.url, insecure);
        let Some(first) = violations.first() else {
            return Ok(());
        };
        let reason = match first {
            Violation::NotHttps(_) => Unusable::HttpsRequired,
            Violation::InsecureSkipVerify => Unusable::InsecureConnectionRefused,
        };
        let what: Vec<String> = violations
            .iter()
            .map(|v| match v {
                // The URL itself is not repeated: a user may have put more in it than a host.
                Violation::NotHttps(scheme) => format!(
                    "its spec.url is an {scheme}:// URL and this operator only connects to DSS over \
                     https:// (--require-https): use DSS's https:// address"
                ),
                Violation::InsecureSkipVerify => {
                    "it sets spec.tls.insecureSkipVerify: true and this operator \
                     refuses connections that skip TLS verification (--refuse-insecure-connections): remove \
                     it, and name DSS's CA in spec.tls.caSecretRef if its certificate is not publicly trusted"
                        .to_string()
                }
            })
            .collect();
        Err(Error::Connection {
            reason,
            message: format!("{key} is refused: {}", what.join("; and ")),
        })
    }
}

// The policy is set once, where the registry is built; kept here so the registry itself only
// consults it.
impl Connections {
    /// The registry, refusing the connections `policy` forbids.
    pub(crate) fn with_policy(mut self, policy: ConnectionPolicy) -> Self {
        self.policy = policy;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TlsConfig;

    fn spec(url: &str, insecure: Option<bool>) -> DSSConnectionSpec {
        let mut spec: DSSConnectionSpec = serde_json::from_value(serde_json::json!({
            "url": url,
            "apiKeySecretRef": {"name": "dss-key", "key": "apiKey"},
        }))
        .unwrap();
        spec.tls = insecure.map(|i| TlsConfig {
            insecure_skip_verify: Some(i),
            ..TlsConfig::default()
        });
        spec
    }

    fn key() -> ConnKey {
        ConnKey::Named {
            namespace: "team-a".into(),
            name: "dss".into(),
        }
    }

    fn refusal(policy: ConnectionPolicy, spec: &DSSConnectionSpec) -> Option<(&'static str, String)> {
        match policy.admit(&key(), spec) {
            Ok(()) => None,
            Err(Error::Connection { reason, message }) => Some((reason.as_str(), message)),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_policy_refuses_what_its_flags_name_and_nothing_else() {
        let off = ConnectionPolicy::default();
        let insecure = ConnectionPolicy {
            refuse_insecure: true,
            ..off
        };
        let https = ConnectionPolicy {
            require_https: true,
            ..off
        };
        let both = ConnectionPolicy {
            refuse_insecure: true,
            require_https: true,
        };
        let plain = spec("http://dss.internal:11200", None);
        let skipping = spec("https://dss.example.com", Some(true));
        let verified = spec("https://dss.example.com", Some(false));
        for s in [&plain, &skipping, &verified] {
            assert_eq!(refusal(off, s), None, "without the flags nothing is refused");
        }
        assert_eq!(refusal(both, &verified), None);
        assert_eq!(refusal(insecure, &plain), None);
        assert_eq!(refusal(https, &skipping), None);

        let (reason, message) = refusal(insecure, &skipping).unwrap();
        assert_eq!(reason, "InsecureConnectionRefused");
        assert!(
            message.starts_with(
                "DSSConnection team-a/dss is refused: it sets spec.tls.insecureSkipVerify: true"
            )
        );
        assert!(
            message.contains("--refuse-insecure-connections") && message.contains("spec.tls.caSecretRef")
        );

        let (reason, message) = refusal(https, &plain).unwrap();
        assert_eq!(reason, "HttpsRequired");
        assert!(message.contains("spec.url is an http:// URL") && message.contains("--require-https"));
        assert!(
            !message.contains("dss.internal"),
            "the URL is not repeated: {message}"
        );

        let (reason, message) = refusal(both, &spec("http://dss", Some(true))).unwrap();
        assert_eq!(reason, "HttpsRequired");
        assert!(message.contains("--require-https") && message.contains("--refuse-insecure-connections"));
        // An unparsable URL is left to the client's own error.
        assert_eq!(refusal(both, &spec("not a url", None)), None);
    }
}
