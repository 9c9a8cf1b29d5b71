//! The test harness works against the real control plane: kube-rs creates, watches and deletes an
//! object on the local kube-apiserver, and the generated CRDs are the committed ones.

mod harness;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};

#[tokio::test]
async fn kube_rs_creates_watches_and_deletes_an_object_on_the_real_apiserver() {
    let client = harness::client().await;
    let ns = harness::TestNs::new(&client, "harness").await;
    let api: Api<ConfigMap> = ns.api();

    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await.expect("create");
    let seen = tokio::time::timeout(Duration::from_secs(20), events.try_next())
        .await
        .expect("watch event in time")
        .expect("watch ok")
        .expect("an object");
    assert_eq!(seen.metadata.name.as_deref(), Some("probe"));
    assert_eq!(seen.data.unwrap()["k"], "v");

    api.delete("probe", &DeleteParams::default())
        .await
        .expect("delete");
    harness::wait_gone(&api, "probe", Duration::from_secs(20)).await;
    ns.cleanup().await;
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let generated = kube_dss::crd::crds_yaml().expect("generate CRDs");
    let committed =
        std::fs::read_to_string(harness::repo().join("crds/kube-dss.dev.yaml")).expect("read crds/");
    assert!(
        generated == committed,
        "crds/kube-dss.dev.yaml is out of date: run `make crds` (cargo run -- crds > crds/kube-dss.dev.yaml)"
    );
}

#[test]
fn rbac_is_on_in_the_local_control_plane() {
    harness::control_plane();
    let out = harness::kubectl(&[
        "auth",
        "can-i",
        "list",
        "secrets",
        "--as=system:serviceaccount:default:nobody",
        "-A",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no",
        "an unprivileged identity must be refused"
    );
}
