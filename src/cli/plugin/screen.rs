//! The `kubectl dss status` screen: a build's phase, job, the job's page in DSS, connection,
//! failure, conditions and last events, on one screen. Pure: the caller reads the objects.

use std::io::{self, Write};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;

use crate::{
    cli::output::table,
    controller::run::contract::{READY, condition},
    crd::{DSSConnection, DatasetBuild, DatasetBuildStatus},
};

/// Events shown: the last ones.
const EVENTS: usize = 5;
/// Lines of `status.failure.logTail` shown.
const LOG_LINES: usize = 5;
/// Longest message shown in a table cell, in characters.
const MESSAGE: usize = 100;

/// The build's DSSConnection as the user could read it.
#[derive(Debug)]
pub(super) enum ConnectionInfo {
    /// The build names no connection: it runs on the operator's default one.
    Default,
    /// A DSSConnection of the build's namespace.
    Named {
        name: String,
        /// The object, or why it could not be read (not found, forbidden).
        read: Result<Box<DSSConnection>, String>,
    },
}

/// One event about the build. Repeats (same type, reason and action within a few minutes) are one
/// Event with a count, whose note is the first one's and whose time is the last one's.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct EventLine {
    pub time: Option<Timestamp>,
    pub type_: String,
    pub reason: String,
    pub note: String,
    pub count: i32,
}

impl EventLine {
    /// The event as the core/v1 API shows it, whichever API wrote it (its most recent time).
    pub(super) fn from_event(e: &Event) -> EventLine {
        let time = e
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
            .or(e.last_timestamp.as_ref().map(|t| t.0))
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.first_timestamp.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        EventLine {
            time,
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            note: e.message.clone().unwrap_or_default(),
            count: e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1),
        }
    }
}

/// What the screen shows.
pub(super) struct StatusScreen<'a> {
    pub build: &'a DatasetBuild,
    pub connection: &'a ConnectionInfo,
    /// The build's events, or why they could not be listed.
    pub events: &'a Result<Vec<EventLine>, String>,
    pub now: Timestamp,
}

/// The page of a job in the DSS web UI: `<DSS URL>/projects/<project>/jobs/<job id>/`.
pub(super) fn job_url(dss_url: &str, project: &str, job_id: &str) -> Option<String> {
    let mut url = url::Url::parse(dss_url).ok()?;
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["projects", project, "jobs", job_id, ""]);
    Some(url.to_string())
}

/// How long ago, in the largest whole unit: `45s`, `12m`, `3h`, `2d`.
pub(super) fn age(now: Timestamp, then: Timestamp) -> String {
    let secs = now.as_second().saturating_sub(then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn time(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| format!("{} ({} ago)", t.strftime("%Y-%m-%dT%H:%M:%SZ"), age(now, t)),
    )
}

/// One line, at most `max` characters (newlines and tabs become spaces).
fn cell(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(3)).collect();
    cut.push_str("...");
    cut
}

fn connection_line(info: &ConnectionInfo) -> String {
    match info {
        ConnectionInfo::Default => "the operator's default connection".to_owned(),
        ConnectionInfo::Named { name, read: Err(why) } => format!("{name} ({why})"),
        ConnectionInfo::Named { name, read: Ok(conn) } => {
            let ready = conn.status.as_ref().and_then(|s| condition(&s.conditions, READY));
            match ready {
                Some(c) => format!("{name} {}, Ready={} ({})", conn.spec.url, c.status, c.reason),
                None => format!("{name} {}, not checked yet", conn.spec.url),
            }
        }
    }
}

/// Writes the screen.
pub(super) fn render(out: &mut dyn Write, s: &StatusScreen<'_>) -> io::Result<()> {
    let status = s.build.status.clone().unwrap_or_default();
    write_fields(out, s, &status)?;
    write_conditions(out, s, &status)?;
    write_events(out, s)
}

/// The build, its job, connection, outputs, times and failure, one per line.
fn write_fields(out: &mut dyn Write, s: &StatusScreen<'_>, status: &DatasetBuildStatus) -> io::Result<()> {
    let b = s.build;
    let ns = b.metadata.namespace.as_deref().unwrap_or_default();
    let name = b.metadata.name.as_deref().unwrap_or_default();
    let phase = status.phase.map_or("-", |p| p.as_str());
    let mut fields: Vec<(&str, String)> = vec![
        ("DatasetBuild", format!("{ns}/{name}")),
        (
            "Phase",
            match &status.state {
                Some(state) => format!("{phase} (DSS state {state})"),
                None => phase.to_owned(),
            },
        ),
    ];
    let job = status.job_id.clone().unwrap_or_else(|| "-".to_owned());
    fields.push((
        "Job",
        match status.attempts {
            Some(n) if status.job_id.is_some() => format!("{job} (attempt {n})"),
            _ => job,
        },
    ));
    let url = match (&status.job_id, s.connection) {
        (Some(job_id), ConnectionInfo::Named { read: Ok(conn), .. }) => {
            job_url(&conn.spec.url, &b.spec.project_key, job_id).unwrap_or_else(|| "-".to_owned())
        }
        (Some(_), ConnectionInfo::Default) => "- (on the operator's default connection)".to_owned(),
        _ => "-".to_owned(),
    };
    fields.push(("DSS job page", url));
    fields.push(("Connection", connection_line(s.connection)));
    let outputs: Vec<String> = b
        .spec
        .outputs
        .iter()
        .map(|o| {
            format!(
                "{} ({}, {})",
                o.id,
                o.object_type.unwrap_or_default().as_str(),
                o.partition.as_deref().unwrap_or("NP")
            )
        })
        .collect();
    fields.push((
        "Outputs",
        format!("project {}: {}", b.spec.project_key, outputs.join(", ")),
    ));
    fields.push(("Started", time(status.start_time.as_ref().map(|t| t.0), s.now)));
    fields.push((
        "Completed",
        time(status.completion_time.as_ref().map(|t| t.0), s.now),
    ));
    if let Some(f) = &status.failure {
        let mut text = f.reason.as_str().to_string();
        if let Some(m) = &f.message {
            text = format!("{text}: {}", cell(m, MESSAGE * 2));
        }
        fields.push(("Failure", text));
    }
    for (label, value) in &fields {
        writeln!(out, "{:<14}{value}", format!("{label}:"))?;
    }
    if let Some(tail) = status.failure.as_ref().and_then(|f| f.log_tail.as_deref()) {
        let lines: Vec<&str> = tail.lines().collect();
        writeln!(
            out,
            "Log tail (last {} lines; kubectl dss logs {name} for all):",
            LOG_LINES.min(lines.len())
        )?;
        for line in &lines[lines.len().saturating_sub(LOG_LINES)..] {
            writeln!(out, "  | {}", cell(line, MESSAGE + 20))?;
        }
    }

    Ok(())
}

fn write_conditions(
    out: &mut dyn Write,
    s: &StatusScreen<'_>,
    status: &DatasetBuildStatus,
) -> io::Result<()> {
    writeln!(out, "\nConditions:")?;
    if status.conditions.is_empty() {
        writeln!(out, "  none yet")?;
    } else {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    format!("  {}", c.type_),
                    c.status.clone(),
                    c.reason.clone(),
                    age(s.now, c.last_transition_time.0),
                    cell(&c.message, MESSAGE),
                ]
            })
            .collect();
        table(out, &["  TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows)?;
    }

    Ok(())
}

/// The last events, oldest first.
fn write_events(out: &mut dyn Write, s: &StatusScreen<'_>) -> io::Result<()> {
    match s.events {
        Err(why) => writeln!(out, "\nEvents: {why}")?,
        Ok(events) if events.is_empty() => writeln!(out, "\nEvents: none")?,
        Ok(events) => {
            let mut events = events.clone();
            events.sort_by_key(|e| e.time);
            let shown = &events[events.len().saturating_sub(EVENTS)..];
            writeln!(out, "\nEvents (last {} of {}):", shown.len(), events.len())?;
            let rows: Vec<Vec<String>> = shown
                .iter()
                .map(|e| {
                    vec![
                        format!("  {}", e.time.map_or_else(|| "-".to_owned(), |t| age(s.now, t))),
                        e.type_.clone(),
                        if e.count > 1 {
                            format!("{} x{}", e.reason, e.count)
                        } else {
                            e.reason.clone()
                        },
                        if e.count > 1 {
                            cell(&format!("(first) {}", e.note), MESSAGE)
                        } else {
                            cell(&e.note, MESSAGE)
                        },
                    ]
                })
                .collect();
            table(out, &["  AGE", "TYPE", "REASON", "MESSAGE"], &rows)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn job_urls() {
        let cases = [
            (
                "a host",
                "https://dss.example.com:11200",
                "https://dss.example.com:11200/projects/P/jobs/build_x_NP_2026-01-01T10-00-00.123/",
            ),
            (
                "a trailing slash",
                "https://dss.example.com/",
                "https://dss.example.com/projects/P/jobs/build_x_NP_2026-01-01T10-00-00.123/",
            ),
            (
                "a reverse-proxy sub-path",
                "https://proxy.example.com/dss/",
                "https://proxy.example.com/dss/projects/P/jobs/build_x_NP_2026-01-01T10-00-00.123/",
            ),
        ];
        for (name, base, want) in cases {
            assert_eq!(
                job_url(base, "P", "build_x_NP_2026-01-01T10-00-00.123").as_deref(),
                Some(want),
                "{name}"
            );
        }
        assert_eq!(job_url("not a url", "P", "j"), None, "an invalid URL");
    }

    #[test]
    fn ages() {
        let now = ts("2026-11-29T12:00:00Z");
        let cases = [
            ("seconds", "2026-11-29T11:59:15Z", "45s"),
            ("minutes", "2026-11-29T11:48:00Z", "12m"),
            ("hours", "2026-11-29T09:00:00Z", "3h"),
            ("days", "2026-11-26T12:00:00Z", "3d"),
            ("a clock ahead of ours", "2026-11-29T12:00:05Z", "0s"),
        ];
        for (name, then, want) in cases {
            assert_eq!(age(now, ts(then)), want, "{name}");
        }
    }

    #[test]
    fn the_screen_of_a_failed_build() {
        let build: DatasetBuild = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
            "metadata": {"name": "cat", "namespace": "analytics"},
            "spec": {"connectionRef": {"name": "prod"}, "projectKey": "IMPALA", "outputs": [{"id": "cat_train"}]},
            "status": {
                "phase": "Failed", "state": "FAILED", "jobId": "build_cat_NP_1", "attempts": 2,
                "startTime": "2026-11-29T11:50:00Z", "completionTime": "2026-11-29T11:55:00Z",
                "failure": {"reason": "JobFailed", "message": "boom\nin recipe",
                            "logTail": "l1\nl2\nl3\nl4\nl5\nl6\nl7"},
                "conditions": [{"type": "Stalled", "status": "True", "reason": "JobFailed",
                                "message": "DSS job build_cat_NP_1 FAILED", "lastTransitionTime": "2026-11-29T11:55:00Z"}],
            },
        }))
        .unwrap();
        let conn: DSSConnection = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DSSConnection",
            "metadata": {"name": "prod"},
            "spec": {"url": "https://dss.example.com:11200", "apiKeySecretRef": {"name": "k", "key": "apiKey"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Authenticated",
                                       "message": "ok", "lastTransitionTime": "2026-11-29T10:00:00Z"}]},
        }))
        .unwrap();
        let events: Vec<EventLine> = (0..7)
            .map(|i| EventLine {
                time: Some(ts(&format!("2026-11-29T11:5{i}:00Z"))),
                type_: "Normal".into(),
                reason: format!("R{i}"),
                note: format!("note {i}"),
                count: if i == 6 { 3 } else { 1 },
            })
            .collect();
        let connection = ConnectionInfo::Named {
            name: "prod".into(),
            read: Ok(Box::new(conn)),
        };
        let events = Ok(events);
        let mut out = Vec::new();
        render(
            &mut out,
            &StatusScreen {
                build: &build,
                connection: &connection,
                events: &events,
                now: ts("2026-11-29T12:00:00Z"),
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "DatasetBuild: analytics/cat",
            "Phase:        Failed (DSS state FAILED)",
            "Job:          build_cat_NP_1 (attempt 2)",
            "DSS job page: https://dss.example.com:11200/projects/IMPALA/jobs/build_cat_NP_1/",
            "Connection:   prod https://dss.example.com:11200, Ready=True (Authenticated)",
            "Outputs:      project IMPALA: cat_train (DATASET, NP)",
            "Started:      2026-11-29T11:50:00Z (10m ago)",
            "Failure:      JobFailed: boom in recipe",
            "Log tail (last 5 lines; kubectl dss logs cat for all):\n  | l3\n",
            "  | l7\n",
            "  Stalled  True    JobFailed  5m   DSS job build_cat_NP_1 FAILED",
            "Events (last 5 of 7):",
            "  5m   Normal  R5      note 5",
            "  4m   Normal  R6 x3   (first) note 6",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(!text.contains("| l2"), "only the last log lines:\n{text}");
        assert!(!text.contains("R1 "), "only the last events:\n{text}");
    }

    #[test]
    fn unreadable_parts_are_said_so() {
        let build: DatasetBuild = serde_json::from_value(json!({
            "apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
            "metadata": {"name": "n", "namespace": "a"},
            "spec": {"connectionRef": {"name": "prod"}, "projectKey": "P", "outputs": [{"id": "o"}]},
            "status": {"phase": "Running", "jobId": "j"},
        }))
        .unwrap();
        let connection = ConnectionInfo::Named {
            name: "prod".into(),
            read: Err("forbidden: you may not get dssconnections".into()),
        };
        let events = Err("forbidden: you may not list events".to_owned());
        let mut out = Vec::new();
        render(
            &mut out,
            &StatusScreen {
                build: &build,
                connection: &connection,
                events: &events,
                now: Timestamp::now(),
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Connection:   prod (forbidden: you may not get dssconnections)"),
            "{text}"
        );
        assert!(text.contains("DSS job page: -\n"), "{text}");
        assert!(text.contains("Conditions:\n  none yet"), "{text}");
        assert!(
            text.contains("Events: forbidden: you may not list events"),
            "{text}"
        );
    }
}
