//! `projections …`: status, verification against the event store, rebuilds.

use std::io::Write;

use crate::cli::*;
use commandcenter::config::{RebuildArgs, StatusArgs, VerifyViewArgs};
use commandcenter_projections::{
    rebuild, status, verify, JobView, ProjectionError, TechnologyView, VerifyReport,
};
use commandcenter_relay::EventStream;

pub(crate) async fn print_status(args: &StatusArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let report = status(&pool, &EventStream::new(&args.nats_prefix)).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    let position = |p: Option<commandcenter_event_store::Position>| {
        p.map_or("-".to_string(), |p| p.to_string())
    };
    writeln!(
        out,
        "head: {}   events: ~{} (estimate)",
        position(report.head),
        report.events
    )?;
    writeln!(
        out,
        "{:<18} {:<34} {:>12} {:>12} {:>6}  active",
        "consumer", "checkpoint", "lag events", "lag seconds", "gaps"
    )?;
    for lag in std::iter::once(&report.relay).chain(&report.projections) {
        let gaps = if lag.name == "relay" {
            "-".to_string()
        } else {
            lag.gaps_detected.to_string()
        };
        let behind = if lag.lag_estimated {
            format!("~{}", lag.lag_events)
        } else {
            lag.lag_events.to_string()
        };
        writeln!(
            out,
            "{:<18} {:<34} {:>12} {:>12.3} {gaps:>6}  {}",
            lag.name,
            position(lag.checkpoint),
            behind,
            lag.lag_seconds,
            lag.active.as_deref().unwrap_or("none")
        )?;
    }
    if !report.replicas.is_empty() {
        writeln!(
            out,
            "{:<18} {:<22} {:<10} {:>12} {:>12}",
            "replica", "address", "state", "lag bytes", "replay lag s"
        )?;
        for replica in &report.replicas {
            writeln!(
                out,
                "{:<18} {:<22} {:<10} {:>12} {:>12}",
                replica.name,
                replica.client.as_deref().unwrap_or("-"),
                replica.state,
                replica.lag_bytes.map_or("-".into(), |b| b.to_string()),
                replica
                    .replay_lag_seconds
                    .map_or("-".into(), |s| format!("{s:.3}"))
            )?;
        }
    }
    if let Some(note) = &report.relay.note {
        writeln!(out, "NOTE relay: {note}")?;
    }
    for lag in &report.projections {
        if let Some(gap) = &lag.open_gap {
            writeln!(out, "STOPPED {}: {gap}", lag.name)?;
        }
    }
    Ok(())
}

/// `projections verify`: prints each read model's comparison; false when any differs.
pub(crate) async fn verify_views(args: &VerifyViewArgs) -> anyhow::Result<bool> {
    let pool = open(&args.database.database_url).await?;
    let names: Vec<&str> = match args.view.as_deref() {
        Some(name) => vec![name],
        None => commandcenter_projections::READ_MODELS.to_vec(),
    };
    let mut reports = Vec::new();
    for name in names {
        reports.push(match name {
            TechnologyView::NAME => verify(&pool, &TechnologyView, args.batch_size).await?,
            JobView::NAME => verify(&pool, &JobView, args.batch_size).await?,
            other => return Err(ProjectionError::UnknownReadModel(other.to_string()).into()),
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &reports)?;
        writeln!(out)?;
    } else {
        for report in &reports {
            let verdict = if report.is_clean() {
                "equals the event store".to_string()
            } else {
                format!("{} row(s) DIFFER from the event store", report.differences)
            };
            writeln!(
                out,
                "{}: {verdict} ({} rows, {} events folded, checkpoint {})",
                report.name, report.rows, report.events, report.position
            )?;
            for difference in &report.first {
                writeln!(
                    out,
                    "    {} {}: {}",
                    difference.table, difference.key, difference.detail
                )?;
            }
            if report.differences > report.first.len() as i64 {
                writeln!(
                    out,
                    "    … and {} more",
                    report.differences - report.first.len() as i64
                )?;
            }
        }
        if reports.iter().any(|r| !r.is_clean()) {
            writeln!(
                out,
                "Repair with `commandcenter projections rebuild NAME`; the event store is the source of truth."
            )?;
        }
    }
    Ok(reports.iter().all(VerifyReport::is_clean))
}

pub(crate) async fn run_rebuild(args: &RebuildArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let report = match args.name.as_str() {
        TechnologyView::NAME => rebuild(&pool, &TechnologyView, args.batch_size).await?,
        JobView::NAME => rebuild(&pool, &JobView, args.batch_size).await?,
        other => return Err(ProjectionError::UnknownReadModel(other.to_string()).into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} events in {:.1} s ({:.0} events/s), checkpoint {}",
        report.name,
        report.events,
        report.elapsed.as_secs_f64(),
        report.events_per_second(),
        report.position
    )?;
    Ok(())
}
