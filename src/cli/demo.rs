//! `demo seed`: a large dataset through the aggregates.

use std::io::Write;

use crate::cli::*;
use commandcenter::config::SeedArgs;
use commandcenter::demo::{seed, SeedPlan};
use commandcenter_auth::ProjectStore;
use commandcenter_event_store::{AppendSignal, EventStore};

pub(crate) async fn run_seed(args: &SeedArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let store = EventStore::new(pool, AppendSignal::local());
    let plan = SeedPlan {
        projects: args.projects,
        technologies: args.technologies,
        updates_per_technology: args.updates_per_technology,
        jobs: args.jobs,
    };
    let started = std::time::Instant::now();
    let written = seed(&store, plan).await?;
    let seconds = started.elapsed().as_secs_f64();
    ProjectStore::new(store.pool().clone())
        .register_from_events()
        .await?;
    writeln!(
        std::io::stdout().lock(),
        "seeded {written} events in {seconds:.1} s ({:.0} events/s)",
        written as f64 / seconds.max(1e-9)
    )?;
    Ok(())
}
