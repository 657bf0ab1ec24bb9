//! A small in-process cache of serialized answers to hot queries, correct by
//! construction: never older than a change notification this process has received.
//!
//! Each read model has a generation per project and one for all projects, bumped by
//! every `cc.views.*` announcement of that read model (the project's and the global
//! one). An entry remembers the generation it was computed under — read *before* the
//! query ran — and is served only while that generation is current. An answer is only
//! stored when the pool that computed it had already applied the newest announced
//! change (a lagging replica's answer is served, never cached). The answers are held in
//! a bounded `moka` cache (entries evicted one at a time, never a clearing), and no entry
//! outlives [`MAX_AGE`], which bounds staleness even for notifications lost while the
//! NATS connection was down.
//!
//! Kept hand-written on purpose: the generations, since no cache library knows which
//! announcement makes an answer stale.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use commandcenter_event_store::Position;
use dashmap::DashMap;
use moka::sync::Cache;

/// What an answer depends on: the endpoint, its read models, project scope and
/// normalized parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    endpoint: &'static str,
    views: Vec<&'static str>,
    project: Option<i64>,
    params: String,
}

impl CacheKey {
    /// The key of `endpoint`'s query over `views` in `project` (all projects when
    /// `None`) with `params` (order-insensitive).
    pub fn new(
        endpoint: &'static str,
        views: &[&'static str],
        project: Option<i64>,
        params: &std::collections::HashMap<String, String>,
    ) -> Self {
        let sorted: BTreeMap<&String, &String> = params.iter().collect();
        let params = sorted
            .into_iter()
            // Quoted, so a value holding `&` or `=` cannot pass for another parameter.
            .map(|(k, v)| format!("{k:?}={v:?}"))
            .collect::<Vec<_>>()
            .join("&");
        Self {
            endpoint,
            views: views.to_vec(),
            project,
            params,
        }
    }
}

/// The oldest an entry may be, whatever the notifications say: announcements travel on
/// core NATS, and ones lost while the connection was down cannot invalidate anything.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// The size of answer one cache entry counts for.
pub const UNIT_BYTES: usize = 4096;

#[derive(Debug)]
struct Entry {
    generation: u64,
    positions: Vec<Position>,
    body: Bytes,
}

/// A cached answer.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The serialized body.
    pub body: Bytes,
    /// The position it reflects (the lowest of its read models').
    pub position: Position,
}

/// The cache.
pub struct QueryCache {
    /// `None` when caching is off.
    entries: Option<Cache<CacheKey, Arc<Entry>>>,
    generations: DashMap<(&'static str, Option<i64>), u64>,
    notified: DashMap<(&'static str, Option<i64>), Position>,
}

fn scope_keys(view: &'static str, project: Option<i64>) -> [(&'static str, Option<i64>); 2] {
    [(view, project), (view, None)]
}

impl QueryCache {
    /// An empty cache holding at most `max_entries` answers of up to [`UNIT_BYTES`] (a
    /// larger answer counts once per started unit, so the cache's memory stays bounded
    /// by about `max_entries × UNIT_BYTES` whatever the answers' sizes); 0 disables it.
    pub fn new(max_entries: usize) -> Self {
        let entries = (max_entries > 0).then(|| {
            Cache::builder()
                .max_capacity(max_entries as u64)
                .weigher(|_key: &CacheKey, entry: &Arc<Entry>| {
                    u32::try_from(entry.body.len().div_ceil(UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
                })
                .time_to_live(MAX_AGE)
                .build()
        });
        Self {
            entries,
            generations: DashMap::new(),
            notified: DashMap::new(),
        }
    }

    /// The generation `key` depends on now.
    pub fn generation(&self, key: &CacheKey) -> u64 {
        key.views
            .iter()
            .map(|view| {
                self.generations
                    .get(&(*view, key.project))
                    .map_or(0, |g| *g)
            })
            .sum()
    }

    /// A valid entry for `key` reflecting at least `min`, if any.
    pub fn get(&self, key: &CacheKey, min: Option<Position>) -> Option<Hit> {
        let entry = self.entries.as_ref()?.get(key)?;
        let position = entry
            .positions
            .iter()
            .copied()
            .min()
            .unwrap_or(Position::ZERO);
        if entry.generation != self.generation(key) || min.is_some_and(|m| position < m) {
            return None;
        }
        Some(Hit {
            body: entry.body.clone(),
            position,
        })
    }

    /// Stores an answer computed under `generation` by a pool whose read models stood at
    /// `positions` (one per view of the key), unless a newer change was announced.
    pub fn put(&self, key: CacheKey, generation: u64, positions: Vec<Position>, body: Bytes) {
        let Some(entries) = &self.entries else {
            return;
        };
        let fresh = key.views.iter().zip(&positions).all(|(view, position)| {
            self.notified
                .get(&(*view, key.project))
                .is_none_or(|announced| *position >= *announced)
        });
        if !fresh {
            return;
        }
        entries.insert(
            key,
            Arc::new(Entry {
                generation,
                positions,
                body,
            }),
        );
    }

    /// Records a change of `view` in `project` at `position`.
    pub fn invalidate(&self, view: &'static str, project: i64, position: Position) {
        for scope in scope_keys(view, Some(project)) {
            *self.generations.entry(scope).or_insert(0) += 1;
            let mut announced = self.notified.entry(scope).or_insert(Position::ZERO);
            if position > *announced {
                *announced = position;
            }
        }
    }

    /// Entries held now (pending evictions applied first).
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |entries| {
            entries.run_pending_tasks();
            entries.entry_count() as usize
        })
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key(project: Option<i64>) -> CacheKey {
        let params = HashMap::from([("limit".to_string(), "5".to_string())]);
        CacheKey::new("jobs", &["job_view"], project, &params)
    }

    #[test]
    fn a_notification_invalidates_project_and_global_entries() {
        let cache = QueryCache::new(10);
        for project in [Some(1), Some(2), None] {
            let generation = cache.generation(&key(project));
            cache.put(
                key(project),
                generation,
                vec![Position::new(1, 1)],
                Bytes::from_static(b"x"),
            );
        }
        cache.invalidate("job_view", 1, Position::new(2, 2));
        assert!(cache.get(&key(Some(1)), None).is_none());
        assert!(cache.get(&key(None), None).is_none());
        assert!(
            cache.get(&key(Some(2)), None).is_some(),
            "another project's entry stays"
        );
    }

    #[test]
    fn an_answer_computed_before_a_notification_is_never_served_after_it() {
        let cache = QueryCache::new(10);
        let generation = cache.generation(&key(Some(1)));
        // The change is announced while the query runs...
        cache.invalidate("job_view", 1, Position::new(5, 5));
        // ...and the answer, computed at an older position, arrives after it.
        cache.put(
            key(Some(1)),
            generation,
            vec![Position::new(4, 4)],
            Bytes::from_static(b"old"),
        );
        assert!(cache.get(&key(Some(1)), None).is_none());
        // A lagging pool's answer under the new generation is not stored either.
        let generation = cache.generation(&key(Some(1)));
        cache.put(
            key(Some(1)),
            generation,
            vec![Position::new(4, 4)],
            Bytes::from_static(b"old"),
        );
        assert!(cache.get(&key(Some(1)), None).is_none());
        cache.put(
            key(Some(1)),
            generation,
            vec![Position::new(5, 5)],
            Bytes::from_static(b"new"),
        );
        assert_eq!(
            cache.get(&key(Some(1)), None).unwrap().body,
            Bytes::from_static(b"new")
        );
        assert!(
            cache
                .get(&key(Some(1)), Some(Position::new(6, 6)))
                .is_none(),
            "min position honoured"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = QueryCache::new(3);
        for i in 0..10 {
            let params = HashMap::from([("i".to_string(), i.to_string())]);
            let key = CacheKey::new("jobs", &["job_view"], None, &params);
            cache.put(key, 0, vec![Position::ZERO], Bytes::from_static(b"x"));
            assert!(cache.len() <= 3);
        }
    }

    #[test]
    fn a_full_cache_makes_room_without_forgetting_everything() {
        let cache = QueryCache::new(3);
        let key = |i: i32| {
            let params = HashMap::from([("i".to_string(), i.to_string())]);
            CacheKey::new("jobs", &["job_view"], None, &params)
        };
        for i in 0..4 {
            cache.put(key(i), 0, vec![Position::ZERO], Bytes::from_static(b"x"));
        }
        let kept = (0..3)
            .filter(|i| cache.get(&key(*i), None).is_some())
            .count();
        assert!(kept >= 2, "{kept} of the first three answers kept");
    }

    #[test]
    fn a_size_of_zero_turns_the_cache_off() {
        let cache = QueryCache::new(0);
        cache.put(key(None), 0, vec![Position::ZERO], Bytes::from_static(b"x"));
        assert!(cache.get(&key(None), None).is_none());
        assert!(cache.is_empty());
    }
}
