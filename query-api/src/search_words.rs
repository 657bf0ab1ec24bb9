//! Which word of a search of several words the trigram index looks up, and how many rows
//! a search matches by the column's statistics (the estimate of a total past the exact
//! count's cap).
//!
//! A trigram (GIN) index finds a pattern's rows by reading the posting list of every
//! trigram in it, whole. A search such as `number 4242`, over 50,000 technologies whose
//! descriptions all hold "number", read the lists of "num", "umb", "mbe", "ber" and "er ",
//! each naming every row: 103 index pages and 0.77 ms, where `4242` alone read 5 pages in
//! 0.02 ms. So when one word of a search is rare and another common, the index is given
//! the rare word alone, and the whole pattern is checked on the rows it finds (written so
//! that the planner cannot give it to the index as well). The answer is the same either
//! way: a row holding the whole pattern holds each of its words.
//!
//! Which words are rare comes from the sample the planner itself estimates patterns with:
//! the statistics of `technology_view.search_text` (its most common values and histogram
//! in `pg_stats`, kept fresh by the projectors), read once when the first search needs
//! them and again when a search finds them older than [`REFRESH_EVERY`].

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// How long a sample of the statistics serves before a search reads it again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// A word is common when it is in at least this share of the sampled rows...
const COMMON: f64 = 0.10;
/// ...and rare when in at most this share (the histogram has about 100 values, so a word
/// in at most two of them).
const RARE: f64 = 0.02;

/// The letters or digits in a row a word needs for the trigram index to look it up.
const INDEXABLE_CHARS: usize = 3;

/// The statistics' sample of `search_text`, for one process.
#[derive(Default)]
pub struct SearchWords {
    sample: RwLock<Arc<Sample>>,
    /// Held by the one search that reads the statistics again.
    reading: tokio::sync::Mutex<()>,
}

/// What the statistics say of one search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchPlan {
    /// The word the index should look up alone, if any (see the module docs).
    pub driver: Option<String>,
    /// The share of the rows holding the whole search, in the sample the planner
    /// estimates patterns with (`None` before the column is first analyzed).
    pub share: Option<f64>,
    /// Whether the trigram index can look the search up: it has a run of 3 letters or
    /// digits.
    pub indexable: bool,
}

impl SearchPlan {
    /// True when the statistics say the whole search is in at least [`COMMON`] of the
    /// rows: its first matches are found by reading rows in any order, which is how its
    /// count reads the narrow `technology_search` (migration 0018), not through the
    /// trigram index.
    pub fn is_common(&self) -> bool {
        self.share.is_some_and(|share| share >= COMMON)
    }

    /// True when the statistics say the whole search is in at most [`RARE`] of the rows
    /// and the trigram index can look it up: its rows are best found through the index.
    pub fn is_rare(&self) -> bool {
        self.indexable && self.share.is_some_and(|share| share <= RARE)
    }
}

#[derive(Default)]
struct Sample {
    /// When it was read; `None` before the first read.
    taken: Option<Instant>,
    /// Each sampled value with the share of the rows it stands for.
    values: Vec<(String, f64)>,
    /// Whether pg_trgm takes letters beyond ASCII as parts of words (it follows the
    /// database's `LC_CTYPE`: under `C.UTF-8` it does, under `C` it does not).
    unicode_words: bool,
}

impl Sample {
    fn is_fresh(&self) -> bool {
        self.taken.is_some_and(|t| t.elapsed() < REFRESH_EVERY)
    }
}

impl SearchWords {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the statistics say of `search`. The first call reads them from `pool`; a
    /// call that finds them stale reads them again while concurrent calls use the
    /// previous sample.
    pub async fn plan(&self, search: &str, pool: &PgPool) -> SearchPlan {
        let sample = self.current(pool).await;
        SearchPlan {
            driver: choose(&sample.values, search, sample.unicode_words),
            share: (!sample.values.is_empty()).then(|| share(&sample.values, search)),
            indexable: has_trigram(search, sample.unicode_words),
        }
    }

    async fn current(&self, pool: &PgPool) -> Arc<Sample> {
        let sample = self.snapshot();
        if sample.is_fresh() {
            return sample;
        }
        let _reading = if sample.taken.is_none() {
            self.reading.lock().await
        } else {
            match self.reading.try_lock() {
                Ok(guard) => guard,
                Err(_) => return sample,
            }
        };
        let sample = self.snapshot();
        if sample.is_fresh() {
            return sample;
        }
        let values = read_sample(pool).await.unwrap_or_else(|err| {
            tracing::warn!(%err, "cannot read the search text's statistics; searches give the index every word");
            Vec::new()
        });
        let unicode_words = unicode_words(pool).await.unwrap_or_else(|err| {
            tracing::warn!(%err, "cannot ask pg_trgm which letters make words; only ASCII ones are taken for indexable");
            false
        });
        let sample = Arc::new(Sample {
            taken: Some(Instant::now()),
            values,
            unicode_words,
        });
        *self.sample.write().unwrap_or_else(PoisonError::into_inner) = sample.clone();
        sample
    }

    fn snapshot(&self) -> Arc<Sample> {
        self.sample
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Whether pg_trgm finds trigrams in a word of Greek letters: whether the database's
/// `LC_CTYPE` classes letters beyond ASCII as letters.
async fn unicode_words(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT cardinality(show_trgm('αβγ')) > 0")
        .fetch_one(pool)
        .await
}

/// The sampled values of `technology_view.search_text`, each with the share of the rows
/// it stands for (as the planner weighs them): a most common value its frequency, a
/// histogram value an equal part of the rest. Empty before the table is first analyzed.
pub async fn read_sample(pool: &PgPool) -> Result<Vec<(String, f64)>, sqlx::Error> {
    type Stats = (
        Option<Vec<String>>,
        Option<Vec<f32>>,
        Option<Vec<String>>,
        f32,
    );
    let stats: Option<Stats> = sqlx::query_as(
        "SELECT most_common_vals::text::text[], most_common_freqs, \
                histogram_bounds::text::text[], null_frac \
           FROM pg_stats \
          WHERE (schemaname, tablename) = \
                (SELECT n.nspname, c.relname FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.oid = 'technology_view'::regclass) \
            AND attname = 'search_text'",
    )
    .fetch_optional(pool)
    .await?;
    let Some((common, freqs, histogram, null_frac)) = stats else {
        return Ok(Vec::new());
    };
    let common: Vec<(String, f64)> = common
        .unwrap_or_default()
        .into_iter()
        .zip(freqs.unwrap_or_default().into_iter().map(f64::from))
        .collect();
    let rest = 1.0 - f64::from(null_frac) - common.iter().map(|(_, f)| f).sum::<f64>();
    let histogram = histogram.unwrap_or_default();
    let each = rest.max(0.0) / histogram.len().max(1) as f64;
    Ok(common
        .into_iter()
        .chain(histogram.into_iter().map(|value| (value, each)))
        .collect())
}

/// The words of `search` the index can look up: those with a run of 3 letters or digits
/// (pg_trgm takes its trigrams from such runs), as written.
fn words(search: &str, unicode_words: bool) -> Vec<&str> {
    search
        .split_whitespace()
        .filter(|w| has_trigram(w, unicode_words))
        .collect()
}

/// Whether `word` holds 3 letters or digits in a row, as pg_trgm takes them: ASCII ones,
/// and other letters when `unicode_words`. Never other digits: Rust's numeric class
/// holds `²` and `½`, which pg_trgm takes for separators, and a pattern without trigrams
/// makes the index read all of itself and every row.
fn has_trigram(word: &str, unicode_words: bool) -> bool {
    let mut run = 0;
    for c in word.chars() {
        let word_char = c.is_ascii_alphanumeric() || (unicode_words && c.is_alphabetic());
        run = if word_char { run + 1 } else { 0 };
        if run >= INDEXABLE_CHARS {
            return true;
        }
    }
    false
}

/// The share of the rows `sample` says hold `text` (lower-cased here to compare with the
/// sample, which PostgreSQL lower-cased; the two may differ on a few letters, such as a
/// final sigma, which only misjudges how rare a word is).
fn share(sample: &[(String, f64)], text: &str) -> f64 {
    let text = text.to_lowercase();
    sample
        .iter()
        .filter(|(value, _)| value.contains(&text))
        .map(|(_, weight)| weight)
        .sum()
}

/// The rarest word of `search` when it is rare and another is common; `None` otherwise
/// (one word, all rare, all common, or no sample), when the index is given the whole
/// pattern. Of equally rare words, the longest (more trigrams to narrow with). The word
/// is returned as written: the statement lower-cases it as it does the whole pattern,
/// so that it is a part of the pattern as PostgreSQL lower-cases it.
fn choose(sample: &[(String, f64)], search: &str, unicode_words: bool) -> Option<String> {
    let words = words(search, unicode_words);
    if words.len() < 2 || sample.is_empty() {
        return None;
    }
    let shares: Vec<(f64, &str)> = words
        .into_iter()
        .map(|word| (share(sample, word), word))
        .collect();
    let commonest = shares.iter().map(|(s, _)| *s).fold(0.0, f64::max);
    let (rarest, word) = shares.into_iter().min_by(|(a, x), (b, y)| {
        a.total_cmp(b)
            .then_with(|| y.chars().count().cmp(&x.chars().count()))
    })?;
    (commonest >= COMMON && rarest <= RARE).then(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::choose;

    /// 100 sampled rows shaped like the seeded ones, each standing for 1 %.
    fn sample() -> Vec<(String, f64)> {
        (0..100)
            .map(|n| {
                (
                    format!(
                        "seed #{n} seeded technology number {} for benchmarks.",
                        n * 500
                    ),
                    0.01,
                )
            })
            .collect()
    }

    #[test]
    fn the_rare_word_of_a_common_and_a_rare_one_is_looked_up_alone() {
        let sample = sample();
        for (search, word, why) in [
            ("number 4242", "4242", "the rare one"),
            ("4242  NUMBER", "4242", "in either place"),
            // The statement lower-cases it like the whole pattern.
            ("NUMBER ΟΔΟΣ", "ΟΔΟΣ", "as written"),
            (
                "number 4242 77777",
                "77777",
                "equally rare: the longer word",
            ),
        ] {
            assert_eq!(
                choose(&sample, search, true).as_deref(),
                Some(word),
                "{search}: {why}"
            );
        }
    }

    #[test]
    fn otherwise_the_index_gets_the_whole_pattern() {
        let sample = sample();
        for (search, unicode_words, why) in [
            ("4242", true, "one word"),
            ("number 42", true, "a word too short to index"),
            ("number c++", true, "no trigram in c++"),
            ("number a-b-c-d", true, "nor in a-b-c-d"),
            ("seeded number", true, "all common"),
            ("4242 77777", true, "all rare"),
            (
                "NUMBER ΟΔΟΣ",
                false,
                "Greek letters make no trigrams under LC_CTYPE C",
            ),
            ("number ²³⁴", true, "nor ²³⁴"),
        ] {
            assert_eq!(choose(&sample, search, unicode_words), None, "{why}");
        }
        assert_eq!(choose(&[], "number 4242", true), None, "no statistics yet");
    }

    #[test]
    fn a_word_is_indexable_by_the_letters_pg_trgm_takes() {
        use super::has_trigram;
        assert!(has_trigram("4242", false));
        assert!(has_trigram("c++ abc", false));
        assert!(!has_trigram("ab-cd", true));
        assert!(has_trigram("ΟΔΟΣ", true));
        assert!(!has_trigram("ΟΔΟΣ", false), "C: no letters beyond ASCII");
        assert!(!has_trigram("²³⁴", true), "pg_trgm takes ² for a separator");
        assert!(!has_trigram("½½½", true));
    }
}
