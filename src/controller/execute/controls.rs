//! The run controls of an object: the run-control fields of its spec (every kind has the same ones),
//! its annotations, and the fingerprints its kind computes. Each kind names its spec's fields without
//! `..`, so a new field cannot be forgotten; this turns them into the run core's [`Controls`].

use std::time::Duration;

use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::{
    controller::run::Controls,
    crd::{ABORT_ANNOTATION, ADOPT_ANNOTATION, DeletionPolicy, OnSpecChange, RERUN_ANNOTATION, RetryPolicy},
};

/// The run-control fields of a spec, borrowed.
pub(crate) struct RunFields<'a> {
    pub(crate) rerun_token: &'a Option<String>,
    pub(crate) on_spec_change: &'a Option<OnSpecChange>,
    pub(crate) suspend: &'a Option<bool>,
    pub(crate) active_deadline_seconds: &'a Option<i64>,
    pub(crate) start_deadline_seconds: &'a Option<i64>,
    pub(crate) retry: &'a Option<RetryPolicy>,
    pub(crate) fail_on_warnings: &'a Option<bool>,
    pub(crate) deletion_policy: &'a Option<DeletionPolicy>,
}

/// The controls of an object with these fields and metadata. `fingerprint` gives the run request's
/// fingerprint for the rerun annotation's value; `definition_hash` what a start sends.
pub(crate) fn controls(
    fields: RunFields<'_>,
    meta: &ObjectMeta,
    fingerprint: impl FnOnce(Option<&str>) -> String,
    definition_hash: String,
) -> Controls {
    let annotation = |name: &str| meta.annotations.as_ref().and_then(|a| a.get(name)).cloned();
    let rerun = annotation(RERUN_ANNOTATION);
    let RetryPolicy {
        limit,
        backoff_seconds,
    } = fields.retry.clone().unwrap_or_default();
    let secs = |s: i64| u64::try_from(s).ok().map(Duration::from_secs);
    Controls {
        want: fingerprint(rerun.as_deref()),
        definition_hash,
        rerun_token: fields.rerun_token.clone(),
        rerun_annotation: rerun,
        abort_annotation: annotation(ABORT_ANNOTATION),
        adopt: annotation(ADOPT_ANNOTATION),
        on_spec_change: fields.on_spec_change.unwrap_or_default(),
        suspend: fields.suspend.unwrap_or(false),
        active_deadline: fields.active_deadline_seconds.and_then(secs),
        start_deadline: fields.start_deadline_seconds.and_then(secs),
        retry_limit: limit.unwrap_or(0),
        retry_backoff: secs(backoff_seconds.unwrap_or(60)).unwrap_or_default(),
        fail_on_warnings: fields.fail_on_warnings.unwrap_or(false),
        deletion_policy: fields.deletion_policy.unwrap_or_default(),
        generation: meta.generation,
    }
}

/// The first 8 bytes of the SHA-256 of a canonical JSON text, in hex: the fingerprints of run
/// requests and definitions. (serde_json maps are sorted without `preserve_order`, so the text of a
/// `json!` value is canonical.)
pub(crate) fn digest(canonical: &serde_json::Value) -> String {
    hex::encode(&Sha256::digest(canonical.to_string().as_bytes())[..8])
}
