//! A patch over [`TechnologyFields`]: each field is absent (unchanged) or carries its new
//! value; nullable fields can also be cleared with an explicit `null`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    CostTier, Dependencies, IntegrationDifficulty, MaturityLevel, TechnologyDomain,
    TechnologyFields,
};
use crate::serde_helpers::double_option;
use crate::values::{HttpUrl, NonNegative, Priority, Score, Tags, Title};

/// Generates [`TechnologyChanges`] from two lists: fields that always hold a value, and
/// nullable ones (`Option<Option<T>>`: absent, cleared, or set).
macro_rules! technology_changes {
    (
        required: { $($req:ident: $req_ty:ty),+ $(,)? }
        nullable: { $($opt:ident: $opt_ty:ty),+ $(,)? }
    ) => {
        /// New values for some of a technology's fields (status excluded: it has its own event).
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        pub struct TechnologyChanges {
            $(
                #[doc = concat!("New `", stringify!($req), "`.")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $req: Option<$req_ty>,
            )+
            $(
                #[doc = concat!("New `", stringify!($opt), "`; `Some(None)` clears it.")]
                #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "double_option")]
                pub $opt: Option<Option<$opt_ty>>,
            )+
        }

        impl TechnologyChanges {
            /// True when no field is set.
            pub fn is_empty(&self) -> bool {
                $(self.$req.is_none() &&)+ $(self.$opt.is_none() &&)+ true
            }

            /// Keeps only the values that differ from `current`.
            pub fn without_unchanged(mut self, current: &TechnologyFields) -> Self {
                $(
                    if self.$req.as_ref() == Some(&current.$req) {
                        self.$req = None;
                    }
                )+
                $(
                    if self.$opt.as_ref() == Some(&current.$opt) {
                        self.$opt = None;
                    }
                )+
                self
            }

            /// Writes every set value into `fields`.
            pub fn apply_to(&self, fields: &mut TechnologyFields) {
                $(
                    if let Some(value) = &self.$req {
                        fields.$req = value.clone();
                    }
                )+
                $(
                    if let Some(value) = &self.$opt {
                        fields.$opt = value.clone();
                    }
                )+
            }

            /// The names of the fields this patch sets, in declaration order.
            pub fn field_names(&self) -> Vec<&'static str> {
                let mut names = Vec::new();
                $(if self.$req.is_some() { names.push(stringify!($req)); })+
                $(if self.$opt.is_some() { names.push(stringify!($opt)); })+
                names
            }
        }
    };
}

technology_changes! {
    required: {
        title: Title,
        domain: TechnologyDomain,
        relevance_score: Score,
        priority: Priority,
        tags: Tags,
        dependencies: Dependencies,
        alternatives: Vec<String>,
    }
    nullable: {
        vendor: String,
        description: String,
        notes: String,
        use_cases: String,
        documentation_url: HttpUrl,
        repository_url: HttpUrl,
        website_url: HttpUrl,
        latency_ms: NonNegative,
        throughput_qps: NonNegative,
        integration_difficulty: IntegrationDifficulty,
        integration_time_estimate_days: u32,
        maturity_level: MaturityLevel,
        stability_score: Score,
        cost_tier: CostTier,
        cost_monthly_usd: NonNegative,
        last_hn_mention: DateTime<Utc>,
        hn_score_avg: NonNegative,
        github_stars: u32,
        github_last_commit: DateTime<Utc>,
    }
}
