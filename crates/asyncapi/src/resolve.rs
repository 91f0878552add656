//! `$ref` resolution inside one document: JSON pointers (`#/components/messages/a`), chains of
//! references followed to their end, and cycles reported instead of followed forever.

use zilla_config::node::{Node, NodeValue};
use zilla_config::{ConfigError, Position};

/// The longest chain of references followed before giving up; real documents use two or
/// three, and anything longer is as good as a cycle.
const MAX_CHAIN: usize = 64;

/// One document being read: its file name (for errors) and its root node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Document<'a> {
    pub file: &'a str,
    pub root: &'a Node,
}

/// A node found in the document, with the path that leads to it (`components.messages.a`).
#[derive(Debug, Clone)]
pub(crate) struct Located<'a> {
    pub node: &'a Node,
    pub path: String,
}

impl<'a> Located<'a> {
    /// The entry `key` of this mapping, if it has one.
    pub fn get(&self, key: &str) -> Option<Located<'a>> {
        self.node.get(key).map(|node| Located {
            node,
            path: join(&self.path, key),
        })
    }

    /// The entries of this mapping (none if it is not one).
    pub fn entries(&self) -> Vec<(String, Located<'a>)> {
        self.node
            .entries()
            .unwrap_or_default()
            .iter()
            .map(|(key, node)| {
                (
                    key.name.clone(),
                    Located {
                        node,
                        path: join(&self.path, &key.name),
                    },
                )
            })
            .collect()
    }

    /// The items of this sequence (none if it is not one).
    pub fn items(&self) -> Vec<Located<'a>> {
        match &self.node.value {
            NodeValue::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(index, node)| Located {
                    node,
                    path: join(&self.path, &index.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The `$ref` text, when this node is a reference.
    pub fn reference(&self) -> Option<&'a str> {
        self.node.get("$ref").and_then(Node::as_str)
    }

    /// Whether this is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self.node.value, NodeValue::Map(_))
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'a> Document<'a> {
    /// The root of the document.
    pub fn root(&self) -> Located<'a> {
        Located {
            node: self.root,
            path: String::new(),
        }
    }

    /// An error at `node`.
    pub fn error(&self, node: &Node, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, node.at, path, message)
    }

    /// An error about the whole document.
    pub fn document_error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, Position { line: 1, column: 1 }, "", message)
    }

    /// Follows `located` through any chain of `$ref`s to the node they end at.
    pub fn deref(&self, located: Located<'a>) -> Result<Located<'a>, ConfigError> {
        let mut current = located;
        let mut seen: Vec<String> = Vec::new();
        while let Some(reference) = current.reference() {
            if seen.iter().any(|pointer| pointer == reference) || seen.len() >= MAX_CHAIN {
                seen.push(reference.to_owned());
                return Err(self.error(
                    current.node,
                    &current.path,
                    format!("`$ref` cycle: {}", seen.join(" -> ")),
                ));
            }
            seen.push(reference.to_owned());
            current = self.target(&current, reference)?;
        }
        Ok(current)
    }

    /// The node a `$ref` at `from` points to (one step, not followed further).
    pub fn target(&self, from: &Located<'a>, reference: &str) -> Result<Located<'a>, ConfigError> {
        let at = from.get("$ref").unwrap_or_else(|| from.clone());
        let segments = pointer_segments(reference)
            .map_err(|message| self.error(at.node, &at.path, message))?;
        let mut node = self.root;
        for segment in &segments {
            let next = match &node.value {
                NodeValue::Map(entries) => entries
                    .iter()
                    .find(|(key, _)| &key.name == segment)
                    .map(|(_, value)| value),
                NodeValue::Seq(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            node = next.ok_or_else(|| {
                self.error(
                    at.node,
                    &at.path,
                    format!("`$ref` `{reference}` points to nothing in the document"),
                )
            })?;
        }
        Ok(Located {
            node,
            path: segments.join("."),
        })
    }
}

/// The segments of a local JSON pointer reference (`#/a/b~1c` → `a`, `b/c`).
pub(crate) fn pointer_segments(reference: &str) -> Result<Vec<String>, String> {
    let Some(pointer) = reference.strip_prefix('#') else {
        return Err(format!(
            "`$ref` `{reference}` points outside the document; only references within it \
             (`#/...`) are supported"
        ));
    };
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(pointer) = pointer.strip_prefix('/') else {
        return Err(format!(
            "`$ref` `{reference}` is not a JSON pointer (`#/...`)"
        ));
    };
    pointer
        .split('/')
        .map(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| format!("`$ref` `{reference}` is not valid UTF-8 once decoded"))?;
            Ok(decoded.replace("~1", "/").replace("~0", "~"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zilla_config::Source;

    fn parse(text: &str) -> Node {
        Node::parse_documents(&Source::plain("t.yaml", text))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn pointers_unescape() {
        assert_eq!(
            pointer_segments("#/a/b~1c/d~0e/f%20g").unwrap(),
            vec!["a", "b/c", "d~e", "f g"]
        );
        assert!(pointer_segments("other.yaml#/a").is_err());
        assert!(pointer_segments("#a").is_err());
        assert_eq!(pointer_segments("#").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn chains_are_followed_and_cycles_reported() {
        let root = parse(
            "a: {$ref: '#/b'}\nb: {$ref: '#/c'}\nc: {x: 1}\nd: {$ref: '#/e'}\ne: {$ref: '#/d'}\n",
        );
        let document = Document {
            file: "t.yaml",
            root: &root,
        };
        let a = document.root().get("a").unwrap();
        let target = document.deref(a).unwrap();
        assert_eq!(target.path, "c");
        let d = document.root().get("d").unwrap();
        let error = document.deref(d).unwrap_err();
        assert!(error.to_string().contains("cycle"), "{error}");
        assert!(error.to_string().starts_with("t.yaml:"), "{error}");
        let missing = parse("a: {$ref: '#/nowhere'}\n");
        let document = Document {
            file: "t.yaml",
            root: &missing,
        };
        let error = document
            .deref(document.root().get("a").unwrap())
            .unwrap_err();
        assert_eq!(error.position.line, 1);
        assert!(error.to_string().contains("points to nothing"), "{error}");
    }
}
