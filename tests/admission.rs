//! The admission corpus: invalid manifests, each refused by the real kube-apiserver (OpenAPI + CEL
//! rules of crds/) with a message a user understands. Uses server-side dry-run, so nothing is stored.

mod harness;

use std::io::Write;

const BUILD: &str = "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuild\nmetadata: {name: bad}\n";
const CONN: &str = "apiVersion: kube-dss.dev/v1alpha1\nkind: DSSConnection\nmetadata: {name: bad}\n";
const SCENARIO: &str = "apiVersion: kube-dss.dev/v1alpha1\nkind: ScenarioRun\nmetadata: {name: bad}\n";
const SCHEDULE: &str =
    "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuildSchedule\nmetadata: {name: bad}\n";
/// A valid build template, for schedule cases that get something else wrong.
const TEMPLATE: &str =
    "  buildTemplate: {spec: {projectKey: P, outputs: [{id: d, partition: \"${slot:%Y-%m-%d}\"}]}}\n";

/// (what is wrong, manifest, text the refusal must contain)
fn corpus() -> Vec<(&'static str, String, &'static str)> {
    let b = |spec: &str| format!("{BUILD}spec:\n{spec}");
    let c = |spec: &str| format!("{CONN}spec:\n{spec}");
    let r = |spec: &str| format!("{SCENARIO}spec:\n{spec}");
    let s = |spec: &str| format!("{SCHEDULE}spec:\n{spec}");
    let st = |spec: &str| format!("{SCHEDULE}spec:\n{spec}{TEMPLATE}");
    let partition = |p: &str| {
        format!(
            "{SCHEDULE}spec:\n  schedule: \"@daily\"\n  buildTemplate: {{spec: {{projectKey: P, outputs: [{{id: d, partition: \"{p}\"}}]}}}}\n"
        )
    };
    let token = |t: &str| {
        format!(
            "{SCHEDULE}spec:\n  schedule: \"@daily\"\n  buildTemplate: {{spec: {{projectKey: P, outputs: [{{id: d}}], rerunToken: \"{t}\"}}}}\n"
        )
    };
    let cron = "spec.schedule must be a cron expression of 5 fields";
    let placeholder = "a slot placeholder must read ${slot:FORMAT}";
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
        ("schedule in words", st("  schedule: every night\n"), cron),
        ("schedule of 4 fields", st("  schedule: \"* * * *\"\n"), cron),
        (
            "schedule of 7 fields",
            st("  schedule: \"0 0 2 * * * 2030\"\n"),
            cron,
        ),
        ("unknown macro", st("  schedule: \"@reboot\"\n"), cron),
        (
            "empty schedule",
            st("  schedule: \"\"\n"),
            "spec.schedule in body should be at least 1 chars long",
        ),
        ("no schedule", s(TEMPLATE), "spec.schedule: Required value"),
        (
            "no build template",
            s("  schedule: \"@daily\"\n"),
            "spec.buildTemplate: Required value",
        ),
        (
            "time zone with a space",
            st("  schedule: \"@daily\"\n  timeZone: Europe Paris\n"),
            "spec.timeZone must be an IANA time zone name",
        ),
        (
            "time zone as an offset",
            st("  schedule: \"@daily\"\n  timeZone: \"+02:00\"\n"),
            "spec.timeZone must be an IANA time zone name",
        ),
        (
            "unknown concurrency policy",
            st("  schedule: \"@daily\"\n  concurrencyPolicy: Skip\n"),
            "supported values: \"Allow\", \"Forbid\", \"Replace\"",
        ),
        (
            "unknown catch-up",
            st("  schedule: \"@daily\"\n  catchUp: None\n"),
            "supported values: \"Latest\", \"All\"",
        ),
        (
            "catch-up of all slots, each replacing the one before",
            st("  schedule: \"@daily\"\n  catchUp: All\n  concurrencyPolicy: Replace\n"),
            "catchUp: All cannot be combined with concurrencyPolicy: Replace",
        ),
        (
            "maxCatchUpRuns without catchUp All",
            st("  schedule: \"@daily\"\n  maxCatchUpRuns: 5\n"),
            "spec.maxCatchUpRuns only applies to catchUp: All",
        ),
        (
            "zero maxCatchUpRuns",
            st("  schedule: \"@daily\"\n  catchUp: All\n  maxCatchUpRuns: 0\n"),
            "greater than or equal to 1",
        ),
        (
            "zero starting deadline",
            st("  schedule: \"@daily\"\n  startingDeadlineSeconds: 0\n"),
            "greater than or equal to 1",
        ),
        (
            "negative history limit",
            st("  schedule: \"@daily\"\n  failedBuildsHistoryLimit: -1\n"),
            "greater than or equal to 0",
        ),
        ("placeholder without a format", partition("${slot}"), placeholder),
        (
            "placeholder with an empty format",
            partition("${slot:}"),
            placeholder,
        ),
        (
            "placeholder with an unknown unit",
            partition("${slot-1y:%Y}"),
            placeholder,
        ),
        (
            "placeholder with a long offset",
            partition("${slot-12345d:%Y}"),
            placeholder,
        ),
        (
            "placeholder of another name",
            partition("${date:%Y}"),
            placeholder,
        ),
        ("unclosed placeholder", token("${slot:%Y"), placeholder),
        (
            "placeholder in the rerun token",
            token("run-${slot+1x:%H}"),
            placeholder,
        ),
        (
            "template partition with a space",
            partition("${slot:%Y %m}"),
            "is not a DSS partition spec",
        ),
        (
            "template without outputs",
            s("  schedule: \"@daily\"\n  buildTemplate: {spec: {projectKey: P}}\n"),
            "spec.buildTemplate.spec.outputs: Required value",
        ),
        (
            "template start deadline beyond its active deadline",
            s(
                "  schedule: \"@daily\"\n  buildTemplate: {spec: {projectKey: P, outputs: [{id: d}], startDeadlineSeconds: 60, activeDeadlineSeconds: 30}}\n",
            ),
            "buildTemplate.spec.startDeadlineSeconds must not be greater than",
        ),
        (
            "schedule name too long for its builds' label",
            format!(
                "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuildSchedule\nmetadata: {{name: {}}}\nspec:\n  schedule: \"@daily\"\n{TEMPLATE}",
                "s".repeat(64)
            ),
            "metadata.name must be at most 63 characters",
        ),
        (
            "scenario run without a scenario",
            r("  projectKey: P\n"),
            "spec.scenarioId: Required value",
        ),
        (
            "scenario id with a slash",
            r("  projectKey: P\n  scenarioId: a/b\n"),
            "scenarioId must not contain '/'",
        ),
        (
            "scenario run in another namespace's connection",
            r("  projectKey: P\n  scenarioId: S\n  connectionRef: {name: c, namespace: other}\n"),
            "can only use a DSSConnection in its own namespace",
        ),
        (
            "scenario run start deadline after its active deadline",
            r("  projectKey: P\n  scenarioId: S\n  startDeadlineSeconds: 100\n  activeDeadlineSeconds: 10\n"),
            "spec.startDeadlineSeconds must not be greater than spec.activeDeadlineSeconds",
        ),
        (
            "scenario params that are not an object",
            r("  projectKey: P\n  scenarioId: S\n  params: [1, 2]\n"),
            "spec.params: Invalid value: \"array\"",
        ),
    ]
}

/// Valid schedules: every shape of schedule and placeholder the operator understands.
fn accepted() -> Vec<(&'static str, String)> {
    let s = |spec: &str| format!("{SCHEDULE}spec:\n{spec}");
    let partition = |p: &str| {
        format!(
            "{SCHEDULE}spec:\n  schedule: \"@daily\"\n  buildTemplate: {{spec: {{projectKey: P, outputs: [{{id: d, partition: \"{p}\"}}]}}}}\n"
        )
    };
    vec![
        (
            "5 fields",
            s(&format!("  schedule: \"0 2 * * MON-FRI\"\n{TEMPLATE}")),
        ),
        (
            "6 fields",
            s(&format!("  schedule: \"*/5 * * * * *\"\n{TEMPLATE}")),
        ),
        ("a macro", s(&format!("  schedule: \"@hourly\"\n{TEMPLATE}"))),
        (
            "quartz-style fields",
            s(&format!("  schedule: \"0 0 L * ?\"\n{TEMPLATE}")),
        ),
        (
            "a zone",
            s(&format!(
                "  schedule: \"@daily\"\n  timeZone: America/Argentina/Buenos_Aires\n{TEMPLATE}"
            )),
        ),
        (
            "offsets",
            partition("${slot-1d:%Y-%m-%d}|${slot+2h:%H}/${slot-1w:%F},${slot-12M:%Y-%m}"),
        ),
        ("literal dollars", partition("cost$5|$${slot:%Y}")),
        ("no placeholder", partition("NP")),
        (
            "a name of 63 characters",
            format!(
                "apiVersion: kube-dss.dev/v1alpha1\nkind: DatasetBuildSchedule\nmetadata: {{name: {}}}\nspec:\n  schedule: \"@daily\"\n{TEMPLATE}",
                "s".repeat(63)
            ),
        ),
    ]
}

#[test]
fn valid_schedules_are_accepted() {
    harness::control_plane();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for (what, manifest) in accepted() {
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, &manifest).expect("write manifest");
        let out = harness::kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            "default",
            "-f",
            path.to_str().expect("path"),
        ]);
        if !out.status.success() {
            failures.push(format!(
                "{what}: refused: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "valid schedules:\n{}", failures.join("\n"));
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
    for file in [
        "examples/demo/connection.yaml",
        "examples/demo/builds.yaml",
        "examples/demo/schedule.yaml",
        "examples/schedule.yaml",
        "examples/demo/scenariorun.yaml",
        "examples/scenariorun.yaml",
    ] {
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
