//! The operator's error type. One `category()` feeds the Warning event reason, the
//! `reconcile_errors_total{category}` metric label and condition reasons, so all three agree.

use std::time::Duration;

use crate::dss;

/// What went wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {operation}")]
    Kube {
        /// What the operator was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// A DSS API call failed.
    #[error("DSS call {operation} failed")]
    Dss {
        /// What the operator was doing.
        operation: &'static str,
        /// The cause, with DSS's status and errorType.
        #[source]
        source: Box<dss::Error>,
    },

    /// The DSSConnection (or default connection) cannot be used yet.
    #[error("{message}")]
    Connection {
        /// A PascalCase reason: `ConnectionNotFound`, `SecretNotFound`, `SecretKeyMissing`, ...
        reason: &'static str,
        /// What the user should fix.
        message: String,
    },

    /// The finalizer is kept while DSS confirms that the job was aborted.
    #[error("waiting for DSS to confirm that job {job_id} is aborted")]
    AbortPending {
        /// The DSS job.
        job_id: String,
        /// When to look again.
        retry_after: Duration,
    },

    /// A DatasetBuildSchedule cannot create a slot's build for a reason the user must resolve.
    #[error("{message}")]
    Schedule {
        /// A PascalCase reason, e.g. `BuildNameTaken`.
        reason: &'static str,
        /// What is wrong and what to do.
        message: String,
    },

    /// The kube-runtime finalizer helper failed outside our code.
    #[error("finalizer handling failed: {0}")]
    Finalizer(String),
}

impl Error {
    /// A PascalCase category from a closed set: metric label, event reason, condition reason.
    pub(crate) fn category(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "KubeConflict",
                kube::Error::Api(status) if status.code == 403 => "KubeForbidden",
                _ => "KubeApi",
            },
            Self::Dss { source, .. } => source.category(),
            Self::Connection { reason, .. } | Self::Schedule { reason, .. } => reason,
            Self::AbortPending { .. } => "AbortPending",
            Self::Finalizer(_) => "Finalizer",
        }
    }

    /// Wraps a kube error with what the operator was doing.
    pub(crate) fn kube(operation: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { operation, source }
    }

    /// Wraps a DSS error with what the operator was doing.
    pub(crate) fn dss(operation: &'static str) -> impl FnOnce(dss::Error) -> Self {
        move |source| Self::Dss {
            operation,
            source: Box::new(source),
        }
    }

    /// A resourceVersion precondition failed: another writer (or a stale cache) got there first.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube { source: kube::Error::Api(s), .. } if s.code == 409)
    }

    /// The whole cause chain as one line, for event notes and conditions. Never contains secrets:
    /// DSS errors never carry the API key and kube errors never carry Secret data.
    pub(crate) fn chain(&self) -> String {
        chain(self)
    }
}

/// An error and its causes as one line (`outer: cause: root cause`).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Flattens kube-runtime's finalizer error so the category of our own error survives.
pub(crate) fn from_finalizer(err: kube::runtime::finalizer::Error<Error>) -> Error {
    use kube::runtime::finalizer::Error as F;
    match err {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e,
        F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Kube {
            operation: "patch finalizer",
            source: e,
        },
        other => Error::Finalizer(other.to_string()),
    }
}
