//! `topics[].transforms` of a `cache_server`: Zilla's `extract-key` and `extract-headers`,
//! which lift a top-level field of a record's JSON key or value into its key or into headers
//! as the record enters the cache, so that key filters, item lookups and compacted replay see
//! the extracted key.
//!
//! ```yaml
//! topics:
//!   - name: events
//!     transforms:
//!       - extract-key: ${message.value.id}
//!       - extract-headers:
//!           tenant: ${message.value.tenant}
//! ```
//!
//! The field is read from the key or value as JSON text: a string gives its text, any other
//! JSON value its JSON form (`42`, `true`, `{"a":1}`), and `null` a null key or header value.
//! A record whose key or value is not a JSON object, or lacks the field, keeps its key and gets
//! no such header. Header names follow Zilla's rule (a letter or `:`, then letters, digits,
//! `.`, `_`, `-`, `:`). Transforms on a topic that also has `key` or `value` models are refused
//! at load: the field would have to be read after the model's conversion.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

use crate::config::{KafkaOptions, TransformConfig};
use crate::kind::Message;
use crate::wire::Header;

/// Which part of a record a field is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Key,
    Value,
}

/// `${message.<part>.<field>}`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    part: Part,
    name: String,
}

impl Field {
    fn parse(expression: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "`{expression}`: a field is `${{message.key.<name>}}` or `${{message.value.<name>}}`"
            )
        };
        let inner = expression
            .strip_prefix("${message.")
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(expected)?;
        let (part, name) = inner.split_once('.').ok_or_else(expected)?;
        let part = match part {
            "key" => Part::Key,
            "value" => Part::Value,
            _ => return Err(expected()),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(expected());
        }
        Ok(Self {
            part,
            name: name.to_owned(),
        })
    }
}

/// The transforms of one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transform {
    key: Option<Field>,
    headers: Vec<(Bytes, Field)>,
}

/// A field's value as record bytes: `None` for a missing field (nothing changes), `Some(None)`
/// for JSON `null`.
fn field_bytes(
    object: Option<&serde_json::Map<String, Value>>,
    name: &str,
) -> Option<Option<Bytes>> {
    match object?.get(name)? {
        Value::Null => Some(None),
        Value::String(text) => Some(Some(Bytes::copy_from_slice(text.as_bytes()))),
        other => Some(Some(Bytes::from(other.to_string()))),
    }
}

fn object(bytes: Option<&Bytes>) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(bytes?).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

impl Transform {
    /// Applies the transforms to one record as it enters the cache.
    pub fn apply(&self, message: &mut Message) {
        let needs = |part| {
            self.key.iter().any(|field| field.part == part)
                || self.headers.iter().any(|(_, field)| field.part == part)
        };
        let key = needs(Part::Key)
            .then(|| object(message.key.as_ref()))
            .flatten();
        let value = needs(Part::Value)
            .then(|| object(message.value.as_ref()))
            .flatten();
        let read = |field: &Field| {
            let source = match field.part {
                Part::Key => key.as_ref(),
                Part::Value => value.as_ref(),
            };
            field_bytes(source, &field.name)
        };
        for (name, field) in &self.headers {
            if let Some(bytes) = read(field) {
                message.headers.push(Header {
                    name: name.clone(),
                    value: bytes,
                });
            }
        }
        if let Some(field) = &self.key
            && let Some(bytes) = read(field)
        {
            message.key = bytes;
        }
    }
}

/// The transforms of every topic of `options` that has some, checked; errors name their place
/// under `options`.
pub fn build(options: &KafkaOptions) -> Result<HashMap<String, Transform>, (String, String)> {
    let mut transforms = HashMap::new();
    for (index, topic) in options.topics.iter().flatten().enumerate() {
        let Some(list) = &topic.transforms else {
            continue;
        };
        let at = format!("options.topics[{index}].transforms");
        if topic.key.is_some() || topic.value.is_some() {
            return Err((
                at,
                "transforms on a topic with `key` or `value` models are not supported".into(),
            ));
        }
        let mut transform = Transform::default();
        for (item, config) in list.iter().enumerate() {
            let at = format!("{at}[{item}]");
            match config {
                TransformConfig {
                    extract_key: Some(expression),
                    extract_headers: None,
                } => {
                    if transform.key.is_some() {
                        return Err((at, "`extract-key` is given twice".into()));
                    }
                    let field =
                        Field::parse(expression).map_err(|e| (format!("{at}.extract-key"), e))?;
                    transform.key = Some(field);
                }
                TransformConfig {
                    extract_key: None,
                    extract_headers: Some(headers),
                } => {
                    if !transform.headers.is_empty() {
                        return Err((at, "`extract-headers` is given twice".into()));
                    }
                    for (name, expression) in headers {
                        // Zilla's header name rule: a letter or `:` first, then letters,
                        // digits, `.`, `_`, `-` or `:`.
                        let valid = name
                            .chars()
                            .next()
                            .is_some_and(|first| first.is_ascii_alphabetic() || first == ':')
                            && name
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c));
                        if !valid {
                            return Err((
                                format!("{at}.extract-headers"),
                                format!("`{name}` is not a header name a transform may add"),
                            ));
                        }
                        let field = Field::parse(expression)
                            .map_err(|e| (format!("{at}.extract-headers.{name}"), e))?;
                        transform
                            .headers
                            .push((Bytes::copy_from_slice(name.as_bytes()), field));
                    }
                }
                _ => {
                    return Err((
                        at,
                        "each transform is one of `extract-key` and `extract-headers`".into(),
                    ));
                }
            }
        }
        transforms.insert(topic.name.clone(), transform);
    }
    Ok(transforms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: Option<&str>, value: Option<&str>) -> Message {
        Message {
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        }
    }

    fn transform(key: Option<&str>, headers: &[(&str, &str)]) -> Transform {
        Transform {
            key: key.map(|k| Field::parse(k).unwrap()),
            headers: headers
                .iter()
                .map(|(n, e)| {
                    (
                        Bytes::copy_from_slice(n.as_bytes()),
                        Field::parse(e).unwrap(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn fields_become_the_key_and_headers() {
        let transform = transform(
            Some("${message.value.id}"),
            &[
                ("tenant", "${message.value.tenant}"),
                ("count", "${message.value.count}"),
                ("region", "${message.key.region}"),
            ],
        );
        let mut record = message(
            Some(r#"{"region":"eu"}"#),
            Some(r#"{"id":"a-1","tenant":"acme","count":3}"#),
        );
        transform.apply(&mut record);
        assert_eq!(record.key.as_deref(), Some(&b"a-1"[..]));
        assert_eq!(record.header(b"tenant").map(|v| &v[..]), Some(&b"acme"[..]));
        assert_eq!(record.header(b"count").map(|v| &v[..]), Some(&b"3"[..]));
        assert_eq!(record.header(b"region").map(|v| &v[..]), Some(&b"eu"[..]));
    }

    #[test]
    fn records_without_the_field_are_left_as_they_are() {
        let transform = transform(Some("${message.value.id}"), &[("t", "${message.value.t}")]);
        for value in [
            None,
            Some("not json"),
            Some("[1,2]"),
            Some(r#"{"other":1}"#),
        ] {
            let mut record = message(Some("k"), value);
            transform.apply(&mut record);
            assert_eq!(record.key.as_deref(), Some(&b"k"[..]), "{value:?}");
            assert!(record.headers.is_empty(), "{value:?}");
        }
        let mut record = message(Some("k"), Some(r#"{"id":null}"#));
        transform.apply(&mut record);
        assert_eq!(record.key, None);
    }

    #[test]
    fn header_names_are_checked() {
        let options = |name: &str| -> KafkaOptions {
            serde_json::from_value(serde_json::json!({"topics": [{
                "name": "t",
                "transforms": [{"extract-headers": {name: "${message.value.id}"}}]
            }]}))
            .unwrap()
        };
        assert!(build(&options("zilla:tenant")).is_ok());
        for bad in ["9x", "a b", "x/y", ""] {
            let (path, _) = build(&options(bad)).unwrap_err();
            assert_eq!(
                path, "options.topics[0].transforms[0].extract-headers",
                "{bad}"
            );
        }
    }

    #[test]
    fn expressions_are_checked() {
        assert!(Field::parse("${message.value.id}").is_ok());
        assert!(Field::parse("${message.key._k9}").is_ok());
        for bad in [
            "${message.value}",
            "${message.headers.id}",
            "${message.value.a.b}",
            "${message.value.9a}",
            "message.value.id",
        ] {
            assert!(Field::parse(bad).is_err(), "{bad}");
        }
    }
}
