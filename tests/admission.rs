//! The admission corpus: invalid manifests, each refused by the real kube-apiserver (OpenAPI + CEL
//! rules of crds/) with a message a user understands. Uses server-side dry-run, so nothing is stored.

mod harness;

use std::io::Write;

const BUILD: &str = "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuild\nmetadata: {name: bad}\n";
const CONN: &str = "apiVersion: kube-dss.dev/v1alpha1\nkind: DSSConnection\nmetadata: {name: bad}\n";

/// (what is wrong, manifest, text the refusal must contain)
fn corpus() -> Vec<(&'static str, String, &'static str)> {
    let b = |spec: &str| format!("{BUILD}spec:\n{spec}");
    let c = |spec: &str| format!("{CONN}spec:\n{spec}");
    vec![
        (
            "empty outputs",
            b("  projectKey: P\n  outputs: []\n"),
            "should have at least 1 items",
        ),
        (
            "no outputs",
            b("  projectKey: P\n"),
            "spec.outputs: Required value",
        ),
        (
            "unknown build type",
            b("  projectKey: P\n  type: FAST_BUILD\n  outputs: [{id: d}]\n"),
            "supported values: \"NON_RECURSIVE_FORCED_BUILD\"",
        ),
        (
            "unknown object type",
            b("  projectKey: P\n  outputs: [{id: d, type: TABLE}]\n"),
            "supported values: \"DATASET\"",
        ),
        (
            "empty partition part",
            b("  projectKey: P\n  outputs: [{id: d, partition: \"2024||FR\"}]\n"),
            "is not a DSS partition spec",
        ),
        (
            "partition with spaces",
            b("  projectKey: P\n  outputs: [{id: d, partition: \"2024 01\"}]\n"),
            "is not a DSS partition spec",
        ),
        (
            "slash in output id",
            b("  projectKey: P\n  outputs: [{id: a/b}]\n"),
            "must not contain '/'",
        ),
        (
            "bad project key",
            b("  projectKey: \"my project\"\n  outputs: [{id: d}]\n"),
            "spec.projectKey in body should match",
        ),
        (
            "negative active deadline",
            b("  projectKey: P\n  outputs: [{id: d}]\n  activeDeadlineSeconds: -1\n"),
            "greater than or equal to 1",
        ),
        (
            "zero start deadline",
            b("  projectKey: P\n  outputs: [{id: d}]\n  startDeadlineSeconds: 0\n"),
            "greater than or equal to 1",
        ),
        (
            "start deadline beyond active deadline",
            b(
                "  projectKey: P\n  outputs: [{id: d}]\n  startDeadlineSeconds: 60\n  activeDeadlineSeconds: 30\n",
            ),
            "must not be greater than spec.activeDeadlineSeconds",
        ),
        (
            "negative retry limit",
            b("  projectKey: P\n  outputs: [{id: d}]\n  retry: {limit: -1}\n"),
            "greater than or equal to 0",
        ),
        (
            "unknown onSpecChange",
            b("  projectKey: P\n  outputs: [{id: d}]\n  onSpecChange: Restart\n"),
            "supported values: \"Wait\", \"Abort\"",
        ),
        (
            "unknown deletionPolicy",
            b("  projectKey: P\n  outputs: [{id: d}]\n  deletionPolicy: Delete\n"),
            "supported values: \"Abort\", \"Orphan\"",
        ),
        (
            "cross-namespace connection",
            b("  projectKey: P\n  outputs: [{id: d}]\n  connectionRef: {name: c, namespace: other}\n"),
            "can only use a DSSConnection in its own namespace",
        ),
        (
            "connection without scheme",
            c("  url: dss.example.com\n  apiKeySecretRef: {name: s, key: k}\n"),
            "must be an http:// or https:// URL",
        ),
        (
            "ftp connection",
            c("  url: ftp://dss.example.com\n  apiKeySecretRef: {name: s, key: k}\n"),
            "must be an http:// or https:// URL",
        ),
        (
            "cross-namespace secret",
            c("  url: https://dss.example.com\n  apiKeySecretRef: {name: s, key: k, namespace: other}\n"),
            "secret references are namespace-local",
        ),
        (
            "CA and insecure together",
            c(
                "  url: https://dss.example.com\n  apiKeySecretRef: {name: s, key: k}\n  tls: {caSecretRef: {name: ca, key: ca.crt}, insecureSkipVerify: true}\n",
            ),
            "contradict each other",
        ),
        (
            "zero request budget",
            c(
                "  url: https://dss.example.com\n  apiKeySecretRef: {name: s, key: k}\n  limits: {requestsPerSecond: 0}\n",
            ),
            "greater than or equal to 1",
        ),
    ]
}

#[test]
fn invalid_manifests_are_refused_with_readable_messages() {
    harness::control_plane();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for (what, manifest, expected) in corpus() {
        let path = dir.path().join("m.yaml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(manifest.as_bytes()))
            .expect("write manifest");
        let out = harness::kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            "default",
            "-f",
            path.to_str().expect("path"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(expected) {
            failures.push(format!(
                "{what}: expected a refusal containing {expected:?}, got (ok={}) {stderr}",
                out.status.success()
            ));
        }
    }
    assert!(failures.is_empty(), "admission corpus:\n{}", failures.join("\n"));
}

#[test]
fn the_example_manifests_are_accepted() {
    harness::control_plane();
    for file in ["examples/demo/connection.yaml", "examples/demo/builds.yaml"] {
        let path = harness::repo().join(file);
        let out = harness::kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            "default",
            "-f",
            path.to_str().expect("path"),
        ]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
