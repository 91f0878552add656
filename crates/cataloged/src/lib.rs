//! Cataloged schema references, shared by the models that read schemas from catalogs
//! (`json`, `avro`, ...): `catalog: {<catalog>: [{subject, version} | {id} | {strategy}]}`.
//!
//! A model reading its schema from a catalog, as a Kafka topic's `value` names it:
//!
//! ```yaml
//! value:
//!   model: avro
//!   view: json
//!   catalog:
//!     registry:
//!       - subject: items-value
//!         version: latest
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use zilla_engine::binding::BuildError;
use zilla_engine::components::{Catalog, Fetching, ModelContext};

/// A model reference read as `T`, whose `model` (read by `model_of`) must name `model`.
pub fn model_config<T: serde::de::DeserializeOwned>(
    reference: &serde_json::Value,
    model: &str,
    model_of: impl Fn(&T) -> &str,
) -> Result<T, BuildError> {
    let config: T = serde_json::from_value(reference.clone())
        .map_err(|error| BuildError::at("", error.to_string()))?;
    let named = model_of(&config);
    if named != model {
        return Err(BuildError::at(
            "model",
            format!("`{named}` is not the {model} model"),
        ));
    }
    Ok(config)
}

/// `catalog:` of a model reference: one catalog, with the list naming the schema (the first
/// entry is used).
pub type CatalogReferences = BTreeMap<String, Vec<SchemaReference>>;

/// One way to name a schema in a catalog: exactly one of `id`, `subject` or `strategy`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["id"], "not": {"required": ["version"]}},
    {"required": ["subject"]},
    {"required": ["strategy"]},
]))]
pub struct SchemaReference {
    /// The schema id in the catalog (Zilla's signed or unsigned 32-bit spelling).
    pub id: Option<i64>,
    /// The subject whose schema to use.
    pub subject: Option<String>,
    /// Derive the subject from the message's context (`topic`: a Kafka topic).
    pub strategy: Option<Strategy>,
    /// The subject's version; `latest` by default.
    pub version: Option<String>,
}

/// How a subject is derived from a message's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// `<topic>-value` / `<topic>-key` of a Kafka topic.
    Topic,
    /// From an id encoded in the message.
    Encoded,
    /// As a schema tool names it.
    Tool,
}

/// The schema a reference resolved to, in the catalog that holds it.
#[derive(Clone)]
pub struct ResolvedSchema {
    /// The catalog's name as the reference wrote it.
    pub catalog_name: String,
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The schema id.
    pub id: u32,
    /// The schema text.
    pub text: Arc<str>,
}

impl std::fmt::Debug for ResolvedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedSchema")
            .field("catalog", &self.catalog_name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a model reference names: one schema, or whichever schema each message names.
pub enum Resolution {
    /// One schema, found at load.
    Schema(ResolvedSchema),
    /// `strategy: encoded`: each message starts with the catalog's prefix naming its schema's
    /// id (for a schema registry, magic byte 0 and a 4-byte id), and is checked against that.
    Encoded {
        /// The catalog's name as the reference wrote it.
        catalog_name: String,
        /// The catalog.
        catalog: Arc<dyn Catalog>,
    },
}

impl std::fmt::Debug for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolution::Schema(schema) => schema.fmt(f),
            Resolution::Encoded { catalog_name, .. } => f
                .debug_struct("Encoded")
                .field("catalog", catalog_name)
                .finish(),
        }
    }
}

/// Resolves `catalog:` as [`resolve`] does, and also accepts `strategy: encoded`, for the
/// models that read a schema id from each message.
pub fn resolve_or_encoded(
    references: &CatalogReferences,
    context: &ModelContext<'_>,
) -> Result<Resolution, BuildError> {
    let (name, catalog, reference, _) = first_reference(references, context)?;
    match reference {
        SchemaReference {
            id: None,
            subject: None,
            strategy: Some(Strategy::Encoded),
            version: None,
        } if catalog.prefix(0).is_empty() => Err(BuildError::at(
            format!("catalog.{name}[0]"),
            format!(
                "catalog `{name}` puts no schema id before its messages, so `strategy: encoded` \
                 would find none; name a `subject` or an `id`"
            ),
        )),
        SchemaReference {
            id: None,
            subject: None,
            strategy: Some(Strategy::Encoded),
            version: None,
        } => Ok(Resolution::Encoded {
            catalog_name: name.clone(),
            catalog,
        }),
        _ => resolve(references, context).map(Resolution::Schema),
    }
}

/// The one catalog a model reference names (its name and the catalog), its first schema
/// reference, and that reference's path.
type FirstReference<'r> = (&'r String, Arc<dyn Catalog>, &'r SchemaReference, String);

/// The one catalog `references` names, its first schema reference, and that reference's path.
fn first_reference<'r>(
    references: &'r CatalogReferences,
    context: &ModelContext<'_>,
) -> Result<FirstReference<'r>, BuildError> {
    let mut entries = references.iter();
    let (Some((name, list)), None) = (entries.next(), entries.next()) else {
        return Err(BuildError::at("catalog", "name exactly one catalog"));
    };
    let path = format!("catalog.{name}");
    let catalog = context.catalogs.catalog(name).ok_or_else(|| {
        BuildError::at(
            &path,
            format!("unknown catalog `{name}`; expected the name of a catalog"),
        )
    })?;
    let Some(reference) = list.first() else {
        return Err(BuildError::at(
            &path,
            "name the schema: `{subject: ...}` or `{id: ...}`",
        ));
    };
    // A model checks and converts with one schema; a second would be ignored.
    if list.len() > 1 {
        return Err(BuildError::at(
            format!("{path}[1]"),
            "a second schema is not supported: a model uses the one schema its catalog's entry names",
        ));
    }
    Ok((name, catalog, reference, format!("{path}[0]")))
}

/// Resolves `catalog:` to one schema, at load: an unknown catalog, subject or id, or an
/// unreachable registry, is a load error at the reference's path (relative to the model
/// reference).
pub fn resolve(
    references: &CatalogReferences,
    context: &ModelContext<'_>,
) -> Result<ResolvedSchema, BuildError> {
    let (name, catalog, reference, path) = first_reference(references, context)?;
    let id = schema_id(reference, catalog.as_ref(), context.topic_subject)
        .map_err(|message| BuildError::at(&path, format!("catalog `{name}`: {message}")))?;
    let text = catalog
        .schema(id)
        .map_err(|message| BuildError::at(&path, format!("catalog `{name}`: {message}")))?;
    Ok(ResolvedSchema {
        catalog_name: name.clone(),
        catalog,
        id,
        text,
    })
}

/// The subject and version a model asks its catalog about each time it writes a message, so
/// a newer version of the subject is picked up without a reload: the reference's `subject`,
/// or the message topic's subject for `strategy: topic`. `None` for an `id` reference, whose
/// schema never changes.
pub fn write_subject(
    reference: &SchemaReference,
    topic_subject: Option<&str>,
) -> Option<(String, String)> {
    let subject = match reference {
        SchemaReference {
            subject: Some(subject),
            ..
        } => subject.clone(),
        SchemaReference {
            strategy: Some(Strategy::Topic),
            ..
        } => topic_subject?.to_owned(),
        _ => return None,
    };
    let version = reference
        .version
        .clone()
        .unwrap_or_else(|| "latest".to_owned());
    Some((subject, version))
}

/// The id of the schema `reference` names in `catalog`.
fn schema_id(
    reference: &SchemaReference,
    catalog: &dyn Catalog,
    topic_subject: Option<&str>,
) -> Result<u32, String> {
    match reference {
        SchemaReference {
            id: Some(id),
            subject: None,
            strategy: None,
            version: None,
        } => i32::try_from(*id)
            .map(|signed| signed as u32)
            .or_else(|_| u32::try_from(*id))
            .map_err(|_| format!("id {id} is out of range: ids are 32-bit")),
        SchemaReference {
            id: None,
            subject: Some(subject),
            strategy: None,
            version,
        } => catalog.resolve_subject(subject, version.as_deref().unwrap_or("latest")),
        SchemaReference {
            id: None,
            subject: None,
            strategy: Some(Strategy::Topic),
            version,
        } => match topic_subject {
            Some(subject) => {
                catalog.resolve_subject(subject, version.as_deref().unwrap_or("latest"))
            }
            None => Err(
                "`strategy: topic` takes the subject from the message's Kafka topic, which is \
                 not known here; name a `subject` or an `id`"
                    .to_owned(),
            ),
        },
        SchemaReference {
            id: None,
            subject: None,
            strategy: Some(strategy @ (Strategy::Encoded | Strategy::Tool)),
            ..
        } => Err(format!(
            "`strategy: {}` is not supported by this model; name a `subject` or an `id`",
            match strategy {
                Strategy::Encoded => "encoded",
                _ => "tool",
            }
        )),
        _ => Err(
            "name the schema with exactly one of `subject`, `id` or `strategy` \
                  (`version` goes with `subject` or `strategy`)"
                .to_owned(),
        ),
    }
}

/// Every schema the binding-level `catalog` of the binding being built names (`{<catalog>:
/// [{subject, version} | {id}]}`), in the order written, resolved at load: an unknown catalog,
/// subject or id is a load error at its path.
pub fn binding_catalog_schemas(
    context: &zilla_engine::BuildContext<'_>,
) -> Result<Vec<(SchemaReference, ResolvedSchema)>, BuildError> {
    let Some(raw) = &context.config().catalog else {
        return Ok(Vec::new());
    };
    let references: CatalogReferences = serde_json::from_value(raw.clone())
        .map_err(|error| BuildError::at("catalog", error.to_string()))?;
    let mut resolved = Vec::new();
    for (name, list) in &references {
        for (index, reference) in list.iter().enumerate() {
            let single = std::iter::once((name.clone(), vec![reference.clone()])).collect();
            let schema = context
                .with_model_context(|models| resolve(&single, models))
                .map_err(|mut error| {
                    error.path = format!("catalog.{name}[{index}]");
                    error
                })?;
            resolved.push((reference.clone(), schema));
        }
    }
    Ok(resolved)
}

/// A model's schemas by catalog id, each turned from the catalog's text into the model's own
/// form once. Bounded: past `capacity` entries all but the configured schema are forgotten,
/// and are turned again as messages need them.
pub struct SchemaCache<T> {
    entries: std::sync::Mutex<std::collections::HashMap<u32, Arc<T>>>,
    /// Ids the catalog could not give (or that did not turn), with when and why: a message
    /// naming one is refused without asking again until [`REFUSAL_KEPT`] has passed, so
    /// clients naming ids at will cannot make every message a registry round trip.
    refused: std::sync::Mutex<std::collections::HashMap<u32, (std::time::Instant, String)>>,
    capacity: usize,
    configured_id: Option<u32>,
}

/// How long an id the catalog could not give is refused without asking again.
pub const REFUSAL_KEPT: std::time::Duration = std::time::Duration::from_secs(5);

impl<T> SchemaCache<T> {
    /// A cache holding `configured`, the schema with `configured_id`, which it never forgets.
    pub fn new(capacity: usize, configured_id: u32, configured: T) -> Self {
        SchemaCache {
            entries: std::sync::Mutex::new(std::collections::HashMap::from([(
                configured_id,
                Arc::new(configured),
            )])),
            refused: std::sync::Mutex::default(),
            capacity,
            configured_id: Some(configured_id),
        }
    }

    /// A cache with no configured schema (`strategy: encoded`).
    pub fn empty(capacity: usize) -> Self {
        SchemaCache {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            refused: std::sync::Mutex::default(),
            capacity,
            configured_id: None,
        }
    }

    /// What to await before [`get`](Self::get) answers `id` without waiting: the catalog's
    /// fetch of a schema neither cached here nor recently refused.
    pub fn fetch(&self, catalog: &dyn Catalog, id: u32) -> Option<Fetching> {
        if self
            .entries
            .lock()
            .is_ok_and(|entries| entries.contains_key(&id))
        {
            return None;
        }
        let now = std::time::Instant::now();
        if self.refused.lock().is_ok_and(|refused| {
            refused
                .get(&id)
                .is_some_and(|(at, _)| now.duration_since(*at) < REFUSAL_KEPT)
        }) {
            return None;
        }
        catalog.fetch(id)
    }

    /// The schema with `id`: cached, or read from `catalog` and turned by `turn` (whose error
    /// is prefixed with the id).
    pub fn get(
        &self,
        catalog: &dyn Catalog,
        id: u32,
        turn: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Arc<T>, String> {
        if let Some(schema) = self
            .entries
            .lock()
            .ok()
            .and_then(|entries| entries.get(&id).cloned())
        {
            return Ok(schema);
        }
        let now = std::time::Instant::now();
        if let Some((_, reason)) = self.refused.lock().ok().and_then(|refused| {
            refused
                .get(&id)
                .filter(|(at, _)| now.duration_since(*at) < REFUSAL_KEPT)
                .cloned()
        }) {
            return Err(reason);
        }
        let turned = catalog
            .schema(id)
            .and_then(|text| turn(&text).map_err(|error| format!("schema {id}: {error}")));
        let schema = match turned {
            Ok(schema) => Arc::new(schema),
            Err(reason) => {
                if let Ok(mut refused) = self.refused.lock() {
                    if refused.len() >= self.capacity {
                        refused.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_KEPT);
                    }
                    if refused.len() < self.capacity {
                        refused.insert(id, (now, reason.clone()));
                    }
                }
                return Err(reason);
            }
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.capacity {
                entries.retain(|known, _| Some(*known) == self.configured_id);
            }
            entries.insert(id, schema.clone());
        }
        Ok(schema)
    }
}

/// The id a model writes messages with now: the subject's current version when the model
/// names one (`configured_id` while the catalog cannot say), else `configured_id`.
pub fn write_id(
    catalog: &dyn Catalog,
    subject: Option<&(String, String)>,
    configured_id: u32,
) -> u32 {
    match subject {
        Some((subject, version)) => catalog
            .resolve_subject(subject, version)
            .unwrap_or(configured_id),
        None => configured_id,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A catalog holding schema 1 only, counting how often it is asked.
    #[derive(Default)]
    struct Counted {
        asked: AtomicUsize,
    }

    impl Catalog for Counted {
        fn resolve_subject(&self, _subject: &str, _version: &str) -> Result<u32, String> {
            Ok(1)
        }
        fn schema(&self, id: u32) -> Result<Arc<str>, String> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            match id {
                1 => Ok("one".into()),
                _ => Err(format!("no schema {id}")),
            }
        }
    }

    #[test]
    fn an_id_the_catalog_cannot_give_is_refused_without_asking_again() {
        let catalog = Counted::default();
        let cache: SchemaCache<String> = SchemaCache::empty(4);
        let turn = |text: &str| Ok(text.to_owned());
        for _ in 0..100 {
            assert_eq!(cache.get(&catalog, 7, turn), Err("no schema 7".to_owned()));
        }
        assert_eq!(catalog.asked.load(Ordering::Relaxed), 1);
        // A schema that does not turn is remembered as refused too.
        for _ in 0..10 {
            assert!(
                cache
                    .get(&catalog, 1, |_| Err::<String, _>("bad".into()))
                    .is_err()
            );
        }
        assert_eq!(catalog.asked.load(Ordering::Relaxed), 2);
        // Known ids are asked for once and kept.
        let other: SchemaCache<String> = SchemaCache::empty(4);
        for _ in 0..10 {
            assert_eq!(
                other.get(&catalog, 1, turn).as_deref(),
                Ok(&"one".to_owned())
            );
        }
        assert_eq!(catalog.asked.load(Ordering::Relaxed), 3);
        // Past its capacity, refusals still recorded are kept and new ones are asked each time.
        let small: SchemaCache<String> = SchemaCache::empty(2);
        for id in [10, 11, 12, 12] {
            assert!(small.get(&catalog, id, turn).is_err());
        }
        assert_eq!(catalog.asked.load(Ordering::Relaxed), 7);
    }

    #[derive(Debug, Deserialize)]
    struct Named {
        model: String,
    }

    #[test]
    fn a_model_config_must_name_its_model() {
        fn model(config: &Named) -> &str {
            &config.model
        }
        let config: Named =
            model_config(&serde_json::json!({"model": "json"}), "json", model).unwrap();
        assert_eq!(config.model, "json");
        let other = model_config(&serde_json::json!({"model": "avro"}), "json", model);
        assert!(
            other
                .unwrap_err()
                .to_string()
                .contains("`avro` is not the json model")
        );
        assert!(model_config(&serde_json::json!({"model": 1}), "json", model).is_err());
    }
}
