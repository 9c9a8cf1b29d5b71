//! End to end: DatasetBuildSchedules run by the operator binary against the real kube-apiserver and
//! the DSS emulator, with 6-field schedules of a few seconds. Which builds exist comes from the
//! apiserver, which partitions were built from the emulator's own job records.

// Fixture helpers outside #[test] functions fail loudly on set-up errors, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod harness;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use harness::{Operator, TestNs, wait_for, wait_gone};
use jiff::{Timestamp, tz::TimeZone};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kube_dss::{
    crd::{DatasetBuild, DatasetBuildSchedule, Phase},
    emulator::{self, admin::AdminClient},
};
use serde_json::json;

const KEY: &str = "test-key-9a4c1e7b2d";

const EMULATOR: &str = r#"
instance: {maxRunningActivities: 50}
defaults: {durationMs: 500}
projects:
  - projectKey: PROJ
    datasets:
      - name: daily
        partitioning: [{name: slot, type: value}]
        build: {durationMs: 500}
      - name: slowish
        partitioning: [{name: slot, type: value}]
        build: {durationMs: 5000}
      - name: endless
        partitioning: [{name: slot, type: value}]
        build: {durationMs: 600000}
      - name: broken
        partitioning: [{name: slot, type: value}]
        build: {durationMs: 300, outcome: FAILED, message: "Job failed: boom"}
apiKeys:
  - key: test-key-9a4c1e7b2d
    id: kube-dss-operator
    projects: {PROJ: [READ_CONF, RUN_JOBS, MONITOR_JOBS]}
"#;

/// The partition FORMAT of most schedules here, and the same in strftime for the checks.
const SLOT_FORMAT: &str = "%Y-%m-%dT%H-%M-%S";

struct Fixture {
    ns: TestNs,
    emu: emulator::Handle,
    admin: AdminClient,
    op: Option<Operator>,
    schedules: Api<DatasetBuildSchedule>,
    builds: Api<DatasetBuild>,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let emu = harness::emulator(EMULATOR).await;
        let admin = AdminClient::new(emu.base_url());
        let client = harness::client().await;
        let ns = TestNs::new(&client, prefix).await;
        ns.secret("dss-api-key", "apiKey", KEY).await;
        ns.connection("dss", &emu.base_url(), Some((100, 16))).await;
        let op = Self::operator(&ns.name).await;
        Fixture {
            schedules: ns.api(),
            builds: ns.api(),
            ns,
            emu,
            admin,
            op: Some(op),
        }
    }

    async fn operator(ns: &str) -> Operator {
        let op = Operator::start(ns, &[]);
        op.ready().await;
        op
    }

    /// Creates a schedule building `output` with the partition `${slot:<SLOT_FORMAT>}`; `extra`
    /// is merged into the spec.
    async fn schedule(&self, name: &str, output: &str, extra: serde_json::Value) -> DatasetBuildSchedule {
        let mut spec = json!({
            "schedule": "*/2 * * * * *",
            "buildTemplate": {"spec": {
                "connectionRef": {"name": "dss"},
                "projectKey": "PROJ",
                "outputs": [{"id": output, "partition": format!("${{slot:{SLOT_FORMAT}}}")}],
            }},
        });
        merge(&mut spec, extra);
        let schedule: DatasetBuildSchedule = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuildSchedule",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.schedules
            .create(&PostParams::default(), &schedule)
            .await
            .unwrap()
    }

    async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.schedules
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// The schedule's builds, by slot (Unix seconds, from the slot label).
    async fn children(&self, schedule: &str) -> BTreeMap<i64, DatasetBuild> {
        let lp = ListParams::default().labels(&format!("kube-dss.dev/schedule={schedule}"));
        let mut out = BTreeMap::new();
        for b in self.builds.list(&lp).await.unwrap().items {
            let slot: i64 = b.labels()["kube-dss.dev/slot"].parse().unwrap();
            assert!(out.insert(slot, b).is_none(), "two builds for the slot {slot}");
        }
        out
    }

    /// Waits until the schedule has at least `n` builds.
    async fn wait_children(&self, schedule: &str, n: usize, secs: u64) -> BTreeMap<i64, DatasetBuild> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let children = self.children(schedule).await;
            if children.len() >= n {
                return children;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{schedule}: {} builds after {secs}s, wanted {n}; schedule: {:?}",
                children.len(),
                self.schedules.get(schedule).await.ok().and_then(|s| s.status)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// DSS jobs of an output, by the partition they built.
    async fn jobs_by_partition(&self, output: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for j in self.admin.jobs().await.unwrap() {
            let Some(o) = j.def["outputs"].as_array().and_then(|o| o.first()) else {
                continue;
            };
            if o["id"] == output {
                let partition = o["targetPartition"].as_str().unwrap_or_default().to_string();
                out.entry(partition).or_default().push(j.state.clone());
            }
        }
        out
    }

    async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = self.ns.api();
        api.list(&ListParams::default()).await.unwrap().items
    }

    async fn event_reasons(&self) -> BTreeSet<String> {
        self.events().await.into_iter().filter_map(|e| e.reason).collect()
    }

    /// Waits until the operator's `/metrics` series reads `want` (it is published right after the
    /// status write the test saw), and fails with what it reads otherwise.
    async fn wait_metric(&self, series: &str, want: f64) {
        let op = self.op.as_ref().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = op.metric(series).await;
            if value == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} reads {value:?}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kubectl get dsbs NAME` as a table: the header's columns and the row's cells, cut at the
    /// header's column starts (a cell may hold spaces: the schedule).
    fn printed(&self, name: &str) -> Vec<(String, String)> {
        let out = harness::kubectl(&["get", "dsbs", name, "-n", &self.ns.name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let (header, row) = (lines.next().unwrap(), lines.next().unwrap());
        let starts: Vec<usize> = header
            .char_indices()
            .filter(|(i, c)| !c.is_whitespace() && (*i == 0 || header[..*i].ends_with(' ')))
            .map(|(i, _)| i)
            .collect();
        starts
            .iter()
            .enumerate()
            .map(|(k, &start)| {
                let end = starts.get(k + 1).copied();
                let cell = |line: &str| {
                    let line_end = line.len();
                    line[start.min(line_end)..end.unwrap_or(line_end).min(line_end)]
                        .trim()
                        .to_string()
                };
                (cell(header), cell(row))
            })
            .collect()
    }

    fn kill_operator(&mut self) {
        if let Some(mut op) = self.op.take() {
            op.kill();
        }
    }

    async fn cleanup(mut self) {
        if self.op.is_none() {
            self.op = Some(Self::operator(&self.ns.name).await);
        }
        let _ = self
            .schedules
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        for s in self
            .schedules
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            wait_gone(&self.schedules, &s.name_any(), Duration::from_secs(60)).await;
        }
        for b in self
            .builds
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            wait_gone(&self.builds, &b.name_any(), Duration::from_secs(60)).await;
        }
        let log = self.op.as_ref().map(Operator::log_text).unwrap_or_default();
        assert!(!log.contains(KEY), "the API key leaked into the operator log");
        drop(self.op.take());
        self.ns.cleanup().await;
        self.emu.shutdown().await;
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A slot (Unix seconds) formatted in a zone, as the operator formats placeholders.
fn format_slot(slot: i64, zone: &str, format: &str) -> String {
    let tz = TimeZone::get(zone).unwrap();
    Timestamp::from_second(slot)
        .unwrap()
        .to_zoned(tz)
        .strftime(format)
        .to_string()
}

fn partition(b: &DatasetBuild) -> String {
    b.spec.outputs[0].partition.clone().unwrap_or_default()
}

fn hms(slot: i64) -> String {
    format_slot(slot, "UTC", "%H:%M:%S")
}

fn status(s: &DatasetBuildSchedule) -> kube_dss::crd::DatasetBuildScheduleStatus {
    s.status.clone().unwrap_or_default()
}

/// The operator has seen the suspension: no build is created from now on.
fn suspended(s: &DatasetBuildSchedule) -> bool {
    status(s).observed_generation == s.metadata.generation
        && condition(s, "Ready").is_some_and(|c| c.reason == "Suspended")
}

fn condition<'a>(
    s: &'a DatasetBuildSchedule,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_are_named_labelled_and_partitioned_by_their_slot() {
    let f = Fixture::new("sch-names").await;
    // Kathmandu is UTC+05:45: the partition must be the slot's time there, not in UTC.
    let zone = "Asia/Kathmandu";
    let created = f
        .schedule(
            "names",
            "daily",
            json!({
                "timeZone": zone,
                "concurrencyPolicy": "Allow",
                "successfulBuildsHistoryLimit": 100,
                "buildTemplate": {
                    "metadata": {"labels": {"team": "data"}},
                    "spec": {"rerunToken": "${slot-1d:%Y-%m-%d}"},
                },
            }),
        )
        .await;
    let children = f.wait_children("names", 3, 60).await;
    for (slot, b) in &children {
        assert_eq!(slot % 2, 0, "a slot of */2 seconds");
        assert_eq!(
            b.name_any(),
            format!("names-{slot}"),
            "6 fields: named by the second"
        );
        assert_eq!(partition(b), format_slot(*slot, zone, SLOT_FORMAT));
        assert_eq!(
            b.spec.rerun_token.as_deref(),
            Some(format_slot(slot - 86_400, zone, "%Y-%m-%d").as_str())
        );
        assert_eq!(b.labels().get("team").map(String::as_str), Some("data"));
        assert_eq!(
            b.labels().get("kube-dss.dev/schedule").map(String::as_str),
            Some("names")
        );
        let owner = &b.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            (created.uid().unwrap().as_str(), Some(true))
        );
        assert!(b.annotations()["kube-dss.dev/scheduled-time"].ends_with("+05:45[Asia/Kathmandu]"));
    }
    // Each build ran its own partition, once.
    let newest = *children.keys().next_back().unwrap();
    wait_for(
        &f.builds,
        &format!("names-{newest}"),
        Duration::from_secs(60),
        |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded),
    )
    .await;
    let jobs = f.jobs_by_partition("daily").await;
    for (slot, b) in &children {
        assert_eq!(
            jobs.get(&partition(b)).map(Vec::len),
            Some(1),
            "one DSS job for the slot {slot}: {jobs:?}"
        );
    }
    let s = f.schedules.get("names").await.unwrap();
    let st = status(&s);
    assert_eq!(st.observed_generation, s.metadata.generation);
    assert!(st.last_schedule_time.unwrap().0.as_second() >= newest);
    assert!(st.next_schedule_time.unwrap().0.as_second() > newest);
    assert_eq!(condition(&s, "Ready").unwrap().status, "True");
    assert!(condition(&s, "Stalled").is_none());
    assert_eq!(s.finalizers(), ["kube-dss.dev/delete-builds"]);
    assert!(f.event_reasons().await.contains("BuildCreated"));
    let metrics = f.op.as_ref().unwrap().metrics().await;
    assert!(
        metrics.contains("kube_dss_schedule_lag_seconds_count"),
        "{metrics}"
    );
    // What `kubectl get dsbs` prints: while scheduling, the next slot; once suspended and idle (the
    // row then holds still), every column.
    let next = f
        .printed("names")
        .into_iter()
        .find(|(c, _)| c == "NEXT")
        .unwrap()
        .1;
    assert!(
        next.parse::<Timestamp>().is_ok(),
        "NEXT is the next slot: {next:?}"
    );
    f.patch_spec("names", json!({"suspend": true})).await;
    wait_for(
        &f.schedules,
        "names",
        Duration::from_secs(30),
        |s: &DatasetBuildSchedule| suspended(s) && status(s).active_count == Some(0),
    )
    .await;
    let printed = f.printed("names");
    let columns: Vec<&str> = printed.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        columns,
        [
            "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "NEXT"
        ]
    );
    let cell = |column: &str| printed.iter().find(|(c, _)| c == column).unwrap().1.clone();
    assert_eq!(cell("NAME"), "names");
    assert_eq!(cell("SCHEDULE"), "*/2 * * * * *");
    assert_eq!(cell("TIMEZONE"), zone);
    assert_eq!(cell("SUSPEND"), "true");
    assert_eq!(cell("ACTIVE"), "0");
    // LAST is a date, printed as its age; a suspended schedule has no next slot (an empty cell).
    let last = cell("LAST");
    assert!(
        last.ends_with('s') || last.ends_with('m'),
        "LAST is the age of the last slot: {printed:?}"
    );
    assert_eq!(cell("NEXT"), "", "{printed:?}");
    f.cleanup().await;
}

/// A downtime of the operator, as a test saw it.
struct Downtime {
    /// Every build of the schedule once the restarted operator has caught up, by slot.
    children: BTreeMap<i64, DatasetBuild>,
    /// The newest slot built before the kill.
    last_before: i64,
    /// When the operator was killed and restarted (Unix seconds).
    killed: i64,
    restarted: i64,
}

/// Kills the operator after the schedule's first build, restarts it `down` seconds later, and
/// waits until it has built a few slots past the restart.
async fn downtime(f: &mut Fixture, name: &str, down: u64) -> Downtime {
    let before = f.wait_children(name, 1, 60).await;
    f.kill_operator();
    let killed = Timestamp::now().as_second();
    let last_before = *before.keys().next_back().unwrap();
    tokio::time::sleep(Duration::from_secs(down)).await;
    let restarted = Timestamp::now().as_second();
    f.op = Some(Fixture::operator(&f.ns.name).await);
    let after = restarted + 4;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let children = loop {
        let children = f.children(name).await;
        if children.keys().next_back().is_some_and(|s| *s >= after) {
            break children;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no build after the restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    Downtime {
        children,
        last_before,
        killed,
        restarted,
    }
}

async fn wait_succeeded(f: &Fixture, name: &str) {
    wait_for(&f.builds, name, Duration::from_secs(60), |b: &DatasetBuild| {
        b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_downtime_catch_up_all_builds_every_missed_slot_once_with_its_partition() {
    let mut f = Fixture::new("sch-all").await;
    f.schedule(
        "all",
        "daily",
        json!({"catchUp": "All", "maxCatchUpRuns": 50, "concurrencyPolicy": "Allow", "successfulBuildsHistoryLimit": 100}),
    )
    .await;
    let d = downtime(&mut f, "all", 9).await;
    // The slots (every 2 s) that came after the last build before the kill and before the restart.
    let missed: Vec<i64> = ((d.last_before + 1)..=d.restarted)
        .filter(|s| s % 2 == 0)
        .collect();
    assert!(
        missed.len() >= 3,
        "the downtime covered several slots: {missed:?}"
    );
    // Every slot from the first build to the last has exactly one build: none lost, none doubled.
    let first = *d.children.keys().next().unwrap();
    let last = *d.children.keys().next_back().unwrap();
    let want: Vec<i64> = (first..=last).filter(|s| s % 2 == 0).collect();
    assert_eq!(
        d.children.keys().copied().collect::<Vec<_>>(),
        want,
        "one build per slot"
    );
    for slot in &missed {
        wait_succeeded(&f, &format!("all-{slot}")).await;
    }
    let jobs = f.jobs_by_partition("daily").await;
    println!(
        "\ndowntime catch-up (catchUp: All): operator killed at {} UTC, restarted at {} UTC",
        hms(d.killed),
        hms(d.restarted)
    );
    let list: Vec<String> = missed.iter().map(|s| hms(*s)).collect();
    println!(
        "  slots missed while it was down: {} ({})",
        missed.len(),
        list.join(", ")
    );
    for slot in &missed {
        let b = &d.children[slot];
        let p = partition(b);
        assert_eq!(
            p,
            format_slot(*slot, "UTC", SLOT_FORMAT),
            "the slot's own partition, not the catch-up time's"
        );
        assert_eq!(
            jobs.get(&p).cloned().unwrap_or_default(),
            vec!["DONE".to_string()],
            "built exactly once: {p}"
        );
        let made = b.metadata.creation_timestamp.as_ref().unwrap().0.as_second();
        assert!(made >= d.restarted, "created by the restarted operator");
        println!(
            "  slot {} -> build {} created {}s after its slot -> partition {p}: {} DSS job, DONE",
            hms(*slot),
            b.name_any(),
            made - slot,
            jobs[&p].len()
        );
    }
    let total: usize = jobs.values().map(Vec::len).sum();
    println!(
        "  builds created for the missed slots: {}; every slot {}..{} has one build; {total} DSS jobs for {} partitions",
        missed.len(),
        hms(first),
        hms(last),
        jobs.len()
    );
    assert_eq!(total, jobs.len(), "one DSS job per partition: {jobs:?}");
    let s = f.schedules.get("all").await.unwrap();
    assert_eq!(
        status(&s).missed_slots,
        None,
        "All within maxCatchUpRuns misses nothing"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_downtime_catch_up_all_beyond_max_catch_up_runs_builds_the_newest_and_counts_the_rest() {
    let mut f = Fixture::new("sch-cap").await;
    f.schedule(
        "cap",
        "daily",
        json!({"catchUp": "All", "maxCatchUpRuns": 2, "concurrencyPolicy": "Allow", "successfulBuildsHistoryLimit": 100}),
    )
    .await;
    let d = downtime(&mut f, "cap", 11).await;
    // Builds created before the restart are the killed operator's (creation times are whole seconds,
    // and it was killed seconds before the restart); the restarted one's first two are its catch-up.
    let made = |b: &DatasetBuild| b.metadata.creation_timestamp.as_ref().unwrap().0.as_second();
    let old_last = *d
        .children
        .iter()
        .filter(|(_, b)| made(b) < d.restarted)
        .map(|(s, _)| s)
        .next_back()
        .unwrap();
    let new: Vec<i64> = d
        .children
        .iter()
        .filter(|(_, b)| made(b) >= d.restarted)
        .map(|(s, _)| *s)
        .collect();
    // At its first reconcile the newest 2 due slots are built, the older ones are not; after them,
    // every slot is built again.
    let (first, last) = (new[0], *new.last().unwrap());
    assert_eq!(
        new,
        (first..=last).filter(|s| s % 2 == 0).collect::<Vec<_>>(),
        "from the first catch-up slot on, every slot has one build"
    );
    let missed: Vec<i64> = ((old_last + 1)..first).filter(|s| s % 2 == 0).collect();
    assert!(
        missed.len() >= 2,
        "more slots were missed than maxCatchUpRuns runs: {missed:?}"
    );
    for slot in &new[..2] {
        assert_eq!(
            partition(&d.children[slot]),
            format_slot(*slot, "UTC", SLOT_FORMAT)
        );
    }
    let s = f.schedules.get("cap").await.unwrap();
    let counted = i64::try_from(missed.len()).unwrap();
    assert_eq!(
        status(&s).missed_slots,
        Some(counted),
        "the older missed slots are counted"
    );
    let warned: Vec<String> = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TooManyMissedSlots"))
        .map(|e| format!("{} {}", e.type_.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with("Warning ")
            && warned[0].contains(&format!(
                "{} missed slot(s) are beyond maxCatchUpRuns=2",
                missed.len()
            )),
        "{warned:?}"
    );
    f.wait_metric(
        r#"kube_dss_schedule_slots_missed_total{reason="MaxCatchUpRuns"}"#,
        missed.len() as f64,
    )
    .await;
    println!(
        "\ndowntime catch-up (catchUp: All, maxCatchUpRuns: 2): {} slots were due when the restarted operator caught up; the newest 2 built ({}, {}), {} counted in status.missedSlots and kube_dss_schedule_slots_missed_total{{reason=\"MaxCatchUpRuns\"}}",
        missed.len() + 2,
        hms(new[0]),
        hms(new[1]),
        missed.len()
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_downtime_catch_up_latest_builds_only_the_newest_missed_slot() {
    let mut f = Fixture::new("sch-latest").await;
    f.schedule(
        "latest",
        "daily",
        json!({"concurrencyPolicy": "Allow", "successfulBuildsHistoryLimit": 100}),
    )
    .await;
    let d = downtime(&mut f, "latest", 9).await;
    // The first build after the restart is the newest slot due when the operator came back; every
    // slot between it and the last build before the kill is missed, and counted.
    let (&caught_up, b) = d.children.range((d.last_before + 1)..).next().unwrap();
    let missing: Vec<i64> = ((d.last_before + 1)..caught_up).filter(|s| s % 2 == 0).collect();
    assert!(
        missing.len() >= 3,
        "several slots came while the operator was down: {missing:?}"
    );
    assert!(
        caught_up >= d.restarted - 1,
        "the build after the restart is for the newest slot"
    );
    assert_eq!(partition(b), format_slot(caught_up, "UTC", SLOT_FORMAT));
    assert!(b.metadata.creation_timestamp.as_ref().unwrap().0.as_second() >= d.restarted);
    let s = f.schedules.get("latest").await.unwrap();
    assert_eq!(
        status(&s).missed_slots,
        Some(i64::try_from(missing.len()).unwrap()),
        "the others are counted as missed"
    );
    // After it, every slot runs again.
    let after: Vec<i64> = d.children.range(caught_up..).map(|(s, _)| *s).collect();
    let want: Vec<i64> = (caught_up..=*after.last().unwrap())
        .filter(|s| s % 2 == 0)
        .collect();
    assert_eq!(after, want);
    println!(
        "\ndowntime catch-up (catchUp: Latest): {} slots came while the operator was down: the newest built ({}, partition {}), {} counted in status.missedSlots",
        missing.len() + 1,
        b.name_any(),
        partition(b),
        missing.len()
    );
    // The restarted operator's metrics: the missed slots, and one lag per build it created.
    f.patch_spec("latest", json!({"suspend": true})).await;
    let s = wait_for(&f.schedules, "latest", Duration::from_secs(30), suspended).await;
    f.wait_metric(
        r#"kube_dss_schedule_slots_missed_total{reason="CatchUpLatest"}"#,
        status(&s).missed_slots.unwrap() as f64,
    )
    .await;
    let created = f
        .children("latest")
        .await
        .values()
        .filter(|b| b.metadata.creation_timestamp.as_ref().unwrap().0.as_second() >= d.restarted)
        .count();
    f.wait_metric("kube_dss_schedule_lag_seconds_count", created as f64)
        .await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forbid_never_runs_two_builds_at_once() {
    let f = Fixture::new("sch-forbid").await;
    f.schedule("forbid", "slowish", json!({"successfulBuildsHistoryLimit": 100}))
        .await;
    // Jobs of 5 s on slots of 2 s: every slot comes while a build is active.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(24);
    while tokio::time::Instant::now() < deadline {
        let active = f
            .children("forbid")
            .await
            .values()
            .filter(|b| {
                !matches!(
                    b.status.as_ref().and_then(|s| s.phase),
                    Some(Phase::Succeeded | Phase::Failed | Phase::Aborted)
                )
            })
            .count();
        assert!(active <= 1, "{active} builds active at once");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut jobs = f.admin.jobs().await.unwrap();
    jobs.sort_by_key(|j| j.initiation_timestamp);
    assert!(
        jobs.len() >= 3,
        "several builds ran one after the other: {}",
        jobs.len()
    );
    for pair in jobs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.end_time > 0 && b.initiation_timestamp >= a.end_time,
            "DSS job {} started before {} ended",
            b.id,
            a.id
        );
    }
    let s = f.schedules.get("forbid").await.unwrap();
    assert!(
        status(&s).missed_slots.unwrap_or(0) > 0,
        "slots that came during a build are missed"
    );
    assert!(f.event_reasons().await.contains("ConcurrencyForbidden"));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_aborts_the_active_job_and_starts_the_new_slot() {
    let f = Fixture::new("sch-replace").await;
    f.schedule(
        "replace",
        "endless",
        json!({"schedule": "*/8 * * * * *", "concurrencyPolicy": "Replace"}),
    )
    .await;
    let first = f.wait_children("replace", 1, 60).await;
    let (&slot, b) = first.iter().next().unwrap();
    let running = wait_for(
        &f.builds,
        &b.name_any(),
        Duration::from_secs(30),
        |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running),
    )
    .await;
    let job = running.status.unwrap().job_id.unwrap();
    // The next slot replaces it: the build is deleted (its finalizer aborts the job), then the new
    // build is created.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let next = loop {
        let children = f.children("replace").await;
        if let Some((&s, b)) = children.iter().find(|(s, _)| **s > slot) {
            break (s, b.clone());
        }
        assert!(tokio::time::Instant::now() < deadline, "no second build");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        f.builds.get_opt(&b.name_any()).await.unwrap().is_none(),
        "the replaced build is gone before the new one"
    );
    let jobs = f.admin.jobs().await.unwrap();
    let old = jobs.iter().find(|j| j.id == job).unwrap();
    assert_eq!(old.state, "ABORTED", "the replaced build's DSS job was aborted");
    wait_for(
        &f.builds,
        &next.1.name_any(),
        Duration::from_secs(30),
        |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running),
    )
    .await;
    assert!(f.event_reasons().await.contains("BuildReplaced"));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_operators_without_leader_election_create_one_build_per_slot() {
    let mut f = Fixture::new("sch-two").await;
    let second = Fixture::operator(&f.ns.name).await;
    f.schedule(
        "two",
        "daily",
        json!({"concurrencyPolicy": "Allow", "successfulBuildsHistoryLimit": 100}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    // Stop the slots, let the last builds finish.
    f.patch_spec("two", json!({"suspend": true})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let children = f.children("two").await;
    let first = *children.keys().next().unwrap();
    let last = *children.keys().next_back().unwrap();
    let want: Vec<i64> = (first..=last).filter(|s| s % 2 == 0).collect();
    assert!(want.len() >= 5, "{want:?}");
    assert_eq!(
        children.keys().copied().collect::<Vec<_>>(),
        want,
        "one build per slot, none lost"
    );
    for b in children.values() {
        wait_for(
            &f.builds,
            &b.name_any(),
            Duration::from_secs(60),
            |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded),
        )
        .await;
    }
    let jobs = f.jobs_by_partition("daily").await;
    for b in children.values() {
        assert_eq!(
            jobs.get(&partition(b)).map(Vec::len),
            Some(1),
            "one DSS job for {}: {jobs:?}",
            b.name_any()
        );
    }
    // Both replicas worked: each logged schedule reconciles.
    for log in [f.op.as_ref().unwrap().log_text(), second.log_text()] {
        assert!(
            log.contains("DatasetBuildSchedule"),
            "both operators reconciled the schedule"
        );
    }
    drop(second);
    f.kill_operator();
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_limits_keep_the_newest_builds() {
    let f = Fixture::new("sch-history").await;
    f.schedule(
        "ok",
        "daily",
        json!({"concurrencyPolicy": "Allow", "successfulBuildsHistoryLimit": 2}),
    )
    .await;
    f.schedule(
        "ko",
        "broken",
        json!({"concurrencyPolicy": "Allow", "failedBuildsHistoryLimit": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    f.patch_spec("ok", json!({"suspend": true})).await;
    f.patch_spec("ko", json!({"suspend": true})).await;
    // A slot's build may be created as the suspension arrives; once the status says Suspended, the
    // reconcile that created it is over (reconciles of one schedule never overlap).
    for name in ["ok", "ko"] {
        wait_for(&f.schedules, name, Duration::from_secs(30), suspended).await;
    }
    let settled = |name: &'static str, keep: usize| {
        let f = &f;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let children = f.children(name).await;
                let finished = children.values().all(|b| {
                    matches!(
                        b.status.as_ref().and_then(|s| s.phase),
                        Some(Phase::Succeeded | Phase::Failed)
                    )
                });
                if finished && children.len() == keep {
                    return children;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name}: {} builds left, wanted {keep}",
                    children.len()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let ok = settled("ok", 2).await;
    let ko = settled("ko", 1).await;
    let ran = f.jobs_by_partition("daily").await.len();
    let failed = f.jobs_by_partition("broken").await.len();
    assert!(
        ran >= 5 && failed >= 5,
        "many builds ran ({ran} and {failed}), few are kept"
    );
    // The newest are kept.
    let newest_ok = ok.keys().next_back().unwrap();
    let all_ok = f.jobs_by_partition("daily").await;
    let newest_built = all_ok.keys().max().unwrap();
    assert_eq!(&format_slot(*newest_ok, "UTC", SLOT_FORMAT), newest_built);
    assert_eq!(
        ko.values().next().unwrap().status.as_ref().unwrap().phase,
        Some(Phase::Failed)
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_creates_nothing_and_resume_catches_up_within_the_deadline() {
    let f = Fixture::new("sch-suspend").await;
    f.schedule("s", "daily", json!({"startingDeadlineSeconds": 3, "concurrencyPolicy": "Allow", "successfulBuildsHistoryLimit": 100})).await;
    f.wait_children("s", 1, 60).await;
    f.patch_spec("s", json!({"suspend": true})).await;
    let seen = wait_for(&f.schedules, "s", Duration::from_secs(30), suspended).await;
    assert!(status(&seen).next_schedule_time.is_none());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_suspend = f.children("s").await;
    let since = Timestamp::now().as_second();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = f.children("s").await;
    assert_eq!(
        during.len(),
        at_suspend.len(),
        "a suspended schedule creates nothing"
    );
    let resumed_at = Timestamp::now().as_second();
    f.patch_spec("s", json!({"suspend": false})).await;
    let resumed = wait_for(
        &f.schedules,
        "s",
        Duration::from_secs(30),
        |s: &DatasetBuildSchedule| status(s).skipped_slots.unwrap_or(0) >= 2,
    )
    .await;
    assert_eq!(condition(&resumed, "Ready").unwrap().status, "True");
    let after = f.wait_children("s", during.len() + 1, 30).await;
    // No build for a slot of the suspension older than the deadline.
    let late: Vec<&i64> = after
        .keys()
        .filter(|s| **s > since && **s < resumed_at - 3)
        .collect();
    assert!(late.is_empty(), "builds for slots the deadline skipped: {late:?}");
    assert!(f.event_reasons().await.contains("SlotSkipped"));
    let skipped = status(&f.schedules.get("s").await.unwrap())
        .skipped_slots
        .unwrap();
    f.wait_metric("kube_dss_schedule_slots_skipped_total", skipped as f64)
        .await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_with_catch_up_all_builds_every_slot_within_the_deadline() {
    let f = Fixture::new("sch-resume").await;
    f.schedule(
        "r",
        "daily",
        json!({"catchUp": "All", "startingDeadlineSeconds": 8, "concurrencyPolicy": "Allow", "successfulBuildsHistoryLimit": 100}),
    )
    .await;
    f.wait_children("r", 1, 60).await;
    f.patch_spec("r", json!({"suspend": true})).await;
    wait_for(&f.schedules, "r", Duration::from_secs(30), suspended).await;
    let since = f.children("r").await.keys().next_back().copied().unwrap();
    tokio::time::sleep(Duration::from_secs(16)).await;
    let resumed_at = Timestamp::now().as_second();
    f.patch_spec("r", json!({"suspend": false})).await;
    let resumed = wait_for(
        &f.schedules,
        "r",
        Duration::from_secs(30),
        |s: &DatasetBuildSchedule| {
            status(s).observed_generation == s.metadata.generation
                && status(s)
                    .last_schedule_time
                    .is_some_and(|t| t.0.as_second() >= resumed_at - 1)
        },
    )
    .await;
    let children = f.children("r").await;
    // The slots of the suspension that were due at the resume: those older than the deadline are
    // skipped, and every one within it is built, not only the newest.
    let caught_up: Vec<i64> = children
        .keys()
        .copied()
        .filter(|s| *s > since && *s <= resumed_at)
        .collect();
    assert!(
        caught_up.len() >= 2,
        "catchUp All builds more than the newest: {caught_up:?} (resumed at {resumed_at})"
    );
    assert!(
        caught_up.iter().all(|s| *s >= resumed_at - 8),
        "a slot older than the deadline was built: {caught_up:?} (resumed at {resumed_at})"
    );
    let newest = resumed_at - resumed_at % 2;
    assert_eq!(
        caught_up,
        (caught_up[0]..=newest).filter(|s| s % 2 == 0).collect::<Vec<_>>(),
        "every slot from the oldest within the deadline to the newest is built"
    );
    for slot in &caught_up {
        assert_eq!(partition(&children[slot]), format_slot(*slot, "UTC", SLOT_FORMAT));
    }
    let skipped = status(&resumed).skipped_slots.unwrap_or(0);
    let older = ((since + 1)..caught_up[0]).filter(|s| s % 2 == 0).count();
    assert_eq!(
        skipped,
        i64::try_from(older).unwrap(),
        "the slots older than the deadline are skipped"
    );
    assert!(skipped >= 2, "{skipped}");
    assert_eq!(status(&resumed).missed_slots, None, "All within maxCatchUpRuns");
    assert!(f.event_reasons().await.contains("SlotSkipped"));
    f.wait_metric("kube_dss_schedule_slots_skipped_total", skipped as f64)
        .await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_input_stalls_the_schedule_until_it_is_fixed() {
    let f = Fixture::new("sch-stall").await;
    // Both pass admission (their shape is right); the operator finds what is wrong.
    f.schedule(
        "bad",
        "daily",
        json!({"timeZone": "Mars/Olympus", "buildTemplate": {"spec": {"rerunToken": "${slot:%!}"}}}),
    )
    .await;
    let stalled = |reason: &'static str| {
        move |s: &DatasetBuildSchedule| {
            condition(s, "Stalled").is_some_and(|c| c.status == "True" && c.reason == reason)
        }
    };
    let s = wait_for(
        &f.schedules,
        "bad",
        Duration::from_secs(30),
        stalled("InvalidTimeZone"),
    )
    .await;
    assert!(condition(&s, "Stalled").unwrap().message.contains("Mars/Olympus"));
    assert_eq!(condition(&s, "Ready").unwrap().status, "False");
    // `kube-dss schedules run` refuses it the same way: exit 2, nothing created.
    let run = cli(&["run", "bad", "-n", &f.ns.name]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("Mars/Olympus"), "{err}");
    f.patch_spec("bad", json!({"timeZone": "Europe/Paris"})).await;
    let s = wait_for(
        &f.schedules,
        "bad",
        Duration::from_secs(30),
        stalled("InvalidTemplate"),
    )
    .await;
    let message = &condition(&s, "Stalled").unwrap().message;
    assert!(
        message.contains("rerunToken") && message.contains("cannot be formatted"),
        "{message}"
    );
    let run = cli(&["run", "bad", "-n", &f.ns.name]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("rerunToken"), "{err}");
    assert!(
        f.children("bad").await.is_empty(),
        "nothing is built from an invalid schedule"
    );
    f.patch_spec(
        "bad",
        json!({"buildTemplate": {"spec": {"rerunToken": "${slot:%H%M%S}"}}}),
    )
    .await;
    let s = wait_for(
        &f.schedules,
        "bad",
        Duration::from_secs(30),
        |s: &DatasetBuildSchedule| {
            condition(s, "Stalled").is_none() && condition(s, "Ready").is_some_and(|c| c.status == "True")
        },
    )
    .await;
    assert_eq!(status(&s).observed_generation, s.metadata.generation);
    let children = f.wait_children("bad", 1, 30).await;
    let (slot, b) = children.iter().next().unwrap();
    assert_eq!(
        b.spec.rerun_token.as_deref(),
        Some(format_slot(*slot, "Europe/Paris", "%H%M%S").as_str())
    );
    let warnings: Vec<String> = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        warnings.contains(&"InvalidTimeZone".into()) && warnings.contains(&"InvalidTemplate".into()),
        "{warnings:?}"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_schedule_deletes_its_builds_and_aborts_their_jobs() {
    let f = Fixture::new("sch-delete").await;
    f.schedule("del", "endless", json!({"concurrencyPolicy": "Allow"}))
        .await;
    let children = f.wait_children("del", 2, 60).await;
    for b in children.values() {
        wait_for(
            &f.builds,
            &b.name_any(),
            Duration::from_secs(30),
            |b: &DatasetBuild| b.status.as_ref().and_then(|s| s.job_id.as_ref()).is_some(),
        )
        .await;
    }
    f.schedules.delete("del", &DeleteParams::default()).await.unwrap();
    wait_gone(&f.schedules, "del", Duration::from_secs(30)).await;
    for b in f.builds.list(&ListParams::default()).await.unwrap().items {
        wait_gone(&f.builds, &b.name_any(), Duration::from_secs(60)).await;
    }
    let jobs = f.admin.jobs().await.unwrap();
    assert!(jobs.len() >= 2);
    for j in &jobs {
        assert_eq!(
            j.state, "ABORTED",
            "{} per the builds' deletionPolicy (Abort)",
            j.id
        );
    }
    f.cleanup().await;
}

fn cli(args: &[&str]) -> std::process::Output {
    cli_as(&harness::control_plane(), args)
}

fn cli_as(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kube-dss"))
        .arg("schedules")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_run_creates_the_slot_build_once() {
    let f = Fixture::new("sch-run").await;
    // Suspended: only the command creates builds.
    f.schedule(
        "nightly",
        "daily",
        json!({"schedule": "0 2 * * *", "timeZone": "Europe/Paris", "suspend": true,
               "buildTemplate": {"spec": {"outputs": [{"id": "daily", "partition": "${slot-1d:%Y-%m-%d}"}]}}}),
    )
    .await;
    let ns = f.ns.name.clone();
    // The slot of 2024-03-31 02:00 in Paris falls in the spring-forward gap; a given slot is taken as is.
    let slot = "2024-03-31T03:00:00+02:00";
    let minutes = "2024-03-31T01:00:00Z".parse::<Timestamp>().unwrap().as_second() / 60;
    let name = format!("nightly-{minutes}");
    let dry = cli(&["run", "nightly", "-n", &ns, "--slot", slot, "--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(String::from_utf8_lossy(&dry.stdout).contains(&format!("name: {name}")));
    assert!(
        f.builds.get_opt(&name).await.unwrap().is_none(),
        "a dry run creates nothing"
    );
    let out = cli(&["run", "nightly", "-n", &ns, "--slot", slot]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("datasetbuild.kube-dss.dev/{name} created"))
    );
    let b = f.builds.get(&name).await.unwrap();
    assert_eq!(partition(&b), "2024-03-30");
    assert_eq!(
        b.annotations()
            .get("kube-dss.dev/instantiate")
            .map(String::as_str),
        Some("manual")
    );
    // The same slot again: the build exists, nothing is created.
    let again = cli(&["run", "nightly", "-n", &ns, "--slot", slot]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // The operator runs it like any build.
    wait_for(&f.builds, &name, Duration::from_secs(60), |b: &DatasetBuild| {
        b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(
        f.jobs_by_partition("daily").await.get("2024-03-30").map(Vec::len),
        Some(1)
    );
    // The current slot, without --slot.
    let now = cli(&["run", "nightly", "-n", &ns]);
    assert_eq!(
        now.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&now.stderr)
    );
    assert_eq!(f.children("nightly").await.len(), 2);
    // The Argo CD action's way: an annotation the operator acts on once per value.
    let annotate = |value: &'static str| {
        let f = &f;
        async move {
            let patch = json!({"metadata": {"annotations": {"kube-dss.dev/create-build": value}}});
            f.schedules
                .patch("nightly", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
            wait_for(
                &f.schedules,
                "nightly",
                Duration::from_secs(30),
                |s: &DatasetBuildSchedule| {
                    status(s).last_handled_create_build_annotation.as_deref() == Some(value)
                },
            )
            .await
        }
    };
    annotate("2024-04-01T00:30:20Z").await;
    let asked = format!(
        "nightly-{}",
        "2024-04-01T00:30:00Z".parse::<Timestamp>().unwrap().as_second() / 60
    );
    let b = f.builds.get(&asked).await.unwrap();
    assert_eq!(
        partition(&b),
        "2024-03-31",
        "the day before 02:30 CEST on April 1st"
    );
    // Another value in the same minute names the same build: nothing new.
    annotate("2024-04-01T00:30:50Z").await;
    annotate("not a time").await;
    assert_eq!(f.children("nightly").await.len(), 3);
    let reasons = f.event_reasons().await;
    assert!(
        reasons.contains("BuildExists") && reasons.contains("CreateBuildRefused"),
        "{reasons:?}"
    );
    let missing = cli(&["run", "nope", "-n", &ns]);
    assert_eq!(missing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    let bad = cli(&["run", "nightly", "-n", &ns, "--slot", "yesterday"]);
    assert_eq!(bad.status.code(), Some(64), "clap's usage error");
    // With the user's own RBAC: reading schedules is not enough to create a build.
    let role = |verbs: &str| {
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: analyst, namespace: {ns}}}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: analyst, namespace: {ns}}}\n\
             rules:\n- {{apiGroups: [kube-dss.dev], resources: [datasetbuildschedules], verbs: [get]}}\n\
             - {{apiGroups: [kube-dss.dev], resources: [datasetbuilds], verbs: [{verbs}]}}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: analyst, namespace: {ns}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: analyst}}\n\
             subjects: [{{kind: ServiceAccount, name: analyst, namespace: {ns}}}]\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let apply = |yaml: String| {
        let path = dir.path().join("rbac.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = harness::kubectl(&["apply", "-f", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    apply(role("get"));
    let analyst = harness::sa_kubeconfig(&ns, "analyst");
    let slot = "2026-11-01T02:00:00+01:00";
    let refused = cli_as(&analyst, &["run", "nightly", "--slot", slot]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("forbidden"));
    apply(role("get, create"));
    let allowed = cli_as(&analyst, &["run", "nightly", "--slot", slot]);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    f.cleanup().await;
}
