//! Serde helpers for patch-style payloads, and the one timestamp format of the API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Deserializes a field that distinguishes *absent* (`None`, via `#[serde(default)]`)
/// from *explicit null* (`Some(None)`) and from a value (`Some(Some(v))`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A time as PostgreSQL writes a `timestamptz` into JSON (`2026-11-30T07:14:54.26+00:00`:
/// microseconds without trailing zeros, offset `+00:00`), so that the state a command
/// answers with reads exactly like the same row read back from a read model.
pub fn api_time(at: &DateTime<Utc>) -> String {
    let mut text = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    let micros = at.timestamp_subsec_micros();
    if micros > 0 {
        let digits = format!("{micros:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push_str("+00:00");
    text
}

/// Serializes a time with [`api_time`] (`#[serde(serialize_with = "…")]`).
pub fn time<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&api_time(at))
}

/// Serializes an optional time with [`api_time`].
pub fn opt_time<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&api_time(at)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::api_time;
    use chrono::{TimeZone, Utc};

    #[test]
    fn times_read_as_postgresql_writes_them() {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 7, 14, 54).unwrap();
        assert_eq!(api_time(&at), "2026-11-30T07:14:54+00:00");
        let at = at + chrono::Duration::microseconds(260_000);
        assert_eq!(api_time(&at), "2026-11-30T07:14:54.26+00:00");
        let at = at + chrono::Duration::microseconds(3);
        assert_eq!(api_time(&at), "2026-11-30T07:14:54.260003+00:00");
    }
}
