use super::*;

use kube::runtime::watcher::Event;

fn object<K: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    spec: serde_json::Value,
    status: serde_json::Value,
) -> K {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dss.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "ns"}, "spec": spec, "status": status,
    }))
    .unwrap()
}

fn build(name: &str, phase: &str) -> DatasetBuild {
    object(
        "DatasetBuild",
        name,
        serde_json::json!({"projectKey": "P", "outputs": [{"id": "d"}]}),
        serde_json::json!({"phase": phase}),
    )
}

fn connection(name: &str, ready: &str, reason: &str) -> DSSConnection {
    let spec = serde_json::json!({"url": "https://dss", "apiKeySecretRef": {"name": "s", "key": "k"}});
    let condition = serde_json::json!({"type": "Ready", "status": ready, "reason": reason, "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z"});
    object(
        "DSSConnection",
        name,
        spec,
        serde_json::json!({"conditions": [condition]}),
    )
}

#[test]
fn phases_are_counted_from_the_build_caches_when_scraped() {
    let m = Metrics::new();
    let (store, mut writer) = kube::runtime::reflector::store::<DatasetBuild>();
    writer.apply_watcher_event(&Event::Apply(build("a", "Running")));
    writer.apply_watcher_event(&Event::Apply(build("b", "Running")));
    writer.apply_watcher_event(&Event::Apply(build("a", "Succeeded")));
    m.watch_builds(store);
    let text = m.encode();
    assert!(text.contains("kube_dss_builds{phase=\"Succeeded\"} 1"), "{text}");
    assert!(text.contains("kube_dss_builds{phase=\"Running\"} 1"), "{text}");
    writer.apply_watcher_event(&Event::Delete(build("b", "Running")));
    assert!(m.encode().contains("kube_dss_builds{phase=\"Running\"} 0"));
}

#[test]
fn connections_are_counted_by_ready_and_reason() {
    let m = Metrics::new();
    let (store, mut writer) = kube::runtime::reflector::store::<DSSConnection>();
    m.watch_connections(store);
    writer.apply_watcher_event(&Event::Apply(connection("a", "True", "Authenticated")));
    writer.apply_watcher_event(&Event::Apply(connection("b", "False", "Unauthorized")));
    let text = m.encode();
    assert!(
        text.contains("kube_dss_connections{ready=\"true\",reason=\"Authenticated\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kube_dss_connections{ready=\"false\",reason=\"Unauthorized\"} 1"),
        "{text}"
    );
    // A fixed key moves the connection; the old pair reads 0.
    writer.apply_watcher_event(&Event::Apply(connection("b", "True", "Authenticated")));
    let text = m.encode();
    assert!(
        text.contains("kube_dss_connections{ready=\"true\",reason=\"Authenticated\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("kube_dss_connections{ready=\"false\",reason=\"Unauthorized\"} 0"),
        "{text}"
    );
    // A deleted connection is forgotten.
    writer.apply_watcher_event(&Event::Delete(connection("a", "True", "Authenticated")));
    assert!(
        m.encode()
            .contains("kube_dss_connections{ready=\"true\",reason=\"Authenticated\"} 1")
    );
}

#[test]
fn known_series_exist_at_zero_before_any_event() {
    let text = Metrics::new().encode();
    for line in [
        "kube_dss_builds{phase=\"Failed\"} 0",
        "kube_dss_dss_requests_total{operation=\"get_status\",status_class=\"429\"} 0",
        "kube_dss_dss_throttled_total{operation=\"start_job\"} 0",
        "kube_dss_finalizer_forced_releases_total{reason=\"DssUnreachable\"} 0",
        "kube_dss_reconcile_errors_total{category=\"DssServerError\"} 0",
        "kube_dss_reconcile_errors_total{category=\"DssUnreachable\"} 0",
        "kube_dss_job_duration_seconds_count{outcome=\"failed\"} 0",
        "kube_dss_start_outcome_unknown_total 0",
        "kube_dss_leader 0",
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
}
