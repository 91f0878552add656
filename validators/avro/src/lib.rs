//! The `avro` model: messages are Avro binary datums of a schema from a catalog. With
//! `view: json`, clients read and write JSON instead: a message the gateway stores
//! (`encode`, e.g. a Kafka record produced for an HTTP POST) is converted from JSON to Avro
//! binary, and a stored message it reads (`decode`, e.g. a record fetched for a GET or an SSE
//! stream) from Avro binary to JSON. The JSON is Avro's JSON encoding (see [`json`]).
//!
//! Stored messages carry the catalog's wire prefix, written on `encode` and read on `decode`
//! (a schema registry's magic byte and 4-byte schema id; nothing for `inline`). On `decode`
//! the prefix names the writer's schema, which is fetched from the catalog if it is not
//! cached; the message is then read as written, whatever schema the reference names. On
//! `encode` the reference's schema is used: a `subject` or `strategy: topic` reference asks
//! the catalog for the subject's current id each time, which the catalog answers from its
//! cache (a schema registry refreshes it after `max-age`).
//!
//! Without a view, clients see bare Avro binary: `encode` checks it against the
//! reference's schema and adds the prefix, `decode` checks and strips it.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   registry0:
//!     type: schema-registry
//!     options:
//!       url: http://localhost:8081
//! bindings:
//!   kafka_cache_client:
//!     type: kafka
//!     kind: cache_client
//!     options:
//!       topics:
//!         - name: items
//!           value:
//!             model: avro
//!             view: json
//!             catalog:
//!               registry0:
//!                 - strategy: topic
//!                   version: latest
//!     exit: kafka_cache_server
//! ```
//!
//! Reference keys:
//! - `model`: `avro`.
//! - `catalog` (required): one catalog, with a list of one entry naming the schema:
//!   `{subject, version}`, `{id}` or `{strategy: topic, version}` (the topic's
//!   `<topic>-value` or `<topic>-key` subject; only where messages have a topic), or
//!   `{strategy: encoded}`: no schema is named, each message starts with the catalog's prefix
//!   and is checked against the schema its id names, then stored or read as it came (without
//!   a view only, since JSON carries no id; not with a catalog that writes no prefix, such as
//!   `inline`). A message that names no schema, or one the catalog does not hold, is refused.
//! - `view`: `json`.
//! - `validate`: `strict` (default) or `lenient`, or `{decode, encode}`. Conversion cannot
//!   be lenient: a message that does not fit the schema cannot be converted and is always
//!   refused. `lenient` applies to checking a message without converting it (a request body
//!   with a `json` view that is well-formed JSON but does not fit the schema passes; a
//!   message stored as it came with `strategy: encoded`). In the object form `decode` applies
//!   to messages arriving at the gateway or read back, `encode` to messages it stores; a
//!   direction not given is strict.
//!
//! Every refusal raises `MODEL_AVRO_VALIDATION_FAILED` on the binding using the model.
//! Decoding is bounded: no Avro length prefix may make the decoder allocate more than
//! [`MAX_ALLOCATION`] bytes, and values nest at most [`json::MAX_DEPTH`] deep.

pub mod config;
pub mod json;

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Name, ResolvedSchema as AvroNames};
use apache_avro::writer::datum::GenericDatumWriter;
use zilla_cataloged::{Resolution, ResolvedSchema, SchemaCache};
use zilla_engine::components::{
    Catalog, Fetching, ModelContext, ModelFactory, ValidateMode, Validator,
};
use zilla_engine::events::Events;
use zilla_engine::{BuildError, Registry};

use config::{AvroModelConfig, View};

/// The event a refused message raises.
pub const VALIDATION_FAILED: &str = "MODEL_AVRO_VALIDATION_FAILED";
/// The most one Avro length prefix may make the decoder allocate (process-wide).
pub const MAX_ALLOCATION: usize = 16 * 1024 * 1024;
/// The most writer schemas one model keeps parsed.
pub const MAX_PARSED_SCHEMAS: usize = 256;

/// Registers the `avro` model.
pub fn register(registry: &mut Registry) {
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
    registry.model(AvroModelFactory);
}

/// Builds `avro` validators.
#[derive(Debug)]
pub struct AvroModelFactory;

impl ModelFactory for AvroModelFactory {
    fn type_name(&self) -> &'static str {
        "avro"
    }

    fn schema(&self) -> serde_json::Value {
        serde_json::Value::from(schemars::schema_for!(AvroModelConfig))
    }

    fn build(
        &self,
        reference: &serde_json::Value,
        context: &ModelContext<'_>,
    ) -> Result<Arc<dyn Validator>, BuildError> {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
        let config: AvroModelConfig =
            zilla_cataloged::model_config(reference, "avro", |config: &AvroModelConfig| {
                &config.model
            })?;
        let json_view = config.view == Some(View::Json);
        let (catalog, configured_id, parsed) =
            match zilla_cataloged::resolve_or_encoded(&config.catalog, context)? {
                Resolution::Schema(ResolvedSchema {
                    catalog_name,
                    catalog,
                    id,
                    text,
                }) => {
                    let parsed = parse(&text).map_err(|message| {
                        BuildError::at(format!("catalog.{catalog_name}[0]"), message)
                    })?;
                    let cache = SchemaCache::new(MAX_PARSED_SCHEMAS, id, parsed);
                    (catalog, Some(id), cache)
                }
                Resolution::Encoded { catalog_name, .. } if json_view => {
                    return Err(BuildError::at(
                        format!("catalog.{catalog_name}[0]"),
                        "`strategy: encoded` reads the schema id from each Avro message, and a \
                         message in the JSON `view` carries none; name a `subject` or an `id`",
                    ));
                }
                Resolution::Encoded { catalog, .. } => {
                    (catalog, None, SchemaCache::empty(MAX_PARSED_SCHEMAS))
                }
            };
        // Which subject to ask the catalog about on each encode, if the reference names one.
        let subject = config
            .catalog
            .values()
            .next()
            .and_then(|references| references.first())
            .and_then(|reference| zilla_cataloged::write_subject(reference, context.topic_subject));
        let lenient = |mode: fn(zilla_engine::components::ValidateConfig) -> ValidateMode| {
            config
                .validate
                .is_some_and(|validate| mode(validate) == ValidateMode::Lenient)
        };
        Ok(Arc::new(AvroValidator {
            catalog,
            subject,
            configured_id,
            json_view,
            lenient_decode: lenient(|validate| validate.decode()),
            lenient_encode: lenient(|validate| validate.encode()),
            parsed,
            events: context.events.clone(),
        }))
    }
}

/// A parsed schema with its named types, which JSON conversion looks references up in.
pub struct Parsed {
    root: Schema,
    names: HashMap<Name, Schema>,
}

impl Parsed {
    fn get_root_schema(&self) -> &Schema {
        &self.root
    }

    fn get_names(&self) -> &HashMap<Name, Schema> {
        &self.names
    }
}

fn parse(text: &str) -> Result<Parsed, String> {
    let invalid = |error: apache_avro::Error| format!("not an Avro schema: {error}");
    let root = Schema::parse_str(text).map_err(invalid)?;
    let names = AvroNames::new(&root)
        .map_err(invalid)?
        .get_names()
        .iter()
        .map(|(name, schema)| (name.clone(), (*schema).clone()))
        .collect();
    Ok(Parsed { root, names })
}

/// A built `avro` model.
pub struct AvroValidator {
    catalog: Arc<dyn Catalog>,
    subject: Option<(String, String)>,
    /// `None` for `strategy: encoded`: each message names its schema.
    configured_id: Option<u32>,
    json_view: bool,
    /// Whether a message that does not fit its schema is let through when checked without
    /// conversion: arriving or read back (`validate` or its `decode`) ...
    lenient_decode: bool,
    /// ... or stored as it came (`validate` or its `encode`, for `strategy: encoded`).
    lenient_encode: bool,
    parsed: SchemaCache<Parsed>,
    events: Events,
}

impl std::fmt::Debug for AvroValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroValidator")
            .field("configured_id", &self.configured_id)
            .field("subject", &self.subject)
            .field("json_view", &self.json_view)
            .finish_non_exhaustive()
    }
}

impl AvroValidator {
    /// Checks `data` against the schema it names (or the configured one) without converting
    /// it; a message that does not fit is let through (and reported) when `lenient`.
    fn check(&self, data: &[u8], lenient: bool) -> Result<(), String> {
        let (id, data) = self
            .message_schema(data, self.configured_id.is_none())
            .map_err(|error| self.refuse(error))?;
        let schema = self.schema(id).map_err(|error| self.refuse(error))?;
        match self.to_binary(&schema, data) {
            Ok(_) => Ok(()),
            Err(Refusal::Mismatch(reason)) if lenient => {
                self.refuse(reason.clone());
                tracing::debug!(%reason, "message let through (lenient)");
                Ok(())
            }
            Err(Refusal::Malformed(reason) | Refusal::Mismatch(reason)) => Err(self.refuse(reason)),
        }
    }

    /// The parsed schema with `id`, from the catalog if not yet parsed.
    fn schema(&self, id: u32) -> Result<Arc<Parsed>, String> {
        self.parsed.get(self.catalog.as_ref(), id, parse)
    }

    /// The id messages are written with now (`None` for `strategy: encoded`).
    fn write_id(&self) -> Option<u32> {
        let configured_id = self.configured_id?;
        Some(zilla_cataloged::write_id(
            self.catalog.as_ref(),
            self.subject.as_ref(),
            configured_id,
        ))
    }

    /// The schema id a message is read with, and its Avro binary: the id its catalog prefix
    /// names, else the configured one. `prefixed` says whether a prefix is looked for at all
    /// (a client's Avro binary may start with the prefix's magic byte).
    fn message_schema<'a>(
        &self,
        data: &'a [u8],
        prefixed: bool,
    ) -> Result<(u32, &'a [u8]), String> {
        let named = if prefixed {
            self.catalog.unprefix(data)?
        } else {
            None
        };
        match (named, self.configured_id) {
            (Some(named), _) => Ok(named),
            (None, Some(id)) => Ok((id, data)),
            (None, None) => Err(
                "the message names no schema: `strategy: encoded` expects it to start with the \
                 catalog's prefix"
                    .to_owned(),
            ),
        }
    }

    fn refuse(&self, reason: String) -> String {
        self.events.emit(VALIDATION_FAILED, 0, reason.clone());
        reason
    }

    /// The Avro binary for a client's message (JSON with the view, else Avro binary).
    fn to_binary(&self, schema: &Parsed, data: &[u8]) -> Result<Vec<u8>, Refusal> {
        if self.json_view {
            let json: serde_json::Value = serde_json::from_slice(data)
                .map_err(|error| Refusal::Malformed(format!("malformed JSON: {error}")))?;
            let walker = json::Walker::new(schema.get_names());
            let value = walker
                .json_to_value(&json, schema.get_root_schema(), 0)
                .map_err(|error| Refusal::Mismatch(format!("does not fit the schema: {error}")))?;
            GenericDatumWriter::builder(schema.get_root_schema())
                .build()
                .and_then(|writer| writer.write_value_to_vec(value))
                .map_err(|error| Refusal::Mismatch(format!("does not fit the schema: {error}")))
        } else {
            read_datum(schema, data).map_err(Refusal::Mismatch)?;
            Ok(data.to_vec())
        }
    }
}

/// Why a message was refused.
enum Refusal {
    /// Not even the view's syntax (malformed JSON).
    Malformed(String),
    /// Well-formed, but not a value of the schema.
    Mismatch(String),
}

/// Reads one whole datum: trailing bytes are an error.
fn read_datum(schema: &Parsed, data: &[u8]) -> Result<apache_avro::types::Value, String> {
    let mut reader = data;
    let value = GenericDatumReader::builder(schema.get_root_schema())
        .build()
        .and_then(|datum| datum.read_value(&mut reader))
        .map_err(|error| format!("not an Avro datum of the schema: {error}"))?;
    if !reader.is_empty() {
        return Err(format!(
            "{} bytes left over after the Avro datum",
            reader.len()
        ));
    }
    Ok(value)
}

impl Validator for AvroValidator {
    fn fetch(&self, data: &[u8]) -> Option<Fetching> {
        // Only a message's prefix can name a schema not cached yet: the configured one was
        // fetched at load.
        let (id, _) = self.catalog.unprefix(data).ok().flatten()?;
        self.parsed.fetch(self.catalog.as_ref(), id)
    }

    fn validate(&self, data: &[u8]) -> Result<(), String> {
        self.check(data, self.lenient_decode)
    }

    fn encode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        // An encoded message already names its schema: checked, and stored as it came.
        let Some(id) = self.write_id() else {
            return self.check(data, self.lenient_encode).map(|()| None);
        };
        // Converted (or framed): a message that does not fit cannot be, lenient or not.
        let schema = self.schema(id).map_err(|error| self.refuse(error))?;
        let binary = self.to_binary(&schema, data).map_err(
            |(Refusal::Malformed(reason) | Refusal::Mismatch(reason))| self.refuse(reason),
        )?;
        let mut framed = self.catalog.prefix(id);
        framed.extend_from_slice(&binary);
        Ok(Some(framed))
    }

    fn decode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let (id, binary) = self
            .message_schema(data, true)
            .map_err(|error| self.refuse(error))?;
        let schema = self.schema(id).map_err(|error| self.refuse(error))?;
        let value = read_datum(&schema, binary).map_err(|error| self.refuse(error))?;
        if !self.json_view {
            return Ok(Some(binary.to_vec()));
        }
        let walker = json::Walker::new(schema.get_names());
        let json = walker
            .value_to_json(&value, schema.get_root_schema(), 0)
            .map_err(|error| self.refuse(error))?;
        serde_json::to_vec(&json)
            .map(Some)
            .map_err(|error| self.refuse(error.to_string()))
    }
}

#[cfg(test)]
mod tests;
