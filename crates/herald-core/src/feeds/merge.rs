//! JSON merge patch (RFC 7386) for `herald:feed_edit` with `merge`: a backend sends only the
//! fields that changed, and `null` removes a field.

use serde_json::Value;
use serde_json::value::RawValue;

use super::FeedError;

/// `patch` applied to `target`, as JSON text.
pub fn merge_patch(target: &RawValue, patch: &RawValue) -> Result<Box<RawValue>, FeedError> {
    let invalid = |e: serde_json::Error| FeedError::Invalid(format!("invalid JSON: {e}"));
    let mut target: Value = serde_json::from_str(target.get()).map_err(invalid)?;
    let patch: Value = serde_json::from_str(patch.get()).map_err(invalid)?;
    apply(&mut target, patch);
    let text = serde_json::to_string(&target).map_err(invalid)?;
    RawValue::from_string(text).map_err(invalid)
}

fn apply(target: &mut Value, patch: Value) {
    let Value::Object(fields) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in fields {
            if value.is_null() {
                map.remove(&key);
            } else {
                apply(map.entry(key).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(target: &str, patch: &str) -> String {
        let target = RawValue::from_string(target.into()).expect("json");
        let patch = RawValue::from_string(patch.into()).expect("json");
        merge_patch(&target, &patch).expect("merge").get().to_owned()
    }

    #[test]
    fn follows_rfc_7386_examples() {
        assert_eq!(merged(r#"{"a":"b"}"#, r#"{"a":"c"}"#), r#"{"a":"c"}"#);
        assert_eq!(merged(r#"{"a":"b"}"#, r#"{"b":"c"}"#), r#"{"a":"b","b":"c"}"#);
        assert_eq!(merged(r#"{"a":"b"}"#, r#"{"a":null}"#), r#"{}"#);
        assert_eq!(merged(r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#), r#"{"b":"c"}"#);
        assert_eq!(merged(r#"{"a":["b"]}"#, r#"{"a":"c"}"#), r#"{"a":"c"}"#);
        assert_eq!(merged(r#"{"a":{"b":"c"}}"#, r#"{"a":{"b":"d","c":null}}"#), r#"{"a":{"b":"d"}}"#);
        assert_eq!(merged(r#"["a","b"]"#, r#"["c","d"]"#), r#"["c","d"]"#);
        assert_eq!(merged(r#"{"a":"foo"}"#, "null"), "null");
        assert_eq!(merged(r#"{"e":null}"#, r#"{"a":1}"#), r#"{"a":1,"e":null}"#);
        assert_eq!(merged("[1,2]", r#"{"a":"b","c":null}"#), r#"{"a":"b"}"#);
        assert_eq!(merged("{}", r#"{"a":{"bb":{"ccc":null}}}"#), r#"{"a":{"bb":{}}}"#);
    }
}
