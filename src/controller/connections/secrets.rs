//! Where a connection's credentials come from and how they become a client configuration: the
//! API key and CA read from Secrets (with `get` only) or from the default connection's files, the
//! client settings of a DSSConnection's spec, and the hashes that tell a changed configuration or key.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::{
    controller::error::{Error, Unusable},
    crd::{DSSConnectionSpec, SecretKeyRef},
    dss::{ApiKey, ClientConfig, Limits},
};

/// The value `r` names in a Secret of `namespace` (the referring object's own), read with `get`.
pub(super) async fn read_secret(
    kube: &Client,
    namespace: &str,
    r: &SecretKeyRef,
    field: &str,
) -> Result<String, Error> {
    // References are namespace-local by construction (admission refuses `namespace`), and the
    // lookup below only ever uses the referring object's namespace.
    let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    let secret = match api.get_opt(&r.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(Error::Connection {
                reason: Unusable::SecretNotFound,
                message: format!("Secret {namespace}/{} named by {field} does not exist", r.name),
            });
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(Error::Connection {
                reason: Unusable::SecretForbidden,
                message: format!(
                    "the operator may not read Secret {namespace}/{} named by {field}: is namespace {namespace} \
                     one the operator serves?",
                    r.name
                ),
            });
        }
        Err(e) => return Err(Error::kube("read secret")(e)),
    };
    secret_value(&secret, &r.key).ok_or_else(|| Error::Connection {
        reason: Unusable::SecretKeyNotFound,
        message: format!(
            "Secret {namespace}/{} has no non-empty key {:?} (named by {field})",
            r.name, r.key
        ),
    })
}

/// How a DSSConnection's spec, its API key and CA certificates (read from its Secrets) become a DSS
/// client configuration: URL, API prefix, TLS. Timeouts and limits are the caller's.
pub(crate) fn client_config(
    spec: &DSSConnectionSpec,
    api_key: ApiKey,
    ca_pem: Option<Vec<u8>>,
) -> Result<ClientConfig, url::ParseError> {
    let mut config = ClientConfig::new(url::Url::parse(&spec.url)?, api_key);
    config.prefix = spec.api_prefix.unwrap_or_default();
    config.ca_pem = ca_pem;
    config.insecure_skip_verify = spec
        .tls
        .as_ref()
        .and_then(|t| t.insecure_skip_verify)
        .unwrap_or(false);
    Ok(config)
}

/// The value of one key of a Secret, trimmed; `None` when missing or empty.
pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.trim().to_string())
        })
        .filter(|v| !v.is_empty())
}

pub(super) async fn read_key_file(path: &std::path::Path) -> Result<String, Error> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Error::Connection {
            reason: Unusable::ApiKeyFileUnreadable,
            message: format!(
                "cannot read the default connection's API key file {}: {e}",
                path.display()
            ),
        })?;
    let key = text.trim().to_string();
    if key.is_empty() {
        return Err(Error::Connection {
            reason: Unusable::ApiKeyFileEmpty,
            message: format!(
                "the default connection's API key file {} is empty",
                path.display()
            ),
        });
    }
    Ok(key)
}

pub(super) fn limits(spec: &DSSConnectionSpec) -> Limits {
    let mut limits = Limits::default();
    if let Some(l) = &spec.limits {
        if let Some(rps) = l.requests_per_second {
            limits.requests_per_second = f64::from(rps);
            limits.burst = u32::try_from(rps).unwrap_or(1).max(1);
        }
        if let Some(n) = l.max_in_flight {
            limits.max_in_flight = usize::try_from(n).unwrap_or(1).max(1);
        }
    }
    limits
}

pub(super) fn spec_hash(spec: &DSSConnectionSpec) -> String {
    // The spec holds no secret values (only references), so hashing its JSON is safe.
    let text = serde_json::to_string(spec).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub(super) fn sha(bytes: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(bytes.as_ref()).into()
}
