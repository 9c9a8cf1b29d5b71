//! Text and JSON rendering of CLI results.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::dss::{JobListItem, JobStatus};

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Pretty JSON followed by a newline.
pub(super) fn json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// Writes rows as left-aligned columns separated by two spaces.
pub(super) fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut header.iter().copied())?;
    for row in rows {
        line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// The `list` table: JOB ID, STATE, STARTED, ENDED, WARNINGS, INITIATOR (PROJECT first when listing
/// several projects).
pub(super) fn jobs_table(out: &mut dyn Write, jobs: &[JobListItem], show_project: bool) -> io::Result<()> {
    let mut header = vec!["JOB ID", "STATE", "STARTED", "ENDED", "WARNINGS", "INITIATOR"];
    if show_project {
        header.insert(0, "PROJECT");
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let mut row = vec![
                job.job_id.clone(),
                job.state.as_str().to_owned(),
                time(job.start_time),
                time(job.end_time),
                job.warnings_count.to_string(),
                job.definition
                    .as_ref()
                    .and_then(|d| d.initiator.clone())
                    .unwrap_or_else(|| "-".to_owned()),
            ];
            if show_project {
                row.insert(0, job.project_key.clone());
            }
            row
        })
        .collect();
    table(out, &header, &rows)
}

/// The `status` text: one field per line, then the activities.
pub(super) fn status_table(
    out: &mut dyn Write,
    project: &str,
    job_id: &str,
    status: &JobStatus,
) -> io::Result<()> {
    let def = status.definition.as_ref();
    let opt = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".to_owned());
    let mut fields = vec![
        ("JOB ID", job_id.to_owned()),
        ("PROJECT", project.to_owned()),
        ("STATE", status.state.as_str().to_owned()),
        (
            "STABLE",
            status
                .stable_state
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        ),
        ("TYPE", opt(def.and_then(|d| d.job_type.as_ref()))),
        ("INITIATOR", opt(def.and_then(|d| d.initiator.as_ref()))),
        ("INITIATED", time(def.and_then(|d| d.initiation_timestamp))),
        ("STARTED", time(status.start_time)),
        ("ENDED", time(status.end_time)),
        ("WARNINGS", status.warnings_count.to_string()),
    ];
    if let Some(global) = &status.global_state {
        fields.push((
            "ACTIVITIES",
            format!(
                "{} done, {} failed, {} running, {} total",
                global.done, global.failed, global.running, global.total
            ),
        ));
    }
    for (name, value) in fields {
        writeln!(out, "{:<11}{value}", format!("{name}:"))?;
    }
    if !status.activities.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = status
            .activities
            .iter()
            .map(|a| vec![a.id.clone(), a.state.as_str().to_owned()])
            .collect();
        table(out, &["ACTIVITY", "STATE"], &rows)?;
    }
    Ok(())
}
