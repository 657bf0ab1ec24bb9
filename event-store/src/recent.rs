//! Aggregates as this process last committed or loaded them, so that a command on an
//! aggregate it wrote a moment ago is decided without reading the store again.
//!
//! A remembered state is true at its version but may be behind the store: another
//! process (a worker, a second instance, the lease sweeper) may have appended since.
//! What makes that safe is the append, not the cache: events decided on a stale state
//! are refused by the events' primary key (a lost race, retried from the store). So a
//! caller may trust a remembered state only for a decision that appends events, and only
//! once they are appended: one that appends nothing, or refuses, or compares a client's
//! `If-Match`, and an append refused before its version was compared (a title another
//! aggregate holds), must be taken again on the store's state (the executor does,
//! `commandcenter_executor`).
//!
//! The bound is on the states' JSON, per store (`serve` has two: the API's and its
//! worker's); the states in memory take somewhat more.

use std::any::Any;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cqrs_es::Aggregate;
use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::{Loaded, Position};

/// How much remembered state a store keeps, in bytes of the states' JSON.
pub const RECENT_BYTES: u64 = 64 * 1024 * 1024;

/// How long a state nobody asked for stays remembered.
pub const RECENT_IDLE: Duration = Duration::from_secs(300);

/// One remembered state: its version first, so a later one is told without downcasting.
#[derive(Clone)]
struct Entry {
    version: i64,
    position: Option<Position>,
    weight: u32,
    state: Arc<dyn Any + Send + Sync>,
}

type States = Cache<(&'static str, String), Entry>;

/// The remembered states of one store, by aggregate type and id; built on first use (a
/// store that runs no command, such as a time-travel read's, builds none).
#[derive(Clone, Default)]
pub(crate) struct Recent {
    cache: Arc<OnceLock<States>>,
}

impl Recent {
    fn cache(&self) -> &States {
        self.cache.get_or_init(|| {
            Cache::builder()
                .max_capacity(RECENT_BYTES)
                .weigher(|_, entry: &Entry| entry.weight)
                .time_to_idle(RECENT_IDLE)
                .build()
        })
    }

    /// `A`'s remembered state `id`, if any.
    pub(crate) fn get<A: Aggregate + Clone + 'static>(&self, id: &str) -> Option<Loaded<A>> {
        let entry = self.cache.get()?.get(&(A::TYPE, id.to_string()))?;
        let aggregate = entry.state.downcast_ref::<A>()?.clone();
        Some(Loaded {
            aggregate,
            version: entry.version,
            position: entry.position,
        })
    }

    /// Remembers `loaded` as `A`'s state `id`, unless a later version is remembered
    /// (outcomes can arrive out of order).
    pub(crate) fn put<A: Aggregate + Clone + 'static>(&self, id: &str, loaded: Loaded<A>) {
        let weight = json_size(&loaded.aggregate);
        let entry = Entry {
            version: loaded.version,
            position: loaded.position,
            weight,
            state: Arc::new(loaded.aggregate),
        };
        self.cache()
            .entry((A::TYPE, id.to_string()))
            .and_compute_with(|held| match held {
                Some(held) if held.value().version >= entry.version => Op::Nop,
                _ => Op::Put(entry),
            });
    }

    /// Forgets `A`'s state `id` (a command on it lost a race or failed).
    pub(crate) fn forget<A: Aggregate>(&self, id: &str) {
        if let Some(cache) = self.cache.get() {
            cache.invalidate(&(A::TYPE, id.to_string()));
        }
    }
}

/// The length of `value`'s JSON, counted without building it (saturating).
fn json_size(value: &impl serde::Serialize) -> u32 {
    struct Count(u64);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A state that cannot be written as JSON could not be snapshotted either; weigh it
    // as more than the whole budget, so it is not kept.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => u32::try_from(count.0).unwrap_or(u32::MAX),
        Err(_) => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commandcenter_domain::technology::Technology;

    fn loaded(version: i64) -> Loaded<Technology> {
        Loaded {
            aggregate: Technology::default(),
            version,
            position: None,
        }
    }

    #[test]
    fn a_later_version_is_not_replaced_by_an_earlier_one() {
        let recent = Recent::default();
        recent.put("t1", loaded(5));
        recent.put("t1", loaded(3));
        assert_eq!(recent.get::<Technology>("t1").map(|l| l.version), Some(5));
        recent.put("t1", loaded(6));
        assert_eq!(recent.get::<Technology>("t1").map(|l| l.version), Some(6));
        recent.forget::<Technology>("t1");
        assert!(recent.get::<Technology>("t1").is_none());
    }

    #[test]
    fn states_are_kept_apart_by_aggregate_type() {
        use commandcenter_domain::job::Job;
        let recent = Recent::default();
        recent.put("same-id", loaded(2));
        assert!(recent.get::<Job>("same-id").is_none());
        assert!(recent.get::<Technology>("same-id").is_some());
    }
}
