//! Keys the schema accepts (Zilla documents them) but this build does not implement. Such a key
//! is marked in its component's schema with [`UNSUPPORTED`], whose value is the reason; a
//! config that uses it fails to load with that reason at the key's position, instead of loading
//! and silently doing nothing.
//!
//! In a component's typed options (schemars):
//!
//! ```ignore
//! #[schemars(extend("x-unsupported" = "kafka topic `deltaType` is not supported yet"))]
//! pub delta_type: Option<serde_json::Value>,
//! ```

use serde_json::Value;

use super::error::ConfigError;
use super::model::{Config, Origin};

/// The schema keyword marking a key as accepted by the schema but refused at load.
pub const UNSUPPORTED: &str = "x-unsupported";

/// Every use of a key marked [`UNSUPPORTED`] in `schema` by `instance` (found at `origin`).
pub fn refusals(
    config: &Config,
    schema: &Value,
    instance: &Value,
    origin: &Origin,
) -> Vec<ConfigError> {
    let mut found = Vec::new();
    walk(schema, schema, instance, &origin.path, &mut found, 0);
    found
        .into_iter()
        .map(|(path, reason)| {
            let at = Origin {
                document: origin.document,
                path,
            };
            let mut error = config.error(&at, reason);
            // Point at the key rather than its value.
            if let (Some(document), Some((key, parent))) =
                (config.documents.get(at.document), at.path.split_last())
                && let Some(key_node) = document.locate(parent).key(key)
            {
                error.position = config
                    .source
                    .position_of_line_column(key_node.at.line, key_node.at.column);
            }
            error
        })
        .collect()
}

/// Schemas nest a few levels per config level; this bounds a `$ref` cycle.
const MAX_DEPTH: usize = 64;

fn walk(
    root: &Value,
    schema: &Value,
    instance: &Value,
    path: &[String],
    found: &mut Vec<(Vec<String>, String)>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(object) = schema.as_object() else {
        return;
    };
    if let Some(reason) = object.get(UNSUPPORTED).and_then(Value::as_str) {
        if !found.iter().any(|(seen, _)| seen == path) {
            found.push((path.to_vec(), reason.to_owned()));
        }
        return;
    }
    if object.contains_key("$ref") {
        walk(
            root,
            resolve(root, schema),
            instance,
            path,
            found,
            depth + 1,
        );
    }
    for branch in alternatives(object) {
        walk(root, branch, instance, path, found, depth + 1);
    }
    for keyword in ["then", "else"] {
        if let Some(branch) = object.get(keyword) {
            walk(root, branch, instance, path, found, depth + 1);
        }
    }
    match instance {
        Value::Object(fields) => {
            let properties = object.get("properties").and_then(Value::as_object);
            for (key, value) in fields {
                let child = match properties.and_then(|p| p.get(key)) {
                    Some(child) => child,
                    None => match object.get("additionalProperties") {
                        Some(child) => child,
                        None => continue,
                    },
                };
                let mut child_path = path.to_vec();
                child_path.push(key.clone());
                walk(root, child, value, &child_path, found, depth + 1);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = object.get("items") {
                for (index, item) in items.iter().enumerate() {
                    let mut child_path = path.to_vec();
                    child_path.push(index.to_string());
                    walk(root, item_schema, item, &child_path, found, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Every key of `schema` that is not only a container of other keys, as a dotted path with
/// the reason when it is marked [`UNSUPPORTED`]. `*` stands for any key, `[]` for array items,
/// and `[tcp]`, `[server]` for the `type` and `kind` a branch of the schema applies to:
/// `bindings.*[tcp][server].options.port`. This is what `zilla schema` accepts, key by key.
pub fn key_paths(schema: &Value) -> Vec<(String, Option<String>)> {
    let mut keys = Vec::new();
    collect(schema, schema, "", &mut keys, 0);
    keys.sort();
    keys.dedup();
    keys
}

/// The keys of [`key_paths`] marked [`UNSUPPORTED`], with the reason: what [`refusals`]
/// refuses.
pub fn refused_keys(schema: &Value) -> Vec<(String, String)> {
    key_paths(schema)
        .into_iter()
        .filter_map(|(key, reason)| Some((key, reason?)))
        .collect()
}

/// The branches of a schema's `anyOf`, `oneOf` and `allOf`.
fn alternatives(object: &serde_json::Map<String, Value>) -> impl Iterator<Item = &Value> {
    ["anyOf", "oneOf", "allOf"]
        .into_iter()
        .filter_map(|keyword| object.get(keyword).and_then(Value::as_array))
        .flatten()
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| reference.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
        .unwrap_or(schema)
}

fn collect(
    root: &Value,
    schema: &Value,
    path: &str,
    keys: &mut Vec<(String, Option<String>)>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(object) = schema.as_object() else {
        return;
    };
    if object.contains_key("$ref") {
        collect(root, resolve(root, schema), path, keys, depth + 1);
    }
    for branch in alternatives(object) {
        // A branch that applies to one `type` or `kind` qualifies the path.
        let mut branch_path = path.to_owned();
        let condition = branch.get("if").and_then(|c| c.get("properties"));
        for discriminator in ["type", "kind"] {
            if let Some(value) = condition
                .and_then(|c| c.get(discriminator))
                .and_then(|d| d.get("const"))
                .and_then(Value::as_str)
            {
                branch_path.push_str(&format!("[{value}]"));
            }
        }
        let branch = branch.get("then").unwrap_or(branch);
        collect(root, branch, &branch_path, keys, depth + 1);
    }
    for (key, child) in object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let child_path = join(path, key);
        let reason = resolve(root, child)
            .get(UNSUPPORTED)
            .or_else(|| child.get(UNSUPPORTED))
            .and_then(Value::as_str);
        if let Some(reason) = reason {
            keys.push((child_path, Some(reason.to_owned())));
            continue;
        }
        if !is_container(root, child) {
            keys.push((child_path.clone(), None));
        }
        collect(root, child, &child_path, keys, depth + 1);
    }
    if let Some(child) = object.get("additionalProperties").filter(|c| c.is_object()) {
        collect(root, child, &join(path, "*"), keys, depth + 1);
    }
    if let Some(child) = object.get("items") {
        collect(root, child, &format!("{path}[]"), keys, depth + 1);
    }
}

/// Whether a schema only groups other keys (it, one of its branches, or its items have
/// `properties`): its keys are listed rather than it.
fn is_container(root: &Value, schema: &Value) -> bool {
    let schema = resolve(root, schema);
    let has_keys = |schema: &Value| {
        let schema = resolve(root, schema);
        schema.get("properties").is_some()
            || schema
                .get("items")
                .is_some_and(|items| resolve(root, items).get("properties").is_some())
    };
    has_keys(schema)
        || ["anyOf", "oneOf"]
            .iter()
            .filter_map(|keyword| schema.get(*keyword).and_then(Value::as_array))
            .flatten()
            .any(has_keys)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
