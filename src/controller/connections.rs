//! DSS connections: one shared [`DssClient`] per `DSSConnection` (and one for the operator's default
//! connection, whatever the number of watched namespaces), so every build of a connection draws on
//! the same request budget. Secrets are read with `get` only (the operator never lists or watches
//! Secrets). Credentials follow their Secret: before a job start or a deletion's abort the key (and
//! the CA) is read again, for other calls at most [`SECRET_TTL`] after the last read; a deleted Secret drops the
//! cached client at once, a changed one is handed to the shared client, and a refused key is re-read
//! at once. A deleted DSSConnection's client and budget are dropped.

mod secrets;

pub(crate) use secrets::{client_config, secret_value};
use secrets::{limits, read_key_file, read_secret, sha, spec_hash};

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{Api, Client, runtime::reflector::ObjectRef};

use super::{
    error::{Error, Unusable},
    metrics::DssObserver,
    stores::Stores,
};
use crate::{
    crd::{ConnectionRef, DSSConnection, DSSConnectionSpec},
    dss::{self, ApiKey, ClientConfig, DssClient, Limits},
    sync::lock,
};

/// Which connection a build uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ConnKey {
    /// The operator's default connection (flags).
    Default,
    /// A DSSConnection.
    Named {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl std::fmt::Display for ConnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => write!(f, "the default connection"),
            Self::Named { namespace, name } => write!(f, "DSSConnection {namespace}/{name}"),
        }
    }
}

/// The operator's default connection, from flags.
#[derive(Clone, Debug)]
pub(crate) struct DefaultConnection {
    /// DSS base URL.
    pub(crate) url: url::Url,
    /// File holding the API key (re-read when it changes).
    pub(crate) api_key_file: PathBuf,
    /// API prefix.
    pub(crate) prefix: dss::ApiPrefix,
    /// Optional CA bundle file.
    pub(crate) ca_file: Option<PathBuf>,
    /// Skip TLS verification.
    pub(crate) insecure_skip_verify: bool,
    /// Request budget.
    pub(crate) limits: Limits,
}

/// How long a key read from its Secret (or file) is used before it is read again, for calls other
/// than a job start (which always reads it first).
pub(crate) const SECRET_TTL: Duration = Duration::from_secs(5);

/// How often connections that no longer exist are looked for and dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// How fresh the credentials of a resolved connection must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Read within [`SECRET_TTL`].
    Recent,
    /// Read now: before a call that cannot be taken back (a job start).
    Now,
}

struct Entry {
    client: DssClient,
    /// Hash of everything that shapes the client but the key: the connection's spec and its CA.
    config_hash: String,
    /// When the key was last read.
    read_at: Instant,
    /// Hash of the key in use, to notice rotations without keeping the key around.
    key_hash: [u8; 32],
    auth_identifier: Option<String>,
    start_gate: Arc<tokio::sync::Semaphore>,
}

/// A resolved connection.
#[derive(Clone)]
pub(crate) struct Resolved {
    /// Which connection.
    pub(crate) key: ConnKey,
    /// Its shared client.
    pub(crate) client: DssClient,
    /// Bounds the job starts of this connection waiting for its budget, so that starts queue in the
    /// controller (requeued) and the polls of running jobs are not stuck behind a backlog of starts.
    pub(crate) start_gate: Arc<tokio::sync::Semaphore>,
}

/// The registry of connections.
pub(crate) struct Connections {
    kube: Client,
    /// The DSSConnections of every watch scope.
    stores: Stores<DSSConnection>,
    default: Option<DefaultConnection>,
    entries: Mutex<HashMap<ConnKey, Entry>>,
    swept: Mutex<Instant>,
    observer: Arc<DssObserver>,
    request_timeout: Duration,
    /// The longest a call waits for its connection's budget before it is refused (and its object
    /// requeued): one throttled or paused DSS never holds the reconcilers of the others.
    max_budget_wait: Duration,
    /// The connections this operator refuses (set with `with_policy`).
    pub(super) policy: super::connection_policy::ConnectionPolicy,
}

impl Connections {
    /// Creates the registry.
    pub(crate) fn new(
        kube: Client,
        default: Option<DefaultConnection>,
        observer: Arc<DssObserver>,
        request_timeout: Duration,
        max_budget_wait: Duration,
    ) -> Self {
        Self {
            kube,
            stores: Stores::default(),
            default,
            entries: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
            observer,
            request_timeout,
            max_budget_wait,
            policy: Default::default(),
        }
    }

    /// Adds a watch scope's cache of DSSConnections.
    pub(crate) fn watch(&self, store: kube::runtime::reflector::Store<DSSConnection>) {
        self.stores.add(store);
    }

    /// The connection a build in `namespace` refers to, with its shared client.
    pub(crate) async fn resolve(
        &self,
        namespace: &str,
        conn_ref: Option<&ConnectionRef>,
        fresh: Freshness,
    ) -> Result<Resolved, Error> {
        self.sweep();
        match conn_ref {
            Some(r) => {
                let conn = match self.stores.get(&ObjectRef::new(&r.name).within(namespace)) {
                    Some(conn) => Some(conn.spec.clone()),
                    // The watch cache may not have synced yet (right after a start): ask the
                    // apiserver before calling the connection missing.
                    None => Api::<DSSConnection>::namespaced(self.kube.clone(), namespace)
                        .get_opt(&r.name)
                        .await
                        .map_err(Error::kube("read connection"))?
                        .map(|c| c.spec),
                };
                let Some(spec) = conn else {
                    self.forget(&ConnKey::Named {
                        namespace: namespace.to_string(),
                        name: r.name.clone(),
                    });
                    return Err(Error::Connection {
                        reason: Unusable::ConnectionNotFound,
                        message: format!(
                            "DSSConnection {namespace}/{} does not exist; create it or fix spec.connectionRef",
                            r.name
                        ),
                    });
                };
                self.resolve_named(namespace, &r.name, &spec, fresh).await
            }
            None => self.resolve_default(fresh).await,
        }
    }

    /// Resolves a DSSConnection by its spec (the connection reconciler passes it directly).
    pub(crate) async fn resolve_named(
        &self,
        namespace: &str,
        name: &str,
        spec: &DSSConnectionSpec,
        fresh: Freshness,
    ) -> Result<Resolved, Error> {
        let key = ConnKey::Named {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.policy.admit(&key, spec)?;
        let spec_hash = spec_hash(spec);
        if let Some(resolved) = self.cached(&key, |h| h.starts_with(&spec_hash), fresh) {
            return Ok(resolved);
        }
        let read = async {
            let api_key =
                read_secret(&self.kube, namespace, &spec.api_key_secret_ref, "apiKeySecretRef").await?;
            let ca_pem = match spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
                Some(r) => Some(
                    read_secret(&self.kube, namespace, r, "tls.caSecretRef")
                        .await?
                        .into_bytes(),
                ),
                None => None,
            };
            Ok::<_, Error>((api_key, ca_pem))
        };
        let (api_key, ca_pem) = match read.await {
            Ok(read) => read,
            Err(e) => {
                // A Secret that is gone (or unreadable) revokes the cached key at once.
                if matches!(e, Error::Connection { .. }) {
                    self.forget(&key);
                }
                return Err(e);
            }
        };
        let hash = format!(
            "{spec_hash}|{}",
            hex::encode(sha(ca_pem.as_deref().unwrap_or_default()))
        );
        let mut config =
            client_config(spec, ApiKey::new(api_key.clone()), ca_pem).map_err(|e| Error::Connection {
                reason: Unusable::InvalidUrl,
                message: format!("spec.url of {key} is not a URL: {e}"),
            })?;
        config.request_timeout = self.request_timeout;
        config.limits = limits(spec);
        self.install(key, hash, config, &api_key)
    }

    async fn resolve_default(&self, fresh: Freshness) -> Result<Resolved, Error> {
        let Some(default) = &self.default else {
            return Err(Error::Connection {
                reason: Unusable::NoConnection,
                message: "spec.connectionRef is not set and the operator has no default connection \
                          (--dss-url / --dss-api-key-file): set spec.connectionRef"
                    .to_string(),
            });
        };
        let key = ConnKey::Default;
        let spec_hash = format!("{}|{:?}|{:?}", default.url, default.prefix, default.ca_file);
        if let Some(resolved) = self.cached(&key, |h| h.starts_with(&spec_hash), fresh) {
            return Ok(resolved);
        }
        let api_key = match read_key_file(&default.api_key_file).await {
            Ok(k) => k,
            Err(e) => {
                self.forget(&key);
                return Err(e);
            }
        };
        let ca_pem = match &default.ca_file {
            Some(path) => Some(tokio::fs::read(path).await.map_err(|e| Error::Connection {
                reason: Unusable::CaFileUnreadable,
                message: format!(
                    "cannot read the default connection's CA file {}: {e}",
                    path.display()
                ),
            })?),
            None => None,
        };
        let hash = format!(
            "{spec_hash}|{}",
            hex::encode(sha(ca_pem.as_deref().unwrap_or_default()))
        );
        let mut config = ClientConfig::new(default.url.clone(), ApiKey::new(api_key.clone()));
        config.prefix = default.prefix;
        config.ca_pem = ca_pem;
        config.insecure_skip_verify = default.insecure_skip_verify;
        config.request_timeout = self.request_timeout;
        config.limits = default.limits;
        self.install(key, hash, config, &api_key)
    }

    /// The cached client of `key` when its configuration still matches and its key was read
    /// recently enough.
    fn cached(&self, key: &ConnKey, matches: impl Fn(&str) -> bool, fresh: Freshness) -> Option<Resolved> {
        lock(&self.entries)
            .get(key)
            .filter(|e| matches(&e.config_hash))
            .filter(|e| fresh == Freshness::Recent && e.read_at.elapsed() < SECRET_TTL)
            .map(|e| Resolved {
                key: key.clone(),
                client: e.client.clone(),
                start_gate: e.start_gate.clone(),
            })
    }

    /// Drops the clients of DSSConnections that no longer exist (deleted objects are not
    /// reconciled, so their clients are found here), at most every [`SWEEP_EVERY`].
    fn sweep(&self) {
        {
            let mut swept = lock(&self.swept);
            if swept.elapsed() < SWEEP_EVERY {
                return;
            }
            *swept = Instant::now();
        }
        let live: std::collections::HashSet<ConnKey> = self
            .stores
            .state()
            .iter()
            .map(|c| ConnKey::Named {
                namespace: kube::ResourceExt::namespace(c.as_ref()).unwrap_or_default(),
                name: kube::ResourceExt::name_any(c.as_ref()),
            })
            .collect();
        lock(&self.entries).retain(|k, _| *k == ConnKey::Default || live.contains(k));
    }

    fn install(
        &self,
        key: ConnKey,
        hash: String,
        config: ClientConfig,
        api_key: &str,
    ) -> Result<Resolved, Error> {
        let gate_size = (config.limits.max_in_flight / 2).max(1);
        let key_hash = sha(api_key);
        let mut entries = lock(&self.entries);
        // Reconciles that missed the cache together all get here: the first one's client is the
        // connection's, so that every build draws on one budget (a client each would multiply it).
        // The key just read goes to the shared client when it changed.
        if let Some(e) = entries.get_mut(&key).filter(|e| e.config_hash == hash) {
            if e.key_hash != key_hash {
                e.client.set_api_key(ApiKey::new(api_key.to_string()));
                e.key_hash = key_hash;
                e.auth_identifier = None;
            }
            e.read_at = Instant::now();
            return Ok(Resolved {
                key,
                client: e.client.clone(),
                start_gate: e.start_gate.clone(),
            });
        }
        // A spec change keeps the old client's budget only if the budget itself is unchanged; a new
        // client is simplest and correct: in-flight calls of the old one finish on their own.
        let client = DssClient::new(config)
            .map_err(|source| Error::Connection {
                reason: Unusable::InvalidConnection,
                message: format!("cannot build a DSS client for {key}: {source}"),
            })?
            .with_observer(self.observer.clone())
            .with_max_budget_wait(self.max_budget_wait);
        entries.insert(
            key.clone(),
            Entry {
                client: client.clone(),
                config_hash: hash,
                read_at: Instant::now(),
                key_hash,
                auth_identifier: None,
                start_gate: Arc::new(tokio::sync::Semaphore::new(gate_size)),
            },
        );
        let start_gate = entries.get(&key).map_or_else(
            || Arc::new(tokio::sync::Semaphore::new(gate_size)),
            |e| e.start_gate.clone(),
        );
        Ok(Resolved {
            key,
            client,
            start_gate,
        })
    }

    /// Re-reads the API key of a connection (after DSS refused it, or periodically) and hands a
    /// changed key to the shared client. Returns true when the key changed. A Secret that is gone
    /// drops the cached client.
    pub(crate) async fn refresh_key(
        &self,
        resolved: &Resolved,
        spec: Option<&DSSConnectionSpec>,
    ) -> Result<bool, Error> {
        let read = self.read_key(resolved, spec).await;
        let api_key = match read {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(false),
            Err(e) => {
                if matches!(e, Error::Connection { .. }) {
                    self.forget(&resolved.key);
                }
                return Err(e);
            }
        };
        let hash = sha(&api_key);
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(&resolved.key) else {
            return Ok(false);
        };
        entry.read_at = Instant::now();
        if entry.key_hash == hash {
            return Ok(false);
        }
        entry.client.set_api_key(ApiKey::new(api_key));
        entry.key_hash = hash;
        entry.auth_identifier = None;
        Ok(true)
    }

    /// The key a connection names now (`None` when the connection is not known here).
    async fn read_key(
        &self,
        resolved: &Resolved,
        spec: Option<&DSSConnectionSpec>,
    ) -> Result<Option<String>, Error> {
        Ok(Some(match (&resolved.key, spec) {
            (ConnKey::Named { namespace, .. }, Some(spec)) => {
                read_secret(&self.kube, namespace, &spec.api_key_secret_ref, "apiKeySecretRef").await?
            }
            (ConnKey::Named { namespace, name }, None) => {
                let Some(conn) = self.stores.get(&ObjectRef::new(name).within(namespace)) else {
                    return Ok(None);
                };
                read_secret(
                    &self.kube,
                    namespace,
                    &conn.spec.api_key_secret_ref,
                    "apiKeySecretRef",
                )
                .await?
            }
            (ConnKey::Default, _) => match &self.default {
                Some(d) => read_key_file(&d.api_key_file).await?,
                None => return Ok(None),
            },
        }))
    }

    /// The identity DSS reports for the connection's key (`authIdentifier`), cached per key.
    pub(crate) async fn auth_identifier(&self, resolved: &Resolved) -> Result<String, Error> {
        let cached = lock(&self.entries)
            .get(&resolved.key)
            .and_then(|e| e.auth_identifier.clone());
        if let Some(id) = cached {
            return Ok(id);
        }
        let info = resolved
            .client
            .auth_info()
            .await
            .map_err(Error::dss("auth info"))?;
        if let Some(e) = lock(&self.entries).get_mut(&resolved.key) {
            e.auth_identifier = Some(info.auth_identifier.clone());
        }
        Ok(info.auth_identifier)
    }

    /// Forgets a deleted DSSConnection.
    pub(crate) fn forget(&self, key: &ConnKey) {
        lock(&self.entries).remove(key);
    }
}
