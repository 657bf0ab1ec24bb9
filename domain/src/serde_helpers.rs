//! Serde helpers for patch-style payloads.

use serde::{Deserialize, Deserializer};

/// Deserializes a field that distinguishes *absent* (`None`, via `#[serde(default)]`)
/// from *explicit null* (`Some(None)`) and from a value (`Some(Some(v))`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
