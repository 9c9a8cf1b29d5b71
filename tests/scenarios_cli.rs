//! `kube-dss scenarios` run as a process against `kube-dss emulator` served in-process: list, run
//! (with parameters, waiting or not), wait for a fire or a run, status of a scenario and of a run,
//! abort, logs; exit codes (docs/cli.md), one-line errors, and the key never in any output.

// Test code: a failed unwrap is a failed test (helpers included).
#![allow(clippy::unwrap_used)]

use std::{process::Stdio, time::Duration};

use base64::Engine as _;
use kube_dss::emulator::{self, Config, Handle};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const KEY: &str = "scenario-cli-key-9f8e7d";

const EMULATOR: &str = r#"
instance: {scenarioStartDelayMs: 30}
defaults: {durationMs: 40}
projects:
  - projectKey: TEST_PROJECT
    datasets:
      - {name: clean}
      - {name: noisy, build: {warnings: 2}}
      - {name: broken, build: {outcome: FAILED, message: "Job failed: bad input", log: ["reading", "ERROR: bad input row 3"]}}
      - {name: forever, build: {durationMs: 600000}}
    scenarios:
      - id: DAILY
        name: Daily refresh
        steps:
          - {type: build, id: build_clean, name: Build clean, outputs: [{id: clean}]}
          - {type: wait, id: settle, durationMs: 20}
      - id: NOISY
        steps: [{type: build, outputs: [{id: noisy}]}]
      - id: BROKEN
        steps:
          - {type: build, id: build_broken, name: Build broken, outputs: [{id: broken}]}
      - id: LONG
        steps: [{type: build, id: forever, outputs: [{id: forever}]}]
apiKeys:
  - {key: scenario-cli-key-9f8e7d, id: cli, projects: {TEST_PROJECT: [READ_CONF, RUN_SCENARIOS, MONITOR_JOBS]}}
  - {key: reader-key, id: reader, projects: {TEST_PROJECT: [READ_CONF]}}
"#;

mod exit {
    pub(crate) const SUCCESS: i32 = 0;
    pub(crate) const FAILED: i32 = 1;
    pub(crate) const ABORTED: i32 = 2;
    pub(crate) const WAIT_TIMEOUT: i32 = 3;
    pub(crate) const DSS_ERROR: i32 = 4;
    pub(crate) const WARNING: i32 = 5;
    pub(crate) const CANCELLED: i32 = 6;
    pub(crate) const USAGE: i32 = 64;
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn emulator() -> Handle {
    emulator::spawn(
        Config::from_yaml(EMULATOR).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// Runs `kube-dss scenarios ARGS` with the emulator's URL, the key and the project in the environment,
/// and `RUST_LOG=trace` so that any leak through logging would show.
async fn scenarios(emu: &Handle, args: &[&str]) -> Run {
    scenarios_with(emu, args, &[], None).await
}

async fn scenarios_with(emu: &Handle, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-dss"));
    command
        .arg("scenarios")
        .args(args)
        .env_clear()
        .env("DSS_URL", emu.base_url())
        .env("DSS_API_KEY", KEY)
        .env("DSS_PROJECT", "TEST_PROJECT")
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

/// The `kube-dss scenarios:` lines of stderr.
fn errors(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("kube-dss scenarios:"))
        .collect()
}

/// `RUN_ID OUTCOME`, the last line of a wait.
fn run_and_outcome(run: &Run) -> (String, String) {
    let last = run.stdout.lines().last().unwrap();
    let (id, outcome) = last.split_once(' ').unwrap();
    (id.to_owned(), outcome.to_owned())
}

/// Starts LONG and waits until its run is current; the run id.
async fn long_running(emu: &Handle) -> String {
    let fire = scenarios(emu, &["run", "LONG"]).await;
    assert_eq!(fire.code, exit::SUCCESS, "{}", fire.stderr);
    let status_of = || async {
        let run = scenarios(emu, &["status", "LONG", "-o", "json"]).await;
        serde_json::from_str::<Value>(&run.stdout).unwrap()
    };
    for _ in 0..200 {
        let status = status_of().await;
        if status["status"]["running"] == true {
            return status["lastRuns"][0]["runId"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("LONG did not start");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_and_wait_exit_codes_follow_the_outcome() {
    let emu = emulator().await;
    let ok = scenarios(&emu, &["run", "DAILY", "--wait"]).await;
    assert_eq!(ok.code, exit::SUCCESS, "{}", ok.stderr);
    let lines: Vec<&str> = ok.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", ok.stdout);
    assert!(lines[0].starts_with("manual "), "the fire first: {}", lines[0]);
    assert_eq!(run_and_outcome(&ok).1, "SUCCESS");
    assert_ne!(
        lines[0].split(' ').nth(1),
        lines[1].split(' ').next(),
        "a trigger run id is not a run id"
    );

    let failed = scenarios(&emu, &["run", "BROKEN", "--wait"]).await;
    assert_eq!(
        (failed.code, run_and_outcome(&failed).1.as_str()),
        (exit::FAILED, "FAILED")
    );
    let warned = scenarios(&emu, &["run", "NOISY", "--wait"]).await;
    assert_eq!(
        (warned.code, run_and_outcome(&warned).1.as_str()),
        (exit::WARNING, "WARNING")
    );

    // JSON: the fire and the run with its steps, as DSS sent them.
    let json = scenarios(
        &emu,
        &[
            "run",
            "DAILY",
            "--wait",
            "-o",
            "json",
            "--param",
            "day=2024-01-01",
        ],
    )
    .await;
    assert_eq!(json.code, exit::SUCCESS, "{}", json.stderr);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["fire"]["trigger"]["id"], "manual");
    assert_eq!(doc["run"]["scenarioRun"]["result"]["outcome"], "SUCCESS");
    assert_eq!(
        doc["run"]["scenarioRun"]["trigger"]["params"]["day"],
        "2024-01-01"
    );
    assert_eq!(doc["run"]["stepRuns"].as_array().unwrap().len(), 2);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_now_wait_later_for_the_fire_or_the_run() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("params.json");
    std::fs::write(&file, r#"{"mode": "full", "n": 3, "day": "from-file"}"#).unwrap();
    let fired = scenarios(
        &emu,
        &[
            "run",
            "DAILY",
            "--params",
            file.to_str().unwrap(),
            "--param",
            "day=2024-02-02",
        ],
    )
    .await;
    assert_eq!(fired.code, exit::SUCCESS, "{}", fired.stderr);
    let fire: Vec<&str> = fired.stdout.split_whitespace().collect();
    assert_eq!(fire.len(), 2);
    let waited = scenarios(&emu, &["wait", "DAILY", "--fire", fire[0], fire[1]]).await;
    assert_eq!(waited.code, exit::SUCCESS, "{}", waited.stderr);
    let (run_id, outcome) = run_and_outcome(&waited);
    assert_eq!(outcome, "SUCCESS");
    // The run id waits too (already finished: at once), and its status shows the parameters.
    let again = scenarios(&emu, &["wait", "DAILY", &run_id, "-o", "json"]).await;
    assert_eq!(again.code, exit::SUCCESS);
    let doc: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        doc["scenarioRun"]["trigger"]["params"],
        serde_json::json!({"mode": "full", "n": 3, "day": "2024-02-02"})
    );
    // Parameters from stdin, in YAML.
    let piped = scenarios_with(
        &emu,
        &["run", "DAILY", "--params", "-", "--wait"],
        &[],
        Some("mode: yaml\n"),
    )
    .await;
    assert_eq!(piped.code, exit::SUCCESS, "{}", piped.stderr);
    // Nothing running: nothing to wait for.
    let nothing = scenarios(&emu, &["wait", "DAILY"]).await;
    assert_eq!(nothing.code, exit::USAGE);
    assert!(
        errors(&nothing)[0].contains("no run of TEST_PROJECT.DAILY is running"),
        "{}",
        nothing.stderr
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fire_while_running_is_cancelled_and_abort_stops_the_current_run() {
    let emu = emulator().await;
    let run_id = long_running(&emu).await;
    let cancelled = scenarios(&emu, &["run", "LONG", "--wait"]).await;
    assert_eq!(cancelled.code, exit::CANCELLED, "{}", cancelled.stderr);
    assert!(
        errors(&cancelled)[0].contains("DSS cancelled the trigger fire manual "),
        "{}",
        cancelled.stderr
    );
    // Waiting for the current run, with a deadline: exit 3.
    let timed_out = scenarios(&emu, &["wait", "LONG", "--timeout", "300ms"]).await;
    assert_eq!(timed_out.code, exit::WAIT_TIMEOUT);
    assert!(
        errors(&timed_out)[0].contains(&format!("run {run_id} is still running")),
        "{}",
        timed_out.stderr
    );
    // Abort with a guard that does not match: nothing is aborted.
    let guarded = scenarios(&emu, &["abort", "LONG", "--only-run", "2020-01-01-00-00-00-000"]).await;
    assert_eq!((guarded.code, guarded.stdout.as_str()), (exit::SUCCESS, ""));
    assert!(errors(&guarded)[0].contains(&format!("is {run_id}, not 2020-01-01-00-00-00-000: not aborted")));
    let aborted = scenarios(&emu, &["abort", "LONG", "--only-run", &run_id]).await;
    assert_eq!(
        (aborted.code, aborted.stdout.trim()),
        (exit::SUCCESS, run_id.as_str())
    );
    let waited = scenarios(&emu, &["wait", "LONG", &run_id]).await;
    assert_eq!(
        (waited.code, run_and_outcome(&waited).1.as_str()),
        (exit::ABORTED, "ABORTED")
    );
    let idle = scenarios(&emu, &["abort", "LONG"]).await;
    assert_eq!((idle.code, idle.stdout.as_str()), (exit::SUCCESS, ""));
    assert!(errors(&idle)[0].contains("no run of TEST_PROJECT.LONG is running"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_status_and_logs() {
    let emu = emulator().await;
    let list = scenarios(&emu, &["list"]).await;
    assert_eq!(list.code, exit::SUCCESS);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("RUNNING"));
    assert!(
        lines[1].starts_with("DAILY") && lines[1].contains("Daily refresh"),
        "{}",
        list.stdout
    );
    let json: Value = serde_json::from_str(&scenarios(&emu, &["list", "-o", "json"]).await.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);

    let failed = scenarios(&emu, &["run", "BROKEN", "--wait"]).await;
    let (run_id, _) = run_and_outcome(&failed);
    let status = scenarios(&emu, &["status", "BROKEN"]).await;
    assert_eq!(status.code, exit::SUCCESS);
    assert!(status.stdout.contains("RUNNING:  false"), "{}", status.stdout);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with(&run_id) && l.contains("FAILED")),
        "{}",
        status.stdout
    );
    let details = scenarios(&emu, &["status", "BROKEN", &run_id]).await;
    assert_eq!(details.code, exit::SUCCESS);
    let step = details
        .stdout
        .lines()
        .find(|l| l.starts_with("build_broken"))
        .unwrap();
    assert!(
        step.contains("Build broken") && step.contains("build_flowitem") && step.contains("FAILED"),
        "{step}"
    );
    assert!(step.contains("build_broken_NP_"), "the step's job: {step}");
    assert!(step.ends_with("failed: Job failed: bad input"), "{step}");

    let log = scenarios(&emu, &["log", "BROKEN", &run_id]).await;
    assert_eq!(log.code, exit::SUCCESS);
    assert!(log.stdout.contains("started by trigger manual"));
    let step_log = scenarios(
        &emu,
        &["log", "BROKEN", &run_id, "--step", "build_broken", "--tail", "4"],
    )
    .await;
    assert_eq!(step_log.stdout.lines().count(), 4, "{}", step_log.stdout);
    assert!(step_log.stdout.contains("bad input"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_one_line_with_their_exit_code() {
    let emu = emulator().await;
    let missing = scenarios(&emu, &["status", "NOPE"]).await;
    assert_eq!(missing.code, exit::DSS_ERROR);
    assert_eq!(
        errors(&missing),
        [
            "kube-dss scenarios: DSS get_scenario_status: HTTP 404: com.dataiku.dip.server.controllers.NotFoundException: Scenario TEST_PROJECT.NOPE does not exist"
        ]
    );
    let forbidden = scenarios_with(&emu, &["run", "DAILY"], &[("DSS_API_KEY", "reader-key")], None).await;
    assert_eq!(forbidden.code, exit::DSS_ERROR);
    assert!(errors(&forbidden)[0].contains("HTTP 403") && errors(&forbidden)[0].contains("RUN_SCENARIOS"));
    for bad in [
        &["run", "DAILY", "--param", "novalue"][..],
        &["run", "DAILY", "--wait-timeout", "5m"],
        &["wait", "DAILY", "--fire", "manual"],
        &["frobnicate"],
    ] {
        assert_eq!(scenarios(&emu, bad).await.code, exit::USAGE, "{bad:?}");
    }
    let no_project = scenarios_with(&emu, &["list"], &[("DSS_PROJECT", "")], None).await;
    assert_eq!(no_project.code, exit::USAGE);
    let bad_file = scenarios(&emu, &["run", "DAILY", "--params", "/nonexistent.json"]).await;
    assert_eq!(bad_file.code, exit::USAGE);
    assert!(errors(&bad_file)[0].contains("cannot read the run parameters file"));
    let help = scenarios(&emu, &["--help"]).await;
    assert_eq!(help.code, exit::SUCCESS);
    for line in [
        "5   the run ended WARNING",
        "6   DSS cancelled the trigger fire",
        "64  usage error",
    ] {
        assert!(help.stdout.contains(line), "{line}: {}", help.stdout);
    }
    emu.shutdown().await;
}
