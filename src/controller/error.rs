//! The operator's error type. One category ([`Error::class`], spelled by [`Category::as_str`]) feeds
//! the Warning event reason, the `reconcile_errors_total{category}` metric label and condition
//! reasons, so all three agree.

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
        /// Why.
        reason: Unusable,
        /// What the user should fix.
        message: String,
    },

    /// The finalizer is kept while DSS confirms that the run was aborted.
    #[error("waiting for DSS to confirm that {run} is aborted")]
    AbortPending {
        /// The run, as its kind names it (`DSS job ...`).
        run: String,
        /// When to look again.
        retry_after: Duration,
    },

    /// A DatasetBuildSchedule cannot create a slot's build: a build of that name exists and is not
    /// the schedule's.
    #[error("{message}")]
    BuildNameTaken {
        /// What is wrong and what to do.
        message: String,
    },

    /// The kube-runtime finalizer helper failed outside our code.
    #[error("finalizer handling failed: {0}")]
    Finalizer(String),
}

impl Error {
    /// The category, from a closed set: metric label, event reason, condition reason.
    pub(crate) fn class(&self) -> Category {
        match self {
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => Category::KubeConflict,
                kube::Error::Api(status) if status.code == 403 => Category::KubeForbidden,
                _ => Category::KubeApi,
            },
            Self::Dss { source, .. } => Category::Dss(source.class()),
            Self::Connection { reason, .. } => Category::Connection(*reason),
            Self::BuildNameTaken { .. } => Category::BuildNameTaken,
            Self::AbortPending { .. } => Category::AbortPending,
            Self::Finalizer(_) => Category::Finalizer,
        }
    }

    /// The PascalCase name of the category.
    pub(crate) fn category(&self) -> &'static str {
        self.class().as_str()
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

/// The category of an error (and of what a run waits for when a call failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Category {
    /// A write lost a resourceVersion race (409).
    KubeConflict,
    /// The operator's RBAC does not allow the call (403).
    KubeForbidden,
    /// Any other Kubernetes API failure.
    KubeApi,
    /// A DSS call failed, by the DSS error's own category.
    Dss(dss::Category),
    /// The connection cannot be used.
    Connection(Unusable),
    /// A schedule's build name belongs to another object.
    BuildNameTaken,
    /// The finalizer is kept while DSS confirms an abort.
    AbortPending,
    /// kube-runtime's finalizer helper failed.
    Finalizer,
}

impl Category {
    /// The PascalCase name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::KubeConflict => "KubeConflict",
            Self::KubeForbidden => "KubeForbidden",
            Self::KubeApi => "KubeApi",
            Self::Dss(c) => c.as_str(),
            Self::Connection(u) => u.as_str(),
            Self::BuildNameTaken => "BuildNameTaken",
            Self::AbortPending => "AbortPending",
            Self::Finalizer => "Finalizer",
        }
    }
}

/// Why a connection cannot be used: the reason of a DSSConnection's `Ready=False`, and of a run's
/// condition while it waits for its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Unusable {
    /// The named DSSConnection does not exist.
    ConnectionNotFound,
    /// Its URL cannot be used.
    InvalidUrl,
    /// No connection is named and the operator has no default connection.
    NoConnection,
    /// The CA file of the default connection cannot be read.
    CaFileUnreadable,
    /// The connection's settings cannot make a client.
    InvalidConnection,
    /// The API key's Secret does not exist.
    SecretNotFound,
    /// The operator may not read the API key's Secret.
    SecretForbidden,
    /// The Secret has no such key.
    SecretKeyNotFound,
    /// The default connection's API key file cannot be read.
    ApiKeyFileUnreadable,
    /// The default connection's API key file is empty.
    ApiKeyFileEmpty,
    /// The connection is not https:// and the operator requires it (`--require-https`).
    HttpsRequired,
    /// The connection skips TLS verification and the operator refuses that
    /// (`--refuse-insecure-connections`).
    InsecureConnectionRefused,
}

impl Unusable {
    /// The PascalCase reason.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionNotFound => "ConnectionNotFound",
            Self::InvalidUrl => "InvalidURL",
            Self::NoConnection => "NoConnection",
            Self::CaFileUnreadable => "CAFileUnreadable",
            Self::InvalidConnection => "InvalidConnection",
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretForbidden => "SecretForbidden",
            Self::SecretKeyNotFound => "SecretKeyNotFound",
            Self::ApiKeyFileUnreadable => "APIKeyFileUnreadable",
            Self::ApiKeyFileEmpty => "APIKeyFileEmpty",
            Self::HttpsRequired => "HttpsRequired",
            Self::InsecureConnectionRefused => "InsecureConnectionRefused",
        }
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
