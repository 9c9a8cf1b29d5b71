//! `DSSConnection`: where a DSS is, how to authenticate, and the API budget its builds share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::dss::ApiPrefix;

use super::SecretKeyRef;

/// Where a Dataiku DSS instance is and how to authenticate to it. DatasetBuilds of the same namespace
/// refer to it with `spec.connectionRef`.
// Several printer columns repeat `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-dss.dev",
    version = "v1alpha1",
    kind = "DSSConnection",
    plural = "dssconnections",
    namespaced,
    status = "DSSConnectionStatus",
    shortname = "dssconn",
    category = "dss",
    doc = "DSSConnection says where a Dataiku DSS instance is, which API key to use, and the request budget shared by every build that uses it.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DSSConnectionSpec {
    /// Base URL of DSS, for example `https://dss.example.com:11200` (no API path).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(
        "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''"
    ).message("spec.url must be an http:// or https:// URL with a host, e.g. https://dss.example.com:11200"))]
    pub url: String,

    /// The Secret key holding the DSS API key, in this namespace.
    pub api_key_secret_ref: SecretKeyRef,

    /// API path prefix: `/public/api` (default, documented by Dataiku) or `/dip/publicapi` (the one
    /// the official Python client uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_prefix: Option<ApiPrefix>,

    /// TLS settings for https URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,

    /// The API budget shared by every build that uses this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ConnectionLimits>,
}

/// TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.caSecretRef) && has(self.insecureSkipVerify) && self.insecureSkipVerify)").message(
    "tls.caSecretRef and tls.insecureSkipVerify=true contradict each other: set only one"
))]
pub struct TlsConfig {
    /// A Secret key (in this namespace) holding PEM CA certificates to trust for DSS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Skip certificate verification. Only for sandboxes. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Request budget of a connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionLimits {
    /// Sustained DSS requests per second for all builds of this connection. Default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub requests_per_second: Option<i32>,
    /// Concurrent DSS requests for all builds of this connection. Default: 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_in_flight: Option<i32>,
}

/// The observed state of a DSSConnection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DSSConnectionStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The identity DSS reports for the API key (`authIdentifier`), once authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_identifier: Option<String>,
    /// `Ready` is True once an authenticated call succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
