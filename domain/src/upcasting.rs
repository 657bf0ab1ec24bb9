//! How old event payloads are read: `cqrs-es` upcasters, applied wherever events are
//! decoded (aggregate loads, projections, time travel), never rewriting stored events.
//!
//! Schema history:
//! - `TechnologyCreated` / `TechnologyUpdated` **1.0** stored `tags` as one comma-separated
//!   string (`"dsp, audio"`); **1.1** stores a list (`["dsp", "audio"]`). A 1.0 payload
//!   that already holds a list (written by early builds of this service) passes unchanged.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
use std::sync::OnceLock;

use serde_json::Value;

/// The shape and meaning of the aggregates' serialized state, for snapshots: change it
/// whenever a state struct changes shape or the fold changes what it computes, and older
/// snapshots are ignored. 2: `JobRecord.releases`.
pub const STATE_SCHEMA: &str = "2";

/// Every upcaster, in the order they apply.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    ["TechnologyCreated", "TechnologyUpdated"]
        .into_iter()
        .map(|event_type| {
            Box::new(SemanticVersionEventUpcaster::new(
                event_type,
                "1.1",
                Box::new(tags_as_list),
            )) as Box<dyn EventUpcaster>
        })
        .collect()
}

fn all_upcasters() -> &'static [Box<dyn EventUpcaster>] {
    static UPCASTERS: OnceLock<Vec<Box<dyn EventUpcaster>>> = OnceLock::new();
    UPCASTERS.get_or_init(upcasters)
}

/// True when an event stored as `event_type` `event_version` is older than its current
/// form.
fn needs_upcast(event_type: &str, event_version: &str) -> bool {
    all_upcasters()
        .iter()
        .any(|u| u.can_upcast(event_type, event_version))
}

/// The event stored as `event_type` `event_version` with `payload`, decoded in its current
/// form: read in place when it is current, upcast from a copy when it is older.
pub fn decode_payload<E: serde::de::DeserializeOwned>(
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<E, serde_json::Error> {
    if needs_upcast(event_type, event_version) {
        serde_json::from_value(upcast_payload(event_type, event_version, payload.clone()))
    } else {
        E::deserialize(payload)
    }
}

/// [`decode_payload`] of a payload given as its JSON text: a current one is read straight
/// into `E` (no [`Value`] is built, what a rebuild's millions of events would pay for
/// twice, building and dropping it); an older one is parsed and upcast as by
/// [`decode_payload`].
pub fn decode_payload_text<E: serde::de::DeserializeOwned>(
    event_type: &str,
    event_version: &str,
    payload: &str,
) -> Result<E, serde_json::Error> {
    if needs_upcast(event_type, event_version) {
        let stored: Value = serde_json::from_str(payload)?;
        serde_json::from_value(upcast_payload(event_type, event_version, stored))
    } else {
        serde_json::from_str(payload)
    }
}

/// `payload` of an event stored as `event_type` `event_version`, upcast to the current
/// version.
pub fn upcast_payload(event_type: &str, event_version: &str, payload: Value) -> Value {
    // The hot path (projections, rebuilds): current payloads pass without a copy.
    if !needs_upcast(event_type, event_version) {
        return payload;
    }
    let upcasters = all_upcasters();
    let mut event = SerializedEvent::new(
        String::new(),
        0,
        String::new(),
        event_type.to_string(),
        event_version.to_string(),
        payload,
        Value::Null,
    );
    for upcaster in upcasters {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event.payload
}

/// 1.0 → 1.1: every `tags` string in the payload becomes a list of trimmed, non-empty
/// labels.
fn tags_as_list(mut payload: Value) -> Value {
    fn walk(value: &mut Value) {
        if let Value::Object(map) = value {
            for (key, inner) in map.iter_mut() {
                match inner {
                    Value::String(text) if key == "tags" => {
                        let tags = text
                            .split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(|t| Value::String(t.to_string()))
                            .collect();
                        *inner = Value::Array(tags);
                    }
                    Value::Object(_) => walk(inner),
                    _ => {}
                }
            }
        }
    }
    walk(&mut payload);
    payload
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::technology::TechnologyEvent;

    #[test]
    fn version_1_0_tags_string_becomes_a_list() {
        let stored = json!({"TechnologyUpdated": {"changes": {"tags": " dsp, audio ,,"}, "at": "2026-11-01T12:00:00Z"}});
        let upcast = upcast_payload("TechnologyUpdated", "1.0", stored);
        assert_eq!(
            upcast["TechnologyUpdated"]["changes"]["tags"],
            json!(["dsp", "audio"])
        );
        let event: TechnologyEvent = serde_json::from_value(upcast).unwrap();
        assert!(matches!(event, TechnologyEvent::TechnologyUpdated { .. }));
    }

    #[test]
    fn a_payload_decodes_alike_from_its_text_and_from_its_value() {
        use crate::job::JobEvent;
        let technology = [
            // 1.0, upcast: the tags string becomes a list either way.
            (
                "1.0",
                json!({"TechnologyUpdated": {"changes": {"tags": " dsp, audio ,,"}, "at": "2026-11-01T12:00:00Z"}}),
            ),
            // Current: a null (cleared) field, an absent one, escapes, a float.
            (
                "1.1",
                json!({"TechnologyUpdated": {"changes": {"tags": ["a"], "description": null,
                    "notes": "quote \" back\\slash \u{e9} \n", "latency_ms": 1.25},
                    "at": "2026-11-01T12:00:00.123456Z"}}),
            ),
        ];
        for (version, stored) in technology {
            let from_value: TechnologyEvent =
                decode_payload("TechnologyUpdated", version, &stored).unwrap();
            let from_text: TechnologyEvent =
                decode_payload_text("TechnologyUpdated", version, &stored.to_string()).unwrap();
            assert_eq!(from_text, from_value, "{version}: {stored}");
        }
        let job = json!({"JobCompleted": {"result": {"n": [1, -2.5, null, {"z": "\u{1F600}"}]},
            "at": "2026-11-01T12:00:00Z"}});
        let from_value: JobEvent = decode_payload("JobCompleted", "1.0", &job).unwrap();
        let from_text: JobEvent = decode_payload_text(
            "JobCompleted",
            "1.0",
            &serde_json::to_string_pretty(&job).unwrap(),
        )
        .unwrap();
        assert_eq!(from_text, from_value);
        assert!(
            decode_payload_text::<JobEvent>("JobCompleted", "1.0", "{\"JobCompleted\": 1}")
                .is_err()
        );
        assert!(decode_payload_text::<TechnologyEvent>("TechnologyUpdated", "1.0", "{").is_err());
    }

    #[test]
    fn current_payloads_pass_unchanged() {
        let stored = json!({"TechnologyUpdated": {"changes": {"tags": "a,b"}}});
        assert_eq!(
            upcast_payload("TechnologyUpdated", "1.1", stored.clone()),
            stored
        );
        let listed = json!({"TechnologyCreated": {"technology": {"tags": ["a"]}}});
        assert_eq!(
            upcast_payload("TechnologyCreated", "1.0", listed.clone()),
            listed
        );
    }
}
