//! `events …`: verification, checkpoints and their witness, export and import, timelines.

use std::io::Write;
use std::time::Duration;

use crate::cli::*;
use anyhow::Context;
use commandcenter::config::{
    CheckpointArgs, ExportArgs, ImportArgs, NatsArgs, TimelineArgs, VerifyArgs,
};
use commandcenter_auth::ProjectStore;
use commandcenter_domain::job::Job;
use commandcenter_domain::technology::Technology;
use commandcenter_event_store::audit::{self, ExportScope, VerifyScope};
use commandcenter_event_store::Deployment;
use commandcenter_query_api::history::annotated_history;

pub(crate) async fn run_verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let scope = VerifyScope {
        project_id: args.project,
        from: parse_position("from-position", args.from_position.as_deref())?,
        clock_tolerance: args.clock_tolerance,
    };
    let key = args.key.bytes();
    if args.witness && (scope.project_id.is_some() || scope.from.is_some()) {
        anyhow::bail!(
            "--witness compares the whole store with the witnessed checkpoints: drop --project \
             and --from-position"
        );
    }
    let witnessed = if args.witness {
        let witness = witness_of(&pool, &args.nats).await?;
        Some(
            witness
                .read()
                .await
                .context("cannot read the witnessed checkpoints")?,
        )
    } else {
        None
    };
    let report = audit::verify(&pool, &scope, key.as_deref(), witnessed.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut body = serde_json::to_value(&report)?;
        body["passed"] = serde_json::json!(report.passed());
        serde_json::to_writer_pretty(&mut out, &body)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "checked {} events of {} aggregates: {} broken link(s)",
            report.events_checked, report.aggregates, report.broken_count
        )?;
        for link in &report.broken {
            writeln!(
                out,
                "BROKEN {}/{} event {} at {}: {}",
                link.aggregate_type, link.aggregate_id, link.sequence, link.position, link.reason
            )?;
        }
        match &report.checkpoint {
            None => writeln!(out, "no checkpoint checked")?,
            Some(c) => writeln!(
                out,
                "checkpoint {} at {} ({}): {} (events then {}, now {}), signature {}",
                c.id,
                c.head,
                c.created_at.to_rfc3339(),
                if c.intact {
                    "intact"
                } else {
                    "BROKEN: events up to it were deleted or altered"
                },
                c.events_then,
                c.events_now,
                c.signature
            )?,
        }
        if let Some(chain) = &report.checkpoint_chain {
            let state = format!("{} checkpoint(s)", chain.checkpoints);
            write_problems(
                &mut out,
                "checkpoint chain",
                &state,
                "intact",
                &chain.problems,
            )?;
        }
        if let Some(witness) = &report.witness {
            let state = format!("{} checkpoint(s) witnessed", witness.witnessed);
            write_problems(
                &mut out,
                "witness",
                &state,
                "the store agrees",
                &witness.problems,
            )?;
        }
    }
    if !report.passed() {
        anyhow::bail!("verification failed");
    }
    Ok(())
}

/// `<what>: <state>, <verdict>` (or `BROKEN`/`DISAGREES`) and a line per problem.
pub(crate) fn write_problems(
    out: &mut impl Write,
    what: &str,
    state: &str,
    fine: &str,
    problems: &[String],
) -> std::io::Result<()> {
    let verdict = if problems.is_empty() { fine } else { "BROKEN" };
    writeln!(out, "{what}: {state}, {verdict}")?;
    for problem in problems {
        writeln!(out, "BROKEN {problem}")?;
    }
    Ok(())
}

pub(crate) async fn run_checkpoint(args: &CheckpointArgs) -> anyhow::Result<()> {
    let key = args
        .key
        .bytes()
        .context("set CC_AUDIT_KEY (or --audit-key): checkpoints are signed")?;
    let pool = open(&args.database.database_url).await?;
    let checkpoint = audit::create_checkpoint(&pool, &key, None).await?;
    {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &checkpoint)?;
        writeln!(out)?;
    }
    let witness = witness_of(&pool, &args.nats).await?;
    let published = witness.publish_pending(&pool).await.with_context(|| {
        format!(
            "checkpoint {} is recorded but not witnessed on NATS; run `events checkpoint` again \
             when NATS answers (it publishes every checkpoint not witnessed yet)",
            checkpoint.id
        )
    })?;
    tracing::info!(
        id = checkpoint.id,
        published,
        stream = %witness.stream_name(),
        "checkpoint recorded and witnessed"
    );
    Ok(())
}

/// The witness of the deployment behind `pool`, on the NATS server of `nats`.
pub(crate) async fn witness_of(
    pool: &sqlx::PgPool,
    nats: &NatsArgs,
) -> anyhow::Result<commandcenter_relay::witness::Witness> {
    let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(nats.servers()))
        .await
        .map_err(|_| anyhow::anyhow!("NATS at {} did not answer within 5 s", nats.nats_url))?
        .with_context(|| format!("cannot connect to NATS at {}", nats.nats_url))?;
    Ok(commandcenter_relay::witness::Witness::new(
        client,
        &nats.stream(),
        Deployment::load(pool).await?,
    ))
}

pub(crate) async fn run_export(args: &ExportArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let scope = ExportScope {
        project_id: args.project,
        after: parse_position("since-position", args.since_position.as_deref())?,
        until: parse_position("until", args.until.as_deref())?,
    };
    let key = args.key.bytes();
    let bar = counter("exported");
    let written = match &args.output {
        Some(path) => {
            let file = tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut out = tokio::io::BufWriter::new(file);
            let n = audit::export(&pool, &scope, key.as_deref(), &mut out, |n| {
                bar.set_position(n)
            })
            .await?;
            out.into_inner().sync_all().await?;
            n
        }
        None => {
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            audit::export(&pool, &scope, key.as_deref(), &mut out, |n| {
                bar.set_position(n)
            })
            .await?
        }
    };
    bar.finish_and_clear();
    tracing::info!(events = written, "export written");
    Ok(())
}

/// The uniqueness claims an import rebuilds from its events.
pub(crate) fn claims() -> audit::Derive {
    Box::new(|conn| Box::pin(commandcenter_executor::rebuild_claims(conn)))
}

pub(crate) async fn run_import(args: &ImportArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let key = args.key.bytes();
    let bar = counter("imported");
    let report = match args.file.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut input = tokio::io::BufReader::new(file);
            audit::import(&pool, &mut input, key.as_deref(), claims(), |n| {
                bar.set_position(n)
            })
            .await?
        }
        None => {
            let mut input = tokio::io::BufReader::new(tokio::io::stdin());
            audit::import(&pool, &mut input, key.as_deref(), claims(), |n| {
                bar.set_position(n)
            })
            .await?
        }
    };
    bar.finish_and_clear();
    ProjectStore::new(pool.clone())
        .register_from_events()
        .await?;
    writeln!(
        std::io::stdout().lock(),
        "imported {} events ({} groups, one transaction); run `commandcenter events verify` and \
         `commandcenter projections rebuild` next",
        report.events,
        report.transactions
    )?;
    Ok(())
}

pub(crate) async fn print_timeline(args: &TimelineArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let entries = match args.aggregate_type.as_str() {
        "technology" => annotated_history::<Technology>(&pool, &args.id).await,
        "job" => annotated_history::<Job>(&pool, &args.id).await,
        other => anyhow::bail!("unknown aggregate type {other:?}: use technology or job"),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if entries.is_empty() {
        anyhow::bail!("no {} has id {}", args.aggregate_type, args.id);
    }
    let mut out = std::io::stdout().lock();
    for entry in &entries {
        let event = &entry.event;
        writeln!(
            out,
            "{}  v{:<4} {:<24} by {} (correlation {}{})",
            event.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            event.sequence,
            event.event_type,
            entry.actor.as_deref().unwrap_or("unknown"),
            entry.correlation_id.as_deref().unwrap_or("-"),
            entry
                .causation_id
                .as_deref()
                .map(|c| format!(", caused by {c}"))
                .unwrap_or_default(),
        )?;
        for change in &entry.changes {
            writeln!(
                out,
                "      {}: {} → {}",
                change.field, change.from, change.to
            )?;
        }
    }
    Ok(())
}
