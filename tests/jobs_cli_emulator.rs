//! The seed's examples as `kube-dss jobs` commands against `kube-dss emulator` over loopback: start
//! and wait, failed jobs after a date, abort every running job, read a log. Exit codes follow
//! docs/cli.md (0 DONE, 1 FAILED, 2 ABORTED).

// Set-up helpers fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::process::{Output, Stdio};

use kube_dss::emulator::{self, Config, admin::AdminClient};

const KEY: &str = "cli-key-7a6b5c4d";
const EMULATOR: &str = r#"
instance: {maxRunningActivities: 10}
projects:
  - projectKey: TEST_PROJECT
    datasets:
      - name: dataset_to_build
        build: {durationMs: 300, log: ["built it"]}
      - name: will_fail
        build: {durationMs: 300, outcome: FAILED, message: "Job failed: bad input", log: ["oops"]}
      - name: forever
        build: {durationMs: 600000}
apiKeys:
  - {key: cli-key-7a6b5c4d, id: cli, projects: {TEST_PROJECT: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}}
"#;

async fn jobs(base: &str, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-dss"))
        .arg("jobs")
        .args(args)
        .env("DSS_URL", base)
        .env("DSS_API_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(KEY), "the key must never be printed");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_examples_work_against_the_emulator() {
    let emu = emulator::spawn(
        Config::from_yaml(EMULATOR).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let base = emu.base_url();
    let admin = AdminClient::new(&base);

    // Start a job from a definition and wait for it: exit 0 on DONE.
    let ok = jobs(
        &base,
        &[
            "start",
            "--project",
            "TEST_PROJECT",
            "--output",
            "dataset_to_build@NP",
            "--wait",
        ],
    )
    .await;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A failing build: exit 1.
    let bad = jobs(
        &base,
        &[
            "start",
            "-p",
            "TEST_PROJECT",
            "--output",
            "will_fail:DATASET",
            "--wait",
        ],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));

    // Failed jobs after a date.
    let failed = jobs(
        &base,
        &[
            "list",
            "--project",
            "TEST_PROJECT",
            "--state",
            "FAILED",
            "--since",
            "2015-09-24",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(failed.status.code(), Some(0));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&failed)).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // Read the log of the failed job.
    let id = admin
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.state == "FAILED")
        .unwrap()
        .id;
    let log = jobs(&base, &["log", "--project", "TEST_PROJECT", &id]).await;
    assert!(stdout(&log).contains("bad input"), "{}", stdout(&log));

    // Abort every job still being processed (stableState false).
    for _ in 0..2 {
        let started = jobs(
            &base,
            &["start", "--project", "TEST_PROJECT", "--output", "forever"],
        )
        .await;
        assert_eq!(started.status.code(), Some(0));
    }
    let aborted = jobs(&base, &["abort", "--project", "TEST_PROJECT", "--all-running"]).await;
    assert_eq!(
        aborted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&aborted.stderr)
    );
    let states: Vec<String> = admin.jobs().await.unwrap().into_iter().map(|j| j.state).collect();
    assert_eq!(states.iter().filter(|s| *s == "ABORTED").count(), 2, "{states:?}");
    let wait = jobs(
        &base,
        &[
            "wait",
            "--project",
            "TEST_PROJECT",
            &admin
                .jobs()
                .await
                .unwrap()
                .into_iter()
                .find(|j| j.state == "ABORTED")
                .unwrap()
                .id,
        ],
    )
    .await;
    assert_eq!(wait.status.code(), Some(2), "wait exits 2 on ABORTED");

    // A bad key is an API error: exit 4, with DSS's errorType on stderr.
    let denied = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-dss"))
        .args(["jobs", "list", "--project", "TEST_PROJECT"])
        .env("DSS_URL", &base)
        .env("DSS_API_KEY", "wrong-key")
        .output()
        .await
        .unwrap();
    assert_eq!(denied.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
    emu.shutdown().await;
}
