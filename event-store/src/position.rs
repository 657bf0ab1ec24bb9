//! The position of an event in the global order: the pair `(tx_id, global_position)`,
//! written as one opaque token of 32 hex digits.
//!
//! Why a pair: identity values are drawn at insert, not at commit, so `global_position`
//! alone is not commit order. Every row whose `tx_id` is below the oldest running
//! transaction is final, and every future row gets a larger `tx_id`, so ordering by the
//! pair never lets a reader pass a row that can still appear. Fixed-width hex keeps the
//! tokens' string order equal to their numeric order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A place in the global event order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Transaction id of the event's append (`xid8`).
    pub tx_id: u64,
    /// Identity value drawn at insert.
    pub global_position: i64,
}

impl Position {
    /// Before every event.
    pub const ZERO: Position = Position {
        tx_id: 0,
        global_position: 0,
    };

    /// Builds a position from its two parts.
    pub fn new(tx_id: u64, global_position: i64) -> Self {
        Self {
            tx_id,
            global_position,
        }
    }

    /// The `tx_id` as the text PostgreSQL casts to `xid8`.
    pub fn tx_id_text(&self) -> String {
        self.tx_id.to_string()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.tx_id, self.global_position as u64)
    }
}

/// A position token that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a position is a token of 32 hexadecimal digits, as returned in X-CC-Position")]
pub struct PositionParseError;

impl FromStr for Position {
    type Err = PositionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PositionParseError);
        }
        let tx_id = u64::from_str_radix(&s[..16], 16).map_err(|_| PositionParseError)?;
        let global = u64::from_str_radix(&s[16..], 16).map_err(|_| PositionParseError)?;
        let global_position = i64::try_from(global).map_err(|_| PositionParseError)?;
        Ok(Self::new(tx_id, global_position))
    }
}

/// In OpenAPI documents: the token as a string of 32 hexadecimal digits.
impl utoipa::PartialSchema for Position {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(POSITION_PATTERN))
            .description(Some(
                "A position in the global order: an opaque token of 32 hexadecimal digits (X-CC-Position)",
            ))
            .examples(["0000000000000a2f0000000000000123"])
            .into()
    }
}

impl utoipa::ToSchema for Position {}

/// The form of a position token (JSON Schema pattern).
pub const POSITION_PATTERN: &str = "^[0-9a-fA-F]{32}$";

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_orders_like_the_pair() {
        let a = Position::new(10, 99);
        let b = Position::new(11, 3);
        assert_eq!(a.to_string().parse::<Position>().unwrap(), a);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(Position::ZERO.to_string(), "0".repeat(32));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert!("".parse::<Position>().is_err());
        assert!("xyz".parse::<Position>().is_err());
        assert!("g".repeat(32).parse::<Position>().is_err());
        assert!(format!("{}{}", "0".repeat(16), "f".repeat(16))
            .parse::<Position>()
            .is_err());
    }
}
