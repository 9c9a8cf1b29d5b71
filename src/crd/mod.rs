//! The custom resources of the `kube-dss.dev` API group: [`DatasetBuild`] (what to build in DSS and how
//! the run is controlled), [`DSSConnection`] (where a DSS is and how to authenticate) and
//! [`DatasetBuildSchedule`] (a `DatasetBuild` per cron slot).
//!
//! Doc comments on these types are user documentation: they become the CRD's `description`s, which
//! `kubectl explain` shows. Validation that the apiserver can do (OpenAPI and CEL) lives here too, so
//! invalid specs are refused at admission.

// The KubeSchema derive copies each struct into a private module to build its schema, which the
// `unreachable_pub` lint then reports; every type here is the crate's public API.
#![allow(unreachable_pub)]

mod build;
mod connection;
mod run;
mod scenario;
mod schedule;

pub use build::*;
pub use connection::*;
pub use run::*;
pub use scenario::*;
pub use schedule::*;

use kube::CustomResourceExt;

/// The API group of every kube-dss resource.
pub const GROUP: &str = "kube-dss.dev";
/// The finalizer that guards a DSS job of a `DatasetBuild`.
pub const FINALIZER: &str = "kube-dss.dev/abort-job";
/// The finalizer that guards a DSS scenario run of a `ScenarioRun`.
pub const SCENARIO_FINALIZER: &str = "kube-dss.dev/abort-scenario-run";
/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "kube-dss";

/// Every CRD as a multi-document YAML stream (what `kube-dss crds` prints and `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [
        DatasetBuild::crd(),
        DSSConnection::crd(),
        DatasetBuildSchedule::crd(),
        ScenarioRun::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// A reference to a key of a Secret in the resource's own namespace.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.__namespace__)").message(
    "secret references are namespace-local: the Secret must live in the same namespace, so remove 'namespace'"
))]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the referring resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Not supported: references never leave the resource's namespace. Present only so that a
    /// manifest setting it is refused with a clear message instead of the field being dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
