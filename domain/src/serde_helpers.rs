//! Serde helpers for patch-style payloads, and the one timestamp format of the API.

use chrono::{DateTime, Datelike, Timelike, Utc};
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
// `is_multiple_of` is younger than the workspace's `rust-version`.
#[allow(clippy::manual_is_multiple_of)]
pub fn api_time(at: &DateTime<Utc>) -> String {
    // Digit by digit: chrono's `format` parses its pattern on every call, which was a
    // twentieth of a rebuild's own CPU. Years of other than four digits, and leap
    // seconds, go the general way.
    if !(0..=9999).contains(&at.year()) || at.nanosecond() >= 1_000_000_000 {
        return formatted_api_time(at);
    }
    let mut text = String::with_capacity(32);
    let digits = |text: &mut String, value: u32, width: u32| {
        for place in (0..width).rev() {
            let digit = value / 10_u32.pow(place) % 10;
            text.push(char::from(b'0' + digit as u8));
        }
    };
    digits(&mut text, at.year().unsigned_abs(), 4);
    for (separator, value) in [
        ('-', at.month()),
        ('-', at.day()),
        ('T', at.hour()),
        (':', at.minute()),
        (':', at.second()),
    ] {
        text.push(separator);
        digits(&mut text, value, 2);
    }
    let mut micros = at.timestamp_subsec_micros();
    if micros > 0 {
        let mut width = 6;
        while micros % 10 == 0 {
            micros /= 10;
            width -= 1;
        }
        text.push('.');
        digits(&mut text, micros, width);
    }
    text.push_str("+00:00");
    text
}

/// [`api_time`] through chrono's `format`, for any time.
fn formatted_api_time(at: &DateTime<Utc>) -> String {
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
    use super::{api_time, formatted_api_time};
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

    /// Digit by digit gives what chrono's format gives, over the range of four-digit
    /// years, every width of the microseconds, and the times outside that range.
    #[test]
    fn the_digit_by_digit_time_is_the_formatted_one() {
        let mut seconds: i64 = -62_167_219_200; // 0000-01-01T00:00:00
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        while seconds < 253_402_300_800 {
            // 9999-12-31T23:59:59 ends the range.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let micros = ([0, 1, 10, 120_000, 999_999, 500_000, 123_456, 100]
                [usize::try_from(state % 8).unwrap()]
                + u32::try_from(state % 3).unwrap() * 7)
                % 1_000_000;
            let at = Utc.timestamp_opt(seconds, micros * 1000).unwrap();
            assert_eq!(api_time(&at), formatted_api_time(&at), "{seconds} {micros}");
            seconds += i64::try_from(state % 40_000_000).unwrap() + 1;
        }
        for at in [
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(), // a leap second
        ] {
            assert_eq!(api_time(&at), formatted_api_time(&at));
        }
    }
}
