//! Ceiling (a) of scenarios 4 and 4b: the bare library. `cqrs-es` with `postgres-es`'s
//! event repository (`postgres_es::postgres_cqrs`), executing one `CreateTechnology` per
//! new aggregate with the payload `write-load` posts, parsed by the service's own body
//! type: no HTTP, no idempotency, no claims, no hash chain, no position, no relay or
//! projector. Tasks run closed loops on one pool of as many connections, on a database of
//! their own holding `postgres-es`'s tables.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use commandcenter_commands::technologies::CreateTechnologyBody;
use commandcenter_domain::technology::{Technology, TechnologyCommand};
use commandcenter_domain::values::ProjectId;
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// `postgres-es`'s event table, as its repository reads and writes it (its `db/init.sql`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL,
    payload json NOT NULL,
    metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);";

/// `tasks` closed loops of creates through `postgres_es::postgres_cqrs` on
/// `database_url` (a database used for nothing else) for `seconds` after `warmup`;
/// prints `result ceiling_cqrs_es rps=… p50_ms=… p99_ms=…`.
pub async fn ceiling(
    database_url: &str,
    tasks: usize,
    seconds: f64,
    warmup: f64,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(tasks as u32)
        .connect(database_url)
        .await
        .with_context(|| format!("cannot connect to {database_url}"))?;
    sqlx::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .context("cannot create postgres-es's table")?;
    let cqrs = Arc::new(postgres_es::postgres_cqrs::<Technology>(
        pool,
        Vec::new(),
        (),
    ));
    let run = Uuid::now_v7().simple().to_string();
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(warmup);
    let stop_at = measure_from + Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let cqrs = cqrs.clone();
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut count = 0_u64;
            for n in 0_u64.. {
                // The body `write-load --kind technologies` posts.
                let body: CreateTechnologyBody = serde_json::from_value(json!({
                    "project_id": 1,
                    "title": format!("bench-{run}-{task}-{n}"),
                    "domain": "audio-dsp",
                    "tags": ["bench"],
                }))?;
                let fields = body.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let id = Uuid::now_v7().to_string();
                let command = TechnologyCommand::CreateTechnology {
                    id: id.clone(),
                    project_id: ProjectId::parse("project_id", 1)
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
                    fields: Box::new(fields),
                    at: chrono::Utc::now(),
                };
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                if let Err(error) = cqrs.execute(&id, command).await {
                    bail!("create through postgres-es failed: {error}");
                }
                if sent >= measure_from {
                    histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
                    count += 1;
                }
            }
            Ok::<_, anyhow::Error>((histogram, count))
        }));
    }
    let (all, total) = crate::load::merged(handles).await?;
    crate::load::print_result("ceiling_cqrs_es", total, seconds, &all);
    Ok(())
}
