//! The forms in which the previous API's clients send some fields, accepted beside ours
//! and converted on the way in (answers always use our form).

use commandcenter_domain::ValidationError;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The refusal of a read-only field sent back changed.
pub(crate) fn read_only(field: &str, what: &str) -> ValidationError {
    ValidationError::new(
        field,
        format!("is read-only and {what}; send it back as read, or leave it out"),
    )
}

/// The version a write requires, from `If-Match` or from the `version` of an object sent
/// back as read (both: they must agree).
pub(crate) fn required_version(
    if_match: Option<i64>,
    version: Option<Value>,
) -> Result<Option<i64>, ValidationError> {
    let version = match version {
        None => None,
        Some(sent) => Some(
            sent.as_i64()
                .ok_or_else(|| read_only("version", "must be the integer version read"))?,
        ),
    };
    match (if_match, version) {
        (Some(header), Some(body)) if header != body => {
            Err(read_only("version", "disagrees with If-Match"))
        }
        (header, body) => Ok(header.or(body)),
    }
}

/// A list of labels: a JSON array, or one comma-separated string as the previous API
/// took `tags` and `alternatives` (`"a, b"` is `["a", "b"]`; empty items are dropped).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ListForm {
    /// `["a", "b"]`.
    List(Vec<String>),
    /// `"a, b"`.
    Text(String),
}

impl ListForm {
    /// The items, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::List(items) => items,
            Self::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

/// A job's tags: our array of labels, or the previous API's object, whose entries become
/// `key:value` labels (a value that is not a string in its JSON text).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TagsForm {
    /// `["nightly", "team:audio"]`.
    List(Vec<String>),
    /// `{"team": "audio"}`, stored as `["team:audio"]`.
    Object(Map<String, Value>),
}

impl TagsForm {
    /// The labels, in order (an object's in key order).
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::List(items) => items,
            Self::Object(entries) => entries
                .into_iter()
                .map(|(key, value)| match value {
                    Value::String(text) => format!("{key}:{text}"),
                    other => format!("{key}:{other}"),
                })
                .collect(),
        }
    }
}

/// A text the previous API took as an integer (`created_by`, a user id): either form,
/// stored as text.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TextForm {
    /// `"alice"`.
    Text(String),
    /// `42`, stored as `"42"`.
    Integer(i64),
}

impl TextForm {
    /// The text.
    pub fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Integer(n) => n.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_previous_forms_convert_to_ours() {
        let list: ListForm = serde_json::from_value(json!(" JUCE, audio ,, dsp")).unwrap();
        assert_eq!(list.into_vec(), ["JUCE", "audio", "dsp"]);
        let list: ListForm = serde_json::from_value(json!(["a", "b"])).unwrap();
        assert_eq!(list.into_vec(), ["a", "b"]);
        let tags: TagsForm = serde_json::from_value(json!({"team": "audio", "n": 3})).unwrap();
        assert_eq!(tags.into_vec(), ["n:3", "team:audio"]);
        let by: TextForm = serde_json::from_value(json!(42)).unwrap();
        assert_eq!(by.into_text(), "42");
        assert!(serde_json::from_value::<ListForm>(json!(5)).is_err());
    }
}
