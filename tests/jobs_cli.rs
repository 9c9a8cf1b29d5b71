//! `kube-dss jobs` run as a process against a DSS-shaped server on loopback (`tests/support`): the seed's
//! examples as commands, exit codes, error lines, and the key never in any output.

// Test code: a failed unwrap is a failed test (helpers included).
#![allow(clippy::unwrap_used)]

mod support;

use std::{process::Stdio, time::Duration};

use base64::Engine as _;
use support::{KEY, TestDss};
use tokio::io::AsyncWriteExt;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `kube-dss jobs ARGS` with the server's URL and the key in the environment, and `RUST_LOG=trace`
/// so that any leak through logging would show.
async fn jobs(server: &TestDss, args: &[&str]) -> Run {
    jobs_with(server, args, &[], None).await
}

async fn jobs_with(server: &TestDss, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-dss"));
    command
        .arg("jobs")
        .args(args)
        .env_clear()
        .env("DSS_URL", server.base_url())
        .env("DSS_API_KEY", KEY)
        .env("RUST_LOG", "trace")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(KEY), "the key leaked in {args:?}: {text}");
        assert!(
            !text.contains(&basic),
            "the Basic credentials leaked in {args:?}: {text}"
        );
    }
    run
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_example_failed_jobs_after_a_date() {
    let server = support::spawn().await;
    let run = jobs(
        &server,
        &[
            "list",
            "--project",
            "TEST_PROJECT",
            "--state",
            "FAILED",
            "--since",
            "2015/09/24",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = lines(&run.stdout);
    assert_eq!(out.len(), 2, "{}", run.stdout);
    assert!(out[0].starts_with("JOB ID"));
    for column in ["STATE", "STARTED", "ENDED", "WARNINGS", "INITIATOR"] {
        assert!(out[0].contains(column), "{}", out[0]);
    }
    assert!(out[1].starts_with("build_new_failure_NP_2015-09-25T10-00-00.000"));
    assert!(
        out[1].contains("FAILED") && out[1].contains("2015-09-28T09:17:37Z") && out[1].contains("API (aa)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_as_json_and_running_lists() {
    let server = support::spawn().await;
    let run = jobs(&server, &["list", "-o", "json", "--state", "failed,done"]).await;
    assert_eq!(run.code, exit::USAGE, "no project: {}", run.stderr);
    assert!(run.stderr.contains("no project"));

    let run = jobs_with(
        &server,
        &["list", "-o", "json"],
        &[("DSS_PROJECT", "TEST_PROJECT")],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let items: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 5);
    assert_eq!(items[0]["jobId"], "build_old_failure_NP_2015-09-20T10-00-00.000");
    assert_eq!(items[0]["state"], "FAILED");

    let run = jobs(&server, &["list", "--project", "TEST_PROJECT", "--running"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(lines(&run.stdout).len(), 3, "{}", run.stdout);

    let run = jobs(&server, &["list", "--running", "--all-projects"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("PROJECT"));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path == "/public/api/jobs/running/" && r.query.as_deref() == Some("allUsers=True"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_example_start_and_wait() {
    let server = support::spawn().await;
    let run = jobs(
        &server,
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
    assert_eq!(run.code, exit::SUCCESS, "{}", run.stderr);
    let out = lines(&run.stdout);
    assert_eq!(out.len(), 2, "{}", run.stdout);
    assert!(out[0].starts_with("build_dataset_to_build_NP_"));
    assert_eq!(out[1], "DONE");
    let post = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        String::from_utf8(post.body).unwrap(),
        r#"{"type":"NON_RECURSIVE_FORCED_BUILD","refreshHiveMetastore":false,"outputs":[{"type":null,"id":"dataset_to_build","projectKey":null,"partition":"NP"}],"autoUpdateSchemaBeforeEachRecipeRun":false}"#
    );

    let run = jobs(
        &server,
        &[
            "start",
            "-p",
            "TEST_PROJECT",
            "--output",
            "will_fail:DATASET",
            "--type",
            "RECURSIVE_BUILD",
            "--wait",
        ],
    )
    .await;
    assert_eq!(run.code, exit::FAILED, "{}", run.stderr);
    assert_eq!(lines(&run.stdout)[1], "FAILED");

    let run = jobs(
        &server,
        &[
            "start",
            "-p",
            "TEST_PROJECT",
            "--output",
            "will_hang",
            "--wait",
            "--wait-timeout",
            "1s",
        ],
    )
    .await;
    assert_eq!(run.code, exit::WAIT_TIMEOUT, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("did not finish in time (last state: RUNNING)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_from_a_definition_file_or_stdin() {
    let server = support::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    // The seed's definition, as the documentation writes it.
    let json_file = dir.path().join("job.json");
    std::fs::write(&json_file, r#"{"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "dataset_to_build", "partition": "NP"}]}"#).unwrap();
    let run = jobs(
        &server,
        &[
            "start",
            "--project",
            "TEST_PROJECT",
            "--definition",
            json_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.trim().starts_with("build_dataset_to_build_NP_"));

    let yaml_file = dir.path().join("job.yaml");
    std::fs::write(
        &yaml_file,
        "type: RECURSIVE_FORCED_BUILD\noutputs:\n- id: ds_b\n  type: DATASET\n  partition: 2024-01-01|FR\n",
    )
    .unwrap();
    let run = jobs(
        &server,
        &[
            "start",
            "--project",
            "TEST_PROJECT",
            "--definition",
            yaml_file.to_str().unwrap(),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        answer["id"]
            .as_str()
            .unwrap()
            .starts_with("build_ds_b_2024-01-01|FR_")
    );

    let run = jobs_with(
        &server,
        &["start", "--project", "TEST_PROJECT", "--definition", "-"],
        &[],
        Some(r#"{"outputs":[{"id":"from_stdin"}]}"#),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("build_from_stdin_NP_"));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": []}"#).unwrap();
    let posts_before = server.requests().iter().filter(|r| r.method == "POST").count();
    let run = jobs(
        &server,
        &[
            "start",
            "--project",
            "TEST_PROJECT",
            "--definition",
            bad.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, exit::USAGE);
    assert!(run.stderr.contains("at least one output"), "{}", run.stderr);
    assert_eq!(
        server.requests().iter().filter(|r| r.method == "POST").count(),
        posts_before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_example_abort_every_running_job() {
    let server = support::spawn().await;
    let run = jobs(&server, &["abort", "--project", "TEST_PROJECT", "--all-running"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        lines(&run.stdout),
        [
            "build_busy_NP_2015-09-27T10-00-00.000",
            "build_queued_NP_2015-09-27T11-00-00.000"
        ]
    );
    assert_eq!(
        server.job("build_busy_NP_2015-09-27T10-00-00.000").unwrap().state,
        "ABORTED"
    );
    assert_eq!(
        server.job("build_good_NP_2015-09-26T10-00-00.000").unwrap().state,
        "DONE"
    );

    let run = jobs(&server, &["abort", "--project", "TEST_PROJECT", "--all-running"]).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("no running job"));

    let run = jobs(
        &server,
        &[
            "wait",
            "--project",
            "TEST_PROJECT",
            "build_busy_NP_2015-09-27T10-00-00.000",
        ],
    )
    .await;
    assert_eq!(run.code, exit::ABORTED, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "ABORTED");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_example_read_a_log() {
    let server = support::spawn().await;
    let job = "build_good_NP_2015-09-26T10-00-00.000";
    let run = jobs(&server, &["log", "--project", "TEST_PROJECT", job]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "[2015/09/28-09:17:37.455] [main] [INFO] [dku.job] - building good\n"
    );
    let run = jobs(
        &server,
        &[
            "log",
            "--project",
            "TEST_PROJECT",
            job,
            "--activity",
            "compute_good_NP",
        ],
    )
    .await;
    assert_eq!(run.stdout, format!("activity compute_good_NP log of {job}\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_as_text_and_json() {
    let server = support::spawn().await;
    let job = "build_good_NP_2015-09-26T10-00-00.000";
    let run = jobs(
        &server,
        &[
            "status",
            "--project",
            "TEST_PROJECT",
            job,
            "--prefix",
            "dip-publicapi",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("STATE:     DONE"), "{}", run.stdout);
    assert!(run.stdout.contains("ACTIVITY"), "{}", run.stdout);
    assert!(
        server.requests()[0]
            .path
            .starts_with("/dip/publicapi/projects/TEST_PROJECT/jobs/")
    );
    let run = jobs(
        &server,
        &["status", "--project", "TEST_PROJECT", job, "-o", "json"],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["baseStatus"]["state"], "DONE");
    let run = jobs(&server, &["wait", "--project", "TEST_PROJECT", job]).await;
    assert_eq!((run.code, run.stdout.trim()), (0, "DONE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dss_errors_exit_4_with_one_clear_line() {
    let server = support::spawn().await;
    let run = jobs(&server, &["status", "--project", "TEST_PROJECT", "no-such-job"]).await;
    assert_eq!(run.code, exit::DSS_ERROR);
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("kube-dss jobs:"))
            .collect::<Vec<_>>(),
        [
            "kube-dss jobs: DSS get_status: HTTP 500: com.dataiku.dip.exceptions.UnknownObjectException: Job no-such-job does not exist"
        ]
    );

    server.set_key("another-key");
    let run = jobs(&server, &["list", "--project", "TEST_PROJECT"]).await;
    assert_eq!(run.code, exit::DSS_ERROR);
    assert!(
        run.stderr
            .contains("HTTP 401: com.dataiku.dip.exceptions.UnauthorizedException: Invalid API key"),
        "{}",
        run.stderr
    );

    server.push_fault(support::Fault::status(
        502,
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
    ));
    server.set_key(KEY);
    let run = jobs(&server, &["list", "--project", "TEST_PROJECT"]).await;
    assert_eq!(run.code, exit::DSS_ERROR);
    assert!(
        run.stderr
            .contains("HTTP 502: <html><body><h1>502 Bad Gateway</h1></body></html>"),
        "{}",
        run.stderr
    );

    // Unreachable DSS: the cause is on the same line.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let run = jobs(&server, &["list", "--project", "TEST_PROJECT", "--url", &dead]).await;
    assert_eq!(run.code, exit::DSS_ERROR);
    assert!(
        run.stderr.contains("cannot reach DSS: error sending request"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_64_and_help_documents_exit_codes() {
    let server = support::spawn().await;
    let run = jobs(&server, &["frobnicate"]).await;
    assert_eq!(run.code, exit::USAGE);
    let run = jobs(&server, &["start", "--project", "P"]).await;
    assert_eq!(run.code, exit::USAGE);
    assert!(run.stderr.contains("nothing to build"));
    let run = jobs(&server, &["list", "--project", "P", "--since", "yesterday"]).await;
    assert_eq!(run.code, exit::USAGE);
    let run = jobs_with(
        &server,
        &["list", "--project", "P"],
        &[("DSS_URL", "not a url")],
        None,
    )
    .await;
    assert_eq!(run.code, exit::USAGE);

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-dss"));
    let output = command
        .args([
            "jobs",
            "list",
            "--project",
            "TEST_PROJECT",
            "--api-key-file",
            key_file.to_str().unwrap(),
        ])
        .env_clear()
        .env("DSS_URL", server.base_url())
        .output()
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-dss"))
        .args(["jobs", "list", "--project", "TEST_PROJECT"])
        .env_clear()
        .env("DSS_URL", server.base_url())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no API key"));

    let run = jobs(&server, &["--help"]).await;
    assert_eq!(run.code, 0);
    for line in [
        "0   success",
        "1   the job ended FAILED",
        "2   the job ended ABORTED",
        "3   the wait timed out",
        "4   DSS error",
        "64  usage error",
    ] {
        assert!(run.stdout.contains(line), "{line}: {}", run.stdout);
    }
    // The key is set in the environment, and help must not show it (checked by `jobs_with`).
    let run = jobs(&server, &["list", "--help"]).await;
    assert!(run.stdout.contains("DSS_API_KEY"));
}

mod exit {
    pub(crate) const SUCCESS: i32 = 0;
    pub(crate) const FAILED: i32 = 1;
    pub(crate) const ABORTED: i32 = 2;
    pub(crate) const WAIT_TIMEOUT: i32 = 3;
    pub(crate) const DSS_ERROR: i32 = 4;
    pub(crate) const USAGE: i32 = 64;
}
