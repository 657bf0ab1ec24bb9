//! Validated value types shared by both aggregates.
//!
//! Every type here is *parsed* once at the edge (`parse` returns a [`ValidationError`]
//! naming the field) and is trusted afterwards. Serialization is transparent, and
//! deserialization does **not** re-validate: stored events are facts, and a rule
//! tightened later must never make history unreadable.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The longest free-text field we accept (description, notes, use cases, errors).
pub const MAX_TEXT_LEN: usize = 20_000;
/// The longest short label (vendor, worker id, current step, ...).
pub const MAX_LABEL_LEN: usize = 255;
/// The most tags one technology or job may carry.
pub const MAX_TAGS: usize = 50;
/// The longest tag.
pub const MAX_TAG_LEN: usize = 64;

/// An aggregate id as a client names it (in a path or a socket topic): 1 to
/// [`AggregateId::MAX_LEN`] bytes, no control characters. Anything else names no
/// aggregate, so every route answers it as unknown, the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateId(String);

impl AggregateId {
    /// The longest id any aggregate has (ours are 36-character UUIDs).
    pub const MAX_LEN: usize = 64;

    /// `text` as an id, or `None` when it cannot name an aggregate.
    pub fn parse(text: &str) -> Option<Self> {
        (!text.is_empty() && text.len() <= Self::MAX_LEN && !text.chars().any(char::is_control))
            .then(|| Self(text.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The project a technology or job belongs to: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectId(i64);

impl ProjectId {
    /// Accepts any integer from 1 to `i64::MAX`.
    pub fn parse(field: &str, value: i64) -> Result<Self, ValidationError> {
        if value >= 1 {
            Ok(Self(value))
        } else {
            Err(ValidationError::new(field, "must be a positive integer"))
        }
    }

    /// The raw integer.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Trims `value` and checks it holds between `min` and `max` characters.
pub fn bounded_text(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<String, ValidationError> {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len < min {
        return Err(ValidationError::new(
            field,
            if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must have at least {min} characters")
            },
        ));
    }
    if len > max {
        return Err(ValidationError::new(
            field,
            format!("must have at most {max} characters (got {len})"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// A technology's title: 1 to 255 characters, unique per project ignoring case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Title(String);

impl Title {
    /// Trims and checks the length.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        bounded_text(field, value, 1, 255).map(Self)
    }

    /// The title as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which uniqueness is enforced: lower case, inner white space folded.
    pub fn uniqueness_key(&self) -> String {
        self.0
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    }
}

/// A score from 0 to 100 (relevance, stability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(u8);

impl Score {
    /// Accepts 0 to 100.
    pub fn parse(field: &str, value: i64) -> Result<Self, ValidationError> {
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= 100)
            .map(Self)
            .ok_or_else(|| ValidationError::new(field, "must be between 0 and 100"))
    }

    /// The raw score.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A priority from 1 (lowest) to 5 (highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    /// Accepts 1 to 5.
    pub fn parse(field: &str, value: i64) -> Result<Self, ValidationError> {
        u8::try_from(value)
            .ok()
            .filter(|v| (1..=5).contains(v))
            .map(Self)
            .ok_or_else(|| ValidationError::new(field, "must be between 1 and 5"))
    }

    /// The raw priority.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A job's progress in percent, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Progress(u8);

impl Progress {
    /// Done: 100 percent.
    pub const DONE: Progress = Progress(100);

    /// Accepts 0 to 100.
    pub fn parse(field: &str, value: i64) -> Result<Self, ValidationError> {
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= 100)
            .map(Self)
            .ok_or_else(|| ValidationError::new(field, "must be between 0 and 100"))
    }

    /// The raw percentage.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A finite number that is zero or more (latency, throughput, cost).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NonNegative(f64);

impl NonNegative {
    /// Accepts finite values `>= 0`.
    pub fn parse(field: &str, value: f64) -> Result<Self, ValidationError> {
        if value.is_finite() && value >= 0.0 {
            Ok(Self(value))
        } else {
            Err(ValidationError::new(
                field,
                "must be a finite number greater than or equal to 0",
            ))
        }
    }

    /// The raw number.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// An absolute `http://` or `https://` URL of at most 512 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// Checks the scheme, a non-empty host, the length and the absence of white space.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let value = value.trim();
        if value.chars().count() > 512 {
            return Err(ValidationError::new(
                field,
                "must have at most 512 characters",
            ));
        }
        let rest = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"))
            .ok_or_else(|| ValidationError::new(field, "must be an http:// or https:// URL"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::new(
                field,
                "must be an absolute http(s) URL with a host and no white space",
            ));
        }
        Ok(Self(value.to_string()))
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A list of distinct tags, each 1 to 64 characters, at most 50.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Tags(Vec<String>);

impl Tags {
    /// Trims each tag, drops exact duplicates (keeping the first) and checks the bounds.
    pub fn parse(field: &str, values: &[String]) -> Result<Self, ValidationError> {
        if values.len() > MAX_TAGS {
            return Err(ValidationError::new(
                field,
                format!("must have at most {MAX_TAGS} tags"),
            ));
        }
        let mut tags: Vec<String> = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let tag = bounded_text(&format!("{field}[{i}]"), value, 1, MAX_TAG_LEN)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Ok(Self(tags))
    }

    /// The tags in order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// The OpenAPI schemas of the value types: each states the rule its `parse` enforces, so
/// request and response bodies that use one describe the same bounds. Patterns are
/// ECMA-262 regular expressions, as JSON Schema wants.
pub mod schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaFormat, Type};
    use utoipa::openapi::{RefOr, Schema};
    use utoipa::{PartialSchema, ToSchema};

    use super::*;

    /// Text without control characters other than tab, line feed and carriage return
    /// (what [`bounded_text`] accepts), possibly empty.
    pub const TEXT_PATTERN: &str = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$";
    /// The same, with at least one character that is not white space (a value that
    /// trims to empty is refused).
    pub const LABEL_PATTERN: &str = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$";
    /// A hyphenated UUID, as ids are written.
    pub const UUID_PATTERN: &str =
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
    /// What [`HttpUrl::parse`] accepts.
    pub const URL_PATTERN: &str = r"^https?://[^\s\x00-\x1F\x7F-\x9F/?#][^\s\x00-\x1F\x7F-\x9F]*$";

    fn integer(min: i64, max: Option<i64>, description: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            .maximum(max)
            .description(Some(description))
            .into()
    }

    /// A string of `min..=max` characters matching `pattern`.
    pub fn string(min: usize, max: usize, pattern: &str, description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length((min > 0).then_some(min))
            .max_length(Some(max))
            .pattern(Some(pattern))
            .description(Some(description))
    }

    /// A label: 1 to [`MAX_LABEL_LEN`] characters once trimmed.
    pub fn label(description: &str) -> ObjectBuilder {
        string(1, MAX_LABEL_LEN, LABEL_PATTERN, description)
    }

    /// Free text: up to [`MAX_TEXT_LEN`] characters.
    pub fn text(description: &str) -> ObjectBuilder {
        string(0, MAX_TEXT_LEN, TEXT_PATTERN, description)
    }

    /// A free-text field (description, notes, use cases, error, ...).
    pub struct Text;

    impl PartialSchema for Text {
        fn schema() -> RefOr<Schema> {
            text("Free text, trimmed; at most 20000 characters, no control characters but tab and line breaks").into()
        }
    }
    impl ToSchema for Text {}

    /// A short label (vendor, created_by, current_step, relationship, ...).
    pub struct Label;

    impl PartialSchema for Label {
        fn schema() -> RefOr<Schema> {
            label("A label: 1 to 255 characters once trimmed, no control characters").into()
        }
    }
    impl ToSchema for Label {}

    /// A technology id as links name it.
    pub struct TechnologyRef;

    impl PartialSchema for TechnologyRef {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::Custom("uuid".into())))
                .pattern(Some(UUID_PATTERN))
                .description(Some("A technology id (a UUID)"))
                .into()
        }
    }
    impl ToSchema for TechnologyRef {}

    /// Any JSON object of at most 100 entries (conventionally technology id → relationship).
    pub struct Dependencies;

    impl PartialSchema for Dependencies {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(super::MAX_LABEL_LEN))
                        .build(),
                ))
                .additional_properties(Some(ObjectBuilder::new().description(Some(
                    "Any JSON value, e.g. a relationship such as requires or optional",
                ))))
                .max_properties(Some(100))
                .description(Some(
                    "What it depends on: any JSON object of at most 100 entries and 16 KiB, \
                     conventionally technology id → relationship (e.g. requires, optional); \
                     keys that are UUIDs are stored lower-case and hyphenated",
                ))
                .into()
        }
    }
    impl ToSchema for Dependencies {}

    /// Ids of technologies that could replace this one, at most 100 (repeats dropped).
    pub struct Alternatives;

    impl PartialSchema for Alternatives {
        fn schema() -> RefOr<Schema> {
            ArrayBuilder::new()
                .items(TechnologyRef::schema())
                .max_items(Some(100))
                .description(Some(
                    "Ids of technologies that could replace this one; at most 100, repeats dropped",
                ))
                .into()
        }
    }
    impl ToSchema for Alternatives {}

    impl PartialSchema for ProjectId {
        fn schema() -> RefOr<Schema> {
            integer(1, Some(i64::MAX), "A project id: a positive integer")
        }
    }
    impl ToSchema for ProjectId {}

    impl PartialSchema for Title {
        fn schema() -> RefOr<Schema> {
            label("1 to 255 characters once trimmed, unique per project ignoring case").into()
        }
    }
    impl ToSchema for Title {}

    impl PartialSchema for Score {
        fn schema() -> RefOr<Schema> {
            integer(0, Some(100), "A score from 0 to 100")
        }
    }
    impl ToSchema for Score {}

    impl PartialSchema for Priority {
        fn schema() -> RefOr<Schema> {
            integer(1, Some(5), "A priority from 1 (lowest) to 5 (highest)")
        }
    }
    impl ToSchema for Priority {}

    impl PartialSchema for Progress {
        fn schema() -> RefOr<Schema> {
            integer(0, Some(100), "Progress in percent, 0 to 100")
        }
    }
    impl ToSchema for Progress {}

    impl PartialSchema for NonNegative {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0))
                .description(Some("A finite number, 0 or more"))
                .into()
        }
    }
    impl ToSchema for NonNegative {}

    impl PartialSchema for HttpUrl {
        fn schema() -> RefOr<Schema> {
            string(
                1,
                512,
                URL_PATTERN,
                "An absolute http:// or https:// URL with a host, at most 512 characters, no white space",
            )
            .into()
        }
    }
    impl ToSchema for HttpUrl {}

    impl PartialSchema for Tags {
        fn schema() -> RefOr<Schema> {
            ArrayBuilder::new()
                .items(string(
                    1,
                    MAX_TAG_LEN,
                    LABEL_PATTERN,
                    "A tag: 1 to 64 characters once trimmed",
                ))
                .max_items(Some(MAX_TAGS))
                .description(Some("Distinct tags (repeats dropped), at most 50"))
                .into()
        }
    }
    impl ToSchema for Tags {}
}

/// Declares a closed set of snake-case names with parsing and listing.
macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(
                #[doc = concat!("`", $text, "`")]
                #[serde(rename = $text)]
                $variant,
            )+
        }

        impl $name {
            /// Every accepted name, in declaration order.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses a wire name, or names the accepted ones in the error.
            pub fn parse(field: &str, value: &str) -> Result<Self, $crate::error::ValidationError> {
                match value {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::error::ValidationError::new(
                        field,
                        format!("must be one of: {}", Self::ALL.join(", ")),
                    )),
                }
            }
        }

        /// In OpenAPI documents: a string, one of [`Self::ALL`] (a derive would not see
        /// the wire names through this macro).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::ALL.iter().copied()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use closed_set;

#[cfg(test)]
mod tests {

    #[test]
    fn an_aggregate_id_is_short_and_printable() {
        assert_eq!(
            AggregateId::parse("0190b6c2-0000-7000-8000-0000000000aa").map(|i| i.as_str().len()),
            Some(36)
        );
        assert!(AggregateId::parse("").is_none());
        assert!(AggregateId::parse(&"a".repeat(65)).is_none());
        assert!(AggregateId::parse("a\u{0}b").is_none());
        assert!(AggregateId::parse(&"a".repeat(64)).is_some());
    }

    use super::*;

    #[test]
    fn title_is_trimmed_and_bounded() {
        assert_eq!(Title::parse("title", "  JUCE  ").unwrap().as_str(), "JUCE");
        assert_eq!(
            Title::parse("title", "   ").unwrap_err().field,
            "title".to_string()
        );
        assert!(Title::parse("title", &"x".repeat(255)).is_ok());
        assert!(Title::parse("title", &"x".repeat(256)).is_err());
    }

    #[test]
    fn title_uniqueness_ignores_case_and_spacing() {
        let a = Title::parse("title", "Web  Audio API").unwrap();
        let b = Title::parse("title", "web audio api").unwrap();
        assert_eq!(a.uniqueness_key(), b.uniqueness_key());
    }

    #[test]
    fn numeric_bounds_are_enforced() {
        assert!(Score::parse("s", 0).is_ok());
        assert!(Score::parse("s", 100).is_ok());
        assert!(Score::parse("s", 101).is_err());
        assert!(Score::parse("s", -1).is_err());
        assert!(Priority::parse("p", 0).is_err());
        assert!(Priority::parse("p", 6).is_err());
        assert!(Priority::parse("p", 5).is_ok());
        assert!(NonNegative::parse("n", -0.5).is_err());
        assert!(NonNegative::parse("n", f64::NAN).is_err());
        assert!(ProjectId::parse("project_id", 0).is_err());
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(HttpUrl::parse("u", "https://juce.com/docs").is_ok());
        assert!(HttpUrl::parse("u", "ftp://juce.com").is_err());
        assert!(HttpUrl::parse("u", "https:///nohost").is_err());
        assert!(HttpUrl::parse("u", "https://a b").is_err());
        assert!(HttpUrl::parse("u", &format!("https://a.com/{}", "x".repeat(600))).is_err());
    }

    #[test]
    fn tags_are_deduplicated_and_bounded() {
        let tags = Tags::parse("tags", &["a".into(), " a ".into(), "b".into()]).unwrap();
        assert_eq!(tags.as_slice(), ["a", "b"]);
        let err = Tags::parse("tags", &["ok".into(), "".into()]).unwrap_err();
        assert_eq!(err.field, "tags[1]");
        assert!(Tags::parse("tags", &vec!["t".to_string(); 51]).is_err());
    }
}
