//! The `inline` catalog: schemas written directly in `zilla.yaml`, by subject, for the models
//! of bindings in the same namespace (`json`, `avro`, `protobuf`) to validate against.
//!
//! Each schema gets the id Zilla gives it, the CRC-32C of its text, so a model reference
//! `{id: N}` names the same schema in both gateways (Zilla prints the id as a signed 32-bit
//! number; both spellings are accepted by the models). A subject is found by its exact name
//! first; otherwise the wildcard subjects (`*` matches any run of characters) are tried, the
//! most specific (most literal characters) first. Every subject holds one schema, so asking
//! for `latest` finds it whatever version it is registered as; any other version must match.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   catalog0:
//!     type: inline
//!     options:
//!       subjects:
//!         items:
//!           version: latest
//!           schema: |
//!             {
//!               "type": "object",
//!               "properties": {"id": {"type": "string"}},
//!               "required": ["id"]
//!             }
//!         orders.*-value:
//!           schema: '{"type": "object"}'
//! bindings:
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       requests:
//!         - path: /items
//!           content:
//!             model: json
//!             catalog:
//!               catalog0:
//!                 - subject: items
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Options:
//! - `subjects`: by subject name (letters, digits, `.`, `_`, `-`, and `*` wildcards), an
//!   object with `schema` (the schema text, required) and `version` (default `latest`).
//!
//! An inline catalog takes no `vault`.

pub mod config;

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use zilla_engine::components::{Catalog, ComponentContext, ComponentFactory};
use zilla_engine::{BuildError, Registry};

use config::InlineOptions;

/// The version that stands for whichever one a subject has.
pub const LATEST: &str = "latest";

/// Registers the `inline` catalog type.
pub fn register(registry: &mut Registry) {
    registry.catalog(InlineCatalogFactory);
}

/// Builds inline catalogs.
#[derive(Debug)]
pub struct InlineCatalogFactory;

impl ComponentFactory<dyn Catalog> for InlineCatalogFactory {
    fn type_name(&self) -> &'static str {
        "inline"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(
            InlineOptions
        )))
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
        context.refuse_vault("an inline catalog")?;
        let options: InlineOptions = context.options()?;
        let catalog = InlineCatalog::new(&options)?;
        tracing::debug!(catalog = %context.name, subjects = catalog.len(), "inline catalog built");
        Ok(Arc::new(catalog))
    }
}

/// One subject's registration.
#[derive(Debug, Clone)]
struct Registered {
    version: String,
    id: u32,
}

/// A subject name with `*` wildcards.
#[derive(Debug, Clone)]
struct Wildcard {
    pattern: Regex,
    /// Literal characters in the name: more means more specific.
    literals: usize,
    registered: Registered,
}

/// A built inline catalog.
#[derive(Debug, Default)]
pub struct InlineCatalog {
    exact: HashMap<String, Registered>,
    wildcards: Vec<Wildcard>,
    schemas: HashMap<u32, Arc<str>>,
}

impl InlineCatalog {
    /// Registers every subject of `options`.
    pub fn new(options: &InlineOptions) -> Result<Self, BuildError> {
        let mut catalog = InlineCatalog::default();
        for (subject, entry) in options.subjects.iter().flatten() {
            let path = || format!("options.subjects.{subject}");
            let id = schema_id(&entry.schema);
            match catalog.schemas.get(&id) {
                Some(existing) if **existing != *entry.schema => {
                    return Err(BuildError::at(
                        path(),
                        format!("schema id {id} is already taken by a different schema"),
                    ));
                }
                Some(_) => {}
                None => {
                    catalog.schemas.insert(id, Arc::from(entry.schema.as_str()));
                }
            }
            let registered = Registered {
                version: entry.version.clone(),
                id,
            };
            if subject.contains('*') {
                let pattern = wildcard_regex(subject)
                    .map_err(|error| BuildError::at(path(), error.to_string()))?;
                catalog.wildcards.push(Wildcard {
                    pattern,
                    literals: subject.chars().filter(|c| *c != '*').count(),
                    registered,
                });
            } else {
                catalog.exact.insert(subject.clone(), registered);
            }
        }
        // Stable sort: equally specific wildcards keep their name order.
        catalog
            .wildcards
            .sort_by_key(|wildcard| std::cmp::Reverse(wildcard.literals));
        Ok(catalog)
    }

    /// How many subjects it holds.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    /// Whether it holds no subject.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, subject: &str, version: &str) -> Option<u32> {
        let accepts = |registered: &Registered| version == LATEST || registered.version == version;
        if let Some(registered) = self.exact.get(subject) {
            return accepts(registered).then_some(registered.id);
        }
        self.wildcards
            .iter()
            .find(|wildcard| wildcard.pattern.is_match(subject) && accepts(&wildcard.registered))
            .map(|wildcard| wildcard.registered.id)
    }
}

impl Catalog for InlineCatalog {
    fn resolve_subject(&self, subject: &str, version: &str) -> Result<u32, String> {
        self.find(subject, version)
            .ok_or_else(|| format!("no schema for subject `{subject}` version `{version}`"))
    }

    fn schema(&self, id: u32) -> Result<Arc<str>, String> {
        self.schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("no schema with id {id}"))
    }
}

/// The id Zilla gives a schema: the CRC-32C of its text.
pub fn schema_id(schema: &str) -> u32 {
    crc32c::crc32c(schema.as_bytes())
}

fn wildcard_regex(subject: &str) -> Result<Regex, regex::Error> {
    let literals: Vec<String> = subject.split('*').map(regex::escape).collect();
    Regex::new(&format!("^{}$", literals.join(".*")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::InlineSubject;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn catalog(subjects: &[(&str, &str, &str)]) -> Result<InlineCatalog, BuildError> {
        let subjects: BTreeMap<String, InlineSubject> = subjects
            .iter()
            .map(|(name, version, schema)| {
                (
                    (*name).to_owned(),
                    InlineSubject {
                        schema: (*schema).to_owned(),
                        version: (*version).to_owned(),
                    },
                )
            })
            .collect();
        InlineCatalog::new(&InlineOptions {
            subjects: Some(subjects),
        })
    }

    #[test]
    fn ids_are_the_crc32c_of_the_schema_text() {
        // The CRC-32C check value (RFC 3720 appendix B.4).
        assert_eq!(schema_id("123456789"), 0xe306_9283);
        let items = "{\"type\": \"object\"}";
        let catalog = catalog(&[("items", "latest", items), ("other", "latest", "{}")]).unwrap();
        let id = catalog.resolve_subject("items", "latest").unwrap();
        assert_eq!(id, schema_id(items));
        assert_eq!(catalog.schema(id).ok().as_deref(), Some(items));
        assert_ne!(catalog.resolve_subject("other", "latest"), Ok(id));
        assert!(catalog.resolve_subject("missing", "latest").is_err());
        assert!(catalog.schema(id.wrapping_add(1)).is_err());
    }

    #[test]
    fn subjects_sharing_a_schema_share_its_id() {
        let catalog = catalog(&[("a", "latest", "{}"), ("b", "latest", "{}")]).unwrap();
        assert_eq!(
            catalog.resolve_subject("a", "latest"),
            catalog.resolve_subject("b", "latest")
        );
    }

    #[test]
    fn versions_must_match_unless_latest_is_asked() {
        let catalog = catalog(&[("items", "3", "{}")]).unwrap();
        assert!(catalog.resolve_subject("items", "latest").is_ok());
        assert!(catalog.resolve_subject("items", "3").is_ok());
        assert!(catalog.resolve_subject("items", "2").is_err());
    }

    #[test]
    fn wildcards_answer_when_no_exact_subject_does() {
        let catalog = catalog(&[
            ("orders.*-value", "latest", "{\"a\": 1}"),
            ("orders.eu-value", "latest", "{\"b\": 2}"),
            ("*", "latest", "{\"c\": 3}"),
            ("orders.*", "latest", "{\"d\": 4}"),
        ])
        .unwrap();
        let schema_of = |subject: &str| {
            catalog
                .resolve_subject(subject, "latest")
                .and_then(|id| catalog.schema(id))
                .ok()
        };
        assert_eq!(schema_of("orders.eu-value").as_deref(), Some("{\"b\": 2}"));
        assert_eq!(schema_of("orders.us-value").as_deref(), Some("{\"a\": 1}"));
        assert_eq!(schema_of("orders.us-key").as_deref(), Some("{\"d\": 4}"));
        assert_eq!(schema_of("anything").as_deref(), Some("{\"c\": 3}"));
        // Dots are literal, not regex wildcards.
        let strict = self::catalog(&[("a.*", "latest", "{}")]).unwrap();
        assert!(strict.resolve_subject("ab", "latest").is_err());
        assert!(strict.resolve_subject("a.b", "latest").is_ok());
    }

    #[test]
    fn empty_options_give_an_empty_catalog() {
        let catalog = InlineCatalog::new(&InlineOptions::default()).unwrap();
        assert!(catalog.is_empty());
        assert!(catalog.resolve_subject("x", "latest").is_err());
    }

    proptest! {
        #[test]
        fn every_subject_resolves_to_its_own_schema(
            schemas in proptest::collection::btree_map("[a-z]{1,8}", ".{0,64}", 1..8)
        ) {
            let entries: Vec<(String, String)> = schemas.into_iter().collect();
            let subjects: Vec<(&str, &str, &str)> = entries
                .iter()
                .map(|(name, schema)| (name.as_str(), "latest", schema.as_str()))
                .collect();
            let catalog = catalog(&subjects).unwrap();
            for (name, schema) in &entries {
                let id = catalog.resolve_subject(name, "latest").unwrap();
                prop_assert_eq!(id, schema_id(schema));
                let found = catalog.schema(id).ok();
                prop_assert_eq!(found.as_deref(), Some(schema.as_str()));
            }
        }
    }
}
