//! Payload schemas made self-contained: every `$ref` a schema makes into the document is
//! copied once into the schema's own `$defs` and pointed there, so the schema validates on its
//! own (as an inline catalog subject) and recursive schemas stay finite.

use serde_json::{Map, Value};
use zilla_config::ConfigError;
use zilla_config::node::NodeValue;

use crate::resolve::{Document, Located, pointer_segments};

/// The most values one bundled schema may hold, counting its `$defs`: a bound on what a
/// document can make the gateway hold in memory for one content model.
const MAX_VALUES: usize = 100_000;

/// Nesting deeper than this is refused rather than recursed into.
const MAX_DEPTH: usize = 128;

/// Bundles the schema at `located`.
pub(crate) fn bundle(document: &Document<'_>, located: Located<'_>) -> Result<Value, ConfigError> {
    let mut bundler = Bundler {
        document,
        defs: Map::new(),
        values: 0,
    };
    let mut schema = bundler.value(&located, 0)?;
    // A schema that is only a reference becomes its target, so validators that ignore
    // siblings of `$ref` (draft-07) still see a schema at the root.
    if let Some(key) = only_reference(&schema)
        && let Some(target) = bundler.defs.get(&key)
    {
        schema = target.clone();
    }
    if !bundler.defs.is_empty()
        && let Value::Object(object) = &mut schema
    {
        object.insert("$defs".to_owned(), Value::Object(bundler.defs));
    }
    Ok(schema)
}

/// The `$defs` key of a schema that is `{"$ref": "#/$defs/<key>"}` and nothing else.
fn only_reference(schema: &Value) -> Option<String> {
    let object = schema.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object
        .get("$ref")?
        .as_str()?
        .strip_prefix("#/$defs/")
        .map(str::to_owned)
}

struct Bundler<'d, 'a> {
    document: &'d Document<'a>,
    defs: Map<String, Value>,
    values: usize,
}

impl<'a> Bundler<'_, 'a> {
    fn value(&mut self, located: &Located<'a>, depth: usize) -> Result<Value, ConfigError> {
        self.values += 1;
        if self.values > MAX_VALUES || depth > MAX_DEPTH {
            return Err(self.document.error(
                located.node,
                &located.path,
                format!(
                    "schema too large: at most {MAX_VALUES} values nested at most {MAX_DEPTH} deep"
                ),
            ));
        }
        Ok(match &located.node.value {
            NodeValue::Map(_) => {
                let mut object = Map::new();
                for (key, entry) in located.entries() {
                    let value = match (key.as_str(), entry.node.as_str()) {
                        ("$ref", Some(reference)) => {
                            Value::String(self.reference(located, reference, depth)?)
                        }
                        _ => self.value(&entry, depth + 1)?,
                    };
                    object.insert(key, value);
                }
                Value::Object(object)
            }
            NodeValue::Seq(_) => Value::Array(
                located
                    .items()
                    .iter()
                    .map(|item| self.value(item, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            _ => located.node.to_json(),
        })
    }

    /// Copies the target of `reference` into `$defs` (once) and returns the new reference.
    fn reference(
        &mut self,
        from: &Located<'a>,
        reference: &str,
        depth: usize,
    ) -> Result<String, ConfigError> {
        let at = from.get("$ref").unwrap_or_else(|| from.clone());
        let segments = pointer_segments(reference)
            .map_err(|message| self.document.error(at.node, &at.path, message))?;
        let key = if segments.is_empty() {
            "root".to_owned()
        } else {
            segments.join(".")
        };
        if !self.defs.contains_key(&key) {
            // Placeholder first: a schema that refers to itself finds its key taken and stops.
            self.defs.insert(key.clone(), Value::Null);
            let target = self.document.target(from, reference)?;
            let value = self.value(&target, depth + 1)?;
            self.defs.insert(key.clone(), value);
        }
        Ok(format!("#/$defs/{}", escape(&key)))
    }
}

/// Escapes a `$defs` key for use in a JSON pointer.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zilla_config::Source;
    use zilla_config::node::Node;

    fn bundled(text: &str, path: &str) -> Result<Value, ConfigError> {
        let root = Node::parse_documents(&Source::plain("s.yaml", text))
            .unwrap()
            .remove(0);
        let document = Document {
            file: "s.yaml",
            root: &root,
        };
        let mut located = document.root();
        for key in path.split('.') {
            located = located.get(key).unwrap();
        }
        bundle(&document, located)
    }

    #[test]
    fn references_are_copied_into_defs() {
        let text = "\
payload: {$ref: '#/schemas/pet'}
schemas:
  pet:
    type: object
    properties:
      tag: {$ref: '#/schemas/tag'}
  tag: {type: string}
";
        let schema = bundled(text, "payload").unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["tag"]["$ref"], "#/$defs/schemas.tag");
        assert_eq!(schema["$defs"]["schemas.tag"], json!({"type": "string"}));
    }

    #[test]
    fn recursive_schemas_stay_finite() {
        let text = "\
payload: {$ref: '#/schemas/node'}
schemas:
  node:
    type: object
    properties:
      children: {type: array, items: {$ref: '#/schemas/node'}}
";
        let schema = bundled(text, "payload").unwrap();
        assert_eq!(
            schema["properties"]["children"]["items"]["$ref"],
            "#/$defs/schemas.node"
        );
        assert_eq!(schema["$defs"]["schemas.node"]["type"], "object");
    }

    #[test]
    fn outside_references_are_refused_where_written() {
        let text = "payload:\n  type: object\n  properties:\n    a: {$ref: 'other.yaml#/a'}\n";
        let error = bundled(text, "payload").unwrap_err();
        assert_eq!(error.position.line, 4);
        assert_eq!(error.path, "payload.properties.a.$ref");
        assert!(error.message.contains("outside the document"), "{error}");
    }
}
