//! Test support for integration tests against real parts: the local control plane (etcd +
//! kube-apiserver built from source by `hack/`), the DSS emulator, and the operator binary.
//!
//! - [`control_plane`] starts (or reuses) the control plane once per test binary and installs `crds/`.
//! - [`TestNs`] gives each test its own namespace, removed by [`TestNs::cleanup`].
//! - [`Operator`] runs `kube-dss controller` as a real process (so tests can SIGKILL it), logging to
//!   a file under `target/test-logs/`; [`emulator`] starts the DSS emulator in the test process.
// Test support: a failed set-up step should stop the test loudly, so unwrap is the right tool here.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();

/// Starts (or reuses) the control plane and installs the CRDs; returns the kubeconfig path.
pub fn control_plane() -> PathBuf {
    KUBECONFIG
        .get_or_init(|| {
            let out = Command::new(repo().join("hack/cluster.sh"))
                .arg("up")
                .stderr(Stdio::inherit())
                .output()
                .expect("run hack/cluster.sh up");
            assert!(out.status.success(), "hack/cluster.sh up failed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let path = PathBuf::from(stdout.lines().last().expect("kubeconfig path").trim());
            let crds = repo().join("crds");
            let applied = kubectl_with(
                &path,
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    crds.to_str().unwrap(),
                ],
            );
            assert!(
                applied.status.success(),
                "installing CRDs failed: {}",
                String::from_utf8_lossy(&applied.stderr)
            );
            let established = kubectl_with(
                &path,
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    "crd/datasetbuilds.kube-dss.dev",
                    "crd/dssconnections.kube-dss.dev",
                    "crd/datasetbuildschedules.kube-dss.dev",
                    "crd/scenarioruns.kube-dss.dev",
                ],
            );
            assert!(established.status.success(), "CRDs not established");
            path
        })
        .clone()
}

/// The directory of the control-plane binaries (kubectl, helm, ...).
pub fn tools_bin() -> PathBuf {
    let local = std::env::var_os("KUBE_DSS_LOCAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".local"));
    PathBuf::from(
        std::fs::read_to_string(local.join("cluster/bin"))
            .expect("control plane started")
            .trim(),
    )
}

/// Runs kubectl against the local control plane.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_with(&control_plane(), args)
}

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(tools_bin().join("kubectl"))
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

/// A kube client for the local control plane (admin credentials).
pub async fn client() -> Client {
    let path = control_plane();
    let kubeconfig = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// A namespace of one test.
pub struct TestNs {
    /// Its name.
    pub name: String,
    client: Client,
}

impl TestNs {
    /// Creates a fresh namespace named after `prefix`.
    pub async fn new(client: &Client, prefix: &str) -> TestNs {
        let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("kube-dss.dev/test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNs {
            name,
            client: client.clone(),
        }
    }

    /// Typed API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates an Opaque Secret with one key.
    pub async fn secret(&self, name: &str, key: &str, value: &str) {
        let api: Api<Secret> = self.api();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        let _ = api.delete(name, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    /// Creates a DSSConnection to `url` using the API key in Secret `dss-api-key` (key `apiKey`),
    /// with `limits` = (requestsPerSecond, maxInFlight) when given.
    pub async fn connection(&self, name: &str, url: &str, limits: Option<(u64, u64)>) {
        let mut spec = serde_json::json!({
            "url": url, "apiKeySecretRef": {"name": "dss-api-key", "key": "apiKey"},
        });
        if let Some((rps, in_flight)) = limits {
            spec["limits"] = serde_json::json!({"requestsPerSecond": rps, "maxInFlight": in_flight});
        }
        let conn: kube_dss::crd::DSSConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DSSConnection",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.api()
            .create(&PostParams::default(), &conn)
            .await
            .expect("create DSSConnection");
    }

    /// Deletes the namespace. With no namespace controller running, the test finalizes it itself
    /// once its content is gone (what kube-controller-manager would do).
    pub async fn cleanup(self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
        let _ = kubectl(&[
            "delete",
            "datasetbuildschedules,datasetbuilds,dssconnections,secrets,events",
            "--all",
            "-n",
            &self.name,
            "--wait=false",
        ]);
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": self.name},
            "spec": {"finalizers": []}
        });
        let req = http::Request::put(format!("/api/v1/namespaces/{}/finalize", self.name))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let _ = self.client.request::<Namespace>(req).await;
    }
}

/// A running `kube-dss controller` process.
pub struct Operator {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// Base URL of its admin server.
    pub admin: String,
}

impl Operator {
    /// Starts the operator for one namespace with extra arguments.
    pub fn start(namespace: &str, extra: &[&str]) -> Operator {
        Self::start_env(namespace, extra, &[])
    }

    /// Starts the operator with extra arguments and environment.
    pub fn start_env(namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Operator {
        let kubeconfig = control_plane();
        let port = free_port();
        let dir = repo().join("target/test-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{namespace}-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kube-dss"))
            .arg("controller")
            .args([
                "--namespace",
                namespace,
                "--admin-addr",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ])
            // Short timeouts and polls unless the test sets its own.
            .args(
                [
                    ("--dss-request-timeout-seconds", "5"),
                    ("--poll-max-seconds", "2"),
                ]
                .into_iter()
                .filter(|(flag, _)| !extra.contains(flag))
                .flat_map(|(flag, value)| [flag, value]),
            )
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,kube_dss=debug")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start kube-dss controller");
        Operator {
            child,
            log,
            admin: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        let url = format!("{}/readyz", self.admin);
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator not ready; log:\n{}", self.log_text());
    }

    /// SIGKILLs the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True once the process has ended on its own (or was killed).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Sends SIGTERM and waits up to `limit` for the exit, without blocking the test's runtime
    /// (the emulator may be serving the operator's last calls meanwhile). `None` if it did not exit.
    pub async fn terminate_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    }

    /// The value of one series of `/metrics`, written as the exposition writes it
    /// (`kube_dss_reconcile_errors_total{category="DssServerError"}`); None when absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }
}

/// The value of one series in an OpenMetrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The DSS emulator with a YAML configuration, on a free loopback port.
pub async fn emulator(yaml: &str) -> kube_dss::emulator::Handle {
    kube_dss::emulator::spawn(
        kube_dss::emulator::Config::from_yaml(yaml).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls an object until `cond` holds, or panics with its last state.
pub async fn wait_for<K>(api: &Api<K>, name: &str, timeout: Duration, cond: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(obj) = api.get(name).await {
            if cond(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "timed out waiting for {name}; last seen:\n{}",
        last.map(|o| serde_yaml::to_string(&o).unwrap_or_default())
            .unwrap_or_else(|| "nothing".into())
    );
}

/// Waits until an object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if matches!(api.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let obj = api.get_opt(name).await.ok().flatten();
    panic!("{name} still exists: {:?}", obj.map(|o| o.finalizers().to_vec()));
}

/// A kubeconfig for a ServiceAccount, with a token from the TokenRequest API; its context's namespace
/// is the ServiceAccount's.
pub fn sa_kubeconfig(ns: &str, sa: &str) -> PathBuf {
    let out = kubectl(&["create", "token", sa, "-n", ns, "--duration", "2h"]);
    assert!(
        out.status.success(),
        "create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(control_plane()).unwrap()).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa, "namespace": ns}}],
        "current-context": "sa",
    });
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("kubeconfig-{ns}-{sa}"));
    std::fs::write(&path, serde_json::to_string(&kubeconfig).unwrap()).unwrap();
    path
}
