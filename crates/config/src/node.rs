//! A YAML document parsed by serde-saphyr into a tree that remembers where every key and value
//! was written, so schema and reference errors found later can still name a line and column.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::{ConfigError, Position};
use super::source::Source;

/// A value with the position (in the substituted text) where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line and column in the substituted text.
    pub at: Position,
    /// The value.
    pub value: NodeValue,
}

/// A YAML value; maps keep their order and the position of each key.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `~`, `null` or empty.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `i64`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// Any other scalar.
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key starts.
    pub at: Position,
}

impl Node {
    /// Parses every `---` document of `source`.
    pub fn parse_documents(source: &Source) -> Result<Vec<Node>, ConfigError> {
        let documents: Vec<Spanned<NodeValue>> = serde_saphyr::from_multiple(&source.text)
            .map_err(|error| {
                let position = error
                    .location()
                    .map(|location| {
                        source.position_of_line_column(
                            location.line() as usize,
                            location.column() as usize,
                        )
                    })
                    .unwrap_or(Position { line: 1, column: 1 });
                ConfigError::new(
                    &source.file,
                    position,
                    "",
                    format!("malformed YAML: {}", first_line(&error.to_string())),
                )
            })?;
        Ok(documents.into_iter().map(Node::from).collect())
    }

    /// The position of this node in the file the user wrote.
    pub fn position(&self, source: &Source) -> Position {
        source.position_of_line_column(self.at.line, self.at.column)
    }

    /// The entries of a mapping, if this is one.
    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The key entry named `key`, if this is a mapping that has it.
    pub fn key(&self, key: &str) -> Option<&Key> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k)
    }

    /// The string, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::String(value) => Some(value),
            _ => None,
        }
    }

    /// Follows a JSON-pointer-like list of segments; returns the deepest node reached.
    pub fn locate<'a>(&'a self, segments: &[String]) -> &'a Node {
        let mut node = self;
        for segment in segments {
            let next = match &node.value {
                NodeValue::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| &k.name == segment)
                    .map(|(_, v)| v),
                NodeValue::Seq(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    /// The value as JSON, for schema validation and typed deserialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(value) => Value::Bool(*value),
            NodeValue::Int(value) => Value::from(*value),
            NodeValue::UInt(value) => Value::from(*value),
            NodeValue::Float(value) => serde_json::Number::from_f64(*value)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            NodeValue::String(value) => Value::String(value.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The parser's message without its own `error: line N column M:` prefix (we give the
/// position, mapped back through substitution, ourselves).
fn first_line(message: &str) -> &str {
    let line = message.lines().next().unwrap_or(message);
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line.strip_prefix("line ") {
        Some(rest) => match rest.find(": ") {
            Some(index) if rest[..index].contains("column") => &rest[index + 2..],
            _ => line,
        },
        None => line,
    }
}

fn position_of<T>(spanned: &Spanned<T>) -> Position {
    Position {
        line: spanned.referenced.line() as usize,
        column: spanned.referenced.column() as usize,
    }
}

impl From<Spanned<NodeValue>> for Node {
    fn from(spanned: Spanned<NodeValue>) -> Self {
        Node {
            at: position_of(&spanned),
            value: spanned.value,
        }
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<NodeValue, E> {
        Ok(i64::try_from(value)
            .map(NodeValue::Int)
            .unwrap_or(NodeValue::UInt(value)))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<NodeValue, E> {
        Ok(i64::try_from(value)
            .map(NodeValue::Int)
            .unwrap_or(NodeValue::String(value.to_string())))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<NodeValue, E> {
        Ok(u64::try_from(value)
            .map(|v| {
                i64::try_from(v)
                    .map(NodeValue::Int)
                    .unwrap_or(NodeValue::UInt(v))
            })
            .unwrap_or(NodeValue::String(value.to_string())))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<NodeValue, E> {
        Ok(NodeValue::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<NodeValue>>()? {
            items.push(Node::from(item));
        }
        Ok(NodeValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<NodeValue>>()?;
            let key = Key {
                at: position_of(&key),
                name: key.value,
            };
            if entries.iter().any(|(k, _)| k.name == key.name) {
                return Err(de::Error::custom(format!("duplicate key `{}`", key.name)));
            }
            entries.push((key, Node::from(value)));
        }
        Ok(NodeValue::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documents_with_positions() {
        let source = Source::plain(
            "z.yaml",
            "name: a\nbindings:\n  tcp0:\n    type: tcp\n    port: 8080\n---\nname: b\n",
        );
        let documents = Node::parse_documents(&source).unwrap();
        assert_eq!(documents.len(), 2);
        let port = documents[0].locate(&["bindings".into(), "tcp0".into(), "port".into()]);
        assert_eq!(port.value, NodeValue::Int(8080));
        assert_eq!(
            port.at,
            Position {
                line: 5,
                column: 11
            }
        );
        let key = documents[0].get("bindings").unwrap().key("tcp0").unwrap();
        assert_eq!(key.at, Position { line: 3, column: 3 });
        assert_eq!(documents[1].get("name").unwrap().as_str(), Some("b"));
    }

    #[test]
    fn malformed_yaml_names_its_position() {
        let source = Source::plain("z.yaml", "name: a\nbindings:\n  x: [1, 2\n");
        let error = Node::parse_documents(&source).unwrap_err();
        assert!(error.message.starts_with("malformed YAML"), "{error}");
        assert!(error.position.line >= 3, "{error}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let source = Source::plain("z.yaml", "name: a\nname: b\n");
        let error = Node::parse_documents(&source).unwrap_err();
        assert!(error.message.contains("duplicate"), "{error}");
    }
}
