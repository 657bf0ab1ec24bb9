//! Opaque keyset cursors: the sort they belong to and the last row's sort value and id,
//! as base64url of a small JSON document. A cursor is only valid with the sort it was
//! made for.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::bad_parameter;
use commandcenter_api_error::ApiError;

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort it continues (`-updated_at`, `created_position`, ...).
    #[serde(rename = "s")]
    pub sort: String,
    /// The last row's sort value, as text.
    #[serde(rename = "v")]
    pub value: String,
    /// The last row's id.
    #[serde(rename = "i")]
    pub id: String,
}

impl Cursor {
    /// The opaque form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses `text`, which must have been made for `sort`.
    pub fn decode(text: &str, sort: &str) -> Result<Self, ApiError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad_parameter("cursor", "is not a cursor this API returned"))?;
        let cursor: Cursor = serde_json::from_slice(&bytes)
            .map_err(|_| bad_parameter("cursor", "is not a cursor this API returned"))?;
        if cursor.sort != sort {
            return Err(bad_parameter(
                "cursor",
                format!(
                    "was made for sort {:?}; pass the same sort to continue",
                    cursor.sort
                ),
            ));
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_another_sort() {
        let cursor = Cursor {
            sort: "-priority".into(),
            value: "3".into(),
            id: "abc".into(),
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text, "-priority").unwrap(), cursor);
        assert!(Cursor::decode(&text, "priority").is_err());
        assert!(Cursor::decode("!!", "priority").is_err());
    }
}
