//! The `protobuf` model: messages are Protobuf binary of one message type (`record`) of a
//! `.proto` schema from a catalog, compiled at run time with `protox` and read with
//! `prost-reflect`, so no generated code is needed. With `view: json`, clients read and write
//! JSON instead: a message the gateway stores (`encode`, e.g. a Kafka record produced for an
//! HTTP POST) is converted from JSON to Protobuf binary, and a stored message it reads
//! (`decode`, e.g. a record fetched for a GET or an SSE stream) from Protobuf binary to JSON.
//!
//! The JSON is Protobuf's canonical JSON mapping, written as Zilla writes it: proto field
//! names (`order_id`, not `orderId`), fields at their default value included (except unset
//! message fields and oneof members), 64-bit integers as strings, enums by name, wrapper
//! types (`google.protobuf.StringValue`, ...) as their bare value, `Timestamp` and `Duration`
//! as text. JSON read from clients may use either field name; unknown fields are refused.
//!
//! Stored messages are framed as Confluent's Protobuf serializers frame them: the catalog's
//! wire prefix (a schema registry's magic byte and 4-byte schema id; nothing for `inline`
//! and `filesystem`), then the message indexes naming the message type in the schema (see
//! [`indexes`]), then the message. As in Zilla, the indexes are written whatever the catalog.
//! On `decode` the prefix names the writer's schema, fetched from the catalog if not cached,
//! and the indexes name the message type in it; the message is read as written. On `encode`
//! the reference's schema and `record` are used: a `subject` or `strategy: topic` reference
//! asks the catalog for the subject's current id each time, which the catalog answers from
//! its cache.
//!
//! Without a view, clients see bare Protobuf binary: `encode` checks it is a `record` and
//! adds the framing, `decode` checks and strips it.
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
//!         - name: requests
//!           value:
//!             model: protobuf
//!             view: json
//!             catalog:
//!               registry0:
//!                 - strategy: topic
//!                   version: latest
//!                   record: Request
//!     exit: kafka_cache_server
//! ```
//!
//! Reference keys:
//! - `model`: `protobuf`.
//! - `catalog` (required): one catalog, with a list of one entry naming the schema,
//!   `{subject, version}`, `{id}` or `{strategy: topic, version}` (the topic's `<topic>-value`
//!   or `<topic>-key` subject; only where messages have a topic), and its message type,
//!   `record` (required): the name in the schema's package (`Request`, `Outer.Inner`) or the
//!   full name (`example.Request`). A schema may import the well-known
//!   `google/protobuf/*.proto` files; imports of other files (registry schema references)
//!   fail the load.
//! - `view`: `json`.
//! - `validate`: `strict` (default) or `lenient`, or `{decode, encode}`. A message that is
//!   not Protobuf of the message type (or, with the view, not JSON of it) is always refused.
//!   `lenient` lets through, with an event, a well-formed message that carries unknown fields
//!   or lacks a proto2 `required` field, where the model passes the message on unconverted;
//!   conversions are always strict, since such a message cannot be converted whole.
//!
//! Every refusal raises `MODEL_PROTOBUF_VALIDATION_FAILED` on the binding using the model.
//! Decoding is bounded: messages nest at most 100 deep (prost's limit) in binary and 128 in
//! JSON (serde_json's), and no length prefix makes the decoder allocate more than the
//! message's own size.
//!
//! The grpc binding compiles its services with [`schema::compile`].

pub mod config;
pub mod indexes;
pub mod schema;
pub mod wire;

use std::sync::Arc;

use prost::Message as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FileDescriptor, MessageDescriptor, ReflectMessage as _,
    SerializeOptions, Value,
};
use zilla_cataloged::{ResolvedSchema, SchemaCache};
use zilla_engine::components::{
    Catalog, Fetching, ModelContext, ModelFactory, ValidateConfig, ValidateMode, Validator,
};
use zilla_engine::events::Events;
use zilla_engine::{BuildError, Registry};

use config::{ProtobufModelConfig, View};

/// The event a refused message raises.
pub const VALIDATION_FAILED: &str = "MODEL_PROTOBUF_VALIDATION_FAILED";
/// The most schemas one model keeps compiled.
pub const MAX_COMPILED_SCHEMAS: usize = 256;

/// Registers the `protobuf` model.
pub fn register(registry: &mut Registry) {
    registry.model(ProtobufModelFactory);
}

/// Builds `protobuf` validators.
#[derive(Debug)]
pub struct ProtobufModelFactory;

impl ModelFactory for ProtobufModelFactory {
    fn type_name(&self) -> &'static str {
        "protobuf"
    }

    fn schema(&self) -> serde_json::Value {
        serde_json::Value::from(schemars::schema_for!(ProtobufModelConfig))
    }

    fn build(
        &self,
        reference: &serde_json::Value,
        context: &ModelContext<'_>,
    ) -> Result<Arc<dyn Validator>, BuildError> {
        let config: ProtobufModelConfig = zilla_cataloged::model_config(
            reference,
            "protobuf",
            |config: &ProtobufModelConfig| &config.model,
        )?;
        let references = config.schema_references();
        let resolved = zilla_cataloged::resolve(&references, context)?;
        let path = format!("catalog.{}[0]", resolved.catalog_name);
        let record = config.record().unwrap_or_default().to_owned();
        let compiled = Compiled::new(resolved.id, &resolved.text, &record)
            .map_err(|message| BuildError::at(&path, message))?;
        if let Err(message) = &compiled.record {
            return Err(BuildError::at(format!("{path}.record"), message.clone()));
        }
        let subject = references
            .values()
            .next()
            .and_then(|references| references.first())
            .and_then(|reference| zilla_cataloged::write_subject(reference, context.topic_subject));
        let lenient = |direction: fn(ValidateConfig) -> ValidateMode| {
            config
                .validate
                .is_some_and(|validate| direction(validate) == ValidateMode::Lenient)
        };
        let ResolvedSchema { catalog, id, .. } = resolved;
        Ok(Arc::new(ProtobufValidator {
            catalog,
            subject,
            configured_id: id,
            record,
            json_view: config.view == Some(View::Json),
            decode_lenient: lenient(ValidateConfig::decode),
            encode_lenient: lenient(ValidateConfig::encode),
            compiled: SchemaCache::new(MAX_COMPILED_SCHEMAS, id, compiled),
            events: context.events.clone(),
        }))
    }
}

/// One schema, compiled, with the model's `record` looked up in it.
struct Compiled {
    file: FileDescriptor,
    record: Result<Record, String>,
}

/// The message type messages are written as, and its encoded message indexes.
struct Record {
    message: MessageDescriptor,
    indexes: Vec<u8>,
}

impl Compiled {
    fn new(id: u32, text: &str, record: &str) -> Result<Self, String> {
        let file = schema::compile_file(&format!("schema-{id}.proto"), text)
            .map_err(|error| format!("not a Protobuf schema: {error}"))?;
        let record = schema::find_record(&file, record).map(|message| {
            let mut indexes = Vec::new();
            indexes::encode(&schema::message_indexes(&message), &mut indexes);
            Record { message, indexes }
        });
        Ok(Self { file, record })
    }
}

/// A built `protobuf` model.
pub struct ProtobufValidator {
    catalog: Arc<dyn Catalog>,
    subject: Option<(String, String)>,
    configured_id: u32,
    record: String,
    json_view: bool,
    decode_lenient: bool,
    encode_lenient: bool,
    compiled: SchemaCache<Compiled>,
    events: Events,
}

impl std::fmt::Debug for ProtobufValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufValidator")
            .field("configured_id", &self.configured_id)
            .field("subject", &self.subject)
            .field("record", &self.record)
            .field("json_view", &self.json_view)
            .finish_non_exhaustive()
    }
}

/// Why a message was refused.
enum Refusal {
    /// Not a message of the type at all (or, with the view, not JSON of it).
    Malformed(String),
    /// A well-formed message with unknown fields or without a required field.
    Incomplete(String),
}

impl ProtobufValidator {
    /// The compiled schema with `id`, from the catalog if not yet compiled.
    fn compiled(&self, id: u32) -> Result<Arc<Compiled>, String> {
        self.compiled.get(self.catalog.as_ref(), id, |text| {
            Compiled::new(id, text, &self.record)
        })
    }

    /// The record of `compiled`, schema `id`.
    fn record_of<'a>(&self, compiled: &'a Compiled, id: u32) -> Result<&'a Record, String> {
        compiled
            .record
            .as_ref()
            .map_err(|error| self.refuse(format!("schema {id}: {error}")))
    }

    /// The id messages are written with now.
    fn write_id(&self) -> u32 {
        zilla_cataloged::write_id(
            self.catalog.as_ref(),
            self.subject.as_ref(),
            self.configured_id,
        )
    }

    fn refuse(&self, reason: String) -> String {
        self.events.emit(VALIDATION_FAILED, 0, reason.clone());
        reason
    }

    /// `Ok` for an incomplete message let through leniently, raising the event.
    fn judge(&self, refusal: Refusal, lenient: bool) -> Result<(), String> {
        match refusal {
            Refusal::Incomplete(reason) if lenient => {
                self.refuse(reason.clone());
                tracing::debug!(%reason, "message let through (lenient)");
                Ok(())
            }
            Refusal::Malformed(reason) | Refusal::Incomplete(reason) => Err(self.refuse(reason)),
        }
    }

    /// Reads a client's message (JSON with the view, else Protobuf binary) as `record`.
    fn read_client(
        &self,
        record: &MessageDescriptor,
        data: &[u8],
    ) -> Result<DynamicMessage, Refusal> {
        let message = if self.json_view {
            from_json(record, data, true).map_err(|error| {
                // Classify: JSON that only fails for its unknown fields is incomplete.
                if from_json(record, data, false).is_ok() {
                    Refusal::Incomplete(error)
                } else {
                    Refusal::Malformed(error)
                }
            })?
        } else {
            from_binary(record, data)?
        };
        match incomplete(&message) {
            Some(reason) => Err(Refusal::Incomplete(reason)),
            None => Ok(message),
        }
    }
}

/// Reads JSON as `record`, refusing unknown fields when `strict`.
fn from_json(
    record: &MessageDescriptor,
    data: &[u8],
    strict: bool,
) -> Result<DynamicMessage, String> {
    let options = DeserializeOptions::new().deny_unknown_fields(strict);
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    let message =
        DynamicMessage::deserialize_with_options(record.clone(), &mut deserializer, &options)
            .and_then(|message| deserializer.end().map(|()| message))
            .map_err(|error| format!("not JSON of {}: {error}", record.full_name()))?;
    Ok(message)
}

/// Reads Protobuf binary as `record`.
fn from_binary(record: &MessageDescriptor, data: &[u8]) -> Result<DynamicMessage, Refusal> {
    DynamicMessage::decode(record.clone(), data)
        .map_err(|error| Refusal::Malformed(format!("not a {}: {error}", record.full_name())))
}

/// Why `message` is not complete: an unknown field or a missing required field, at any depth.
fn incomplete(message: &DynamicMessage) -> Option<String> {
    let descriptor = message.descriptor();
    if let Some(unknown) = message.unknown_fields().next() {
        return Some(format!(
            "{} has an unknown field {}",
            descriptor.full_name(),
            unknown.number()
        ));
    }
    if let Some(missing) = descriptor
        .fields()
        .find(|field| field.is_required() && !message.has_field(field))
    {
        return Some(format!(
            "{} lacks its required field `{}`",
            descriptor.full_name(),
            missing.name()
        ));
    }
    message.fields().find_map(|(_, value)| match value {
        Value::Message(nested) => incomplete(nested),
        Value::List(items) => items
            .iter()
            .find_map(|item| item.as_message().and_then(incomplete)),
        Value::Map(entries) => entries
            .values()
            .find_map(|entry| entry.as_message().and_then(incomplete)),
        _ => None,
    })
}

/// Writes `message` as Zilla's JSON view does.
fn to_json(message: &DynamicMessage) -> Result<Vec<u8>, String> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut json = Vec::new();
    message
        .serialize_with_options(&mut serde_json::Serializer::new(&mut json), &options)
        .map_err(|error| format!("not convertible to JSON: {error}"))?;
    Ok(json)
}

impl Validator for ProtobufValidator {
    fn fetch(&self, data: &[u8]) -> Option<Fetching> {
        // Only a message's prefix can name a schema not cached yet: the configured one was
        // fetched at load.
        let (id, _) = self.catalog.unprefix(data).ok().flatten()?;
        self.compiled.fetch(self.catalog.as_ref(), id)
    }

    fn validate(&self, data: &[u8]) -> Result<(), String> {
        let compiled = self
            .compiled(self.configured_id)
            .map_err(|error| self.refuse(error))?;
        let record = self.record_of(&compiled, self.configured_id)?;
        match self.read_client(&record.message, data) {
            Ok(_) => Ok(()),
            Err(refusal) => self.judge(refusal, self.decode_lenient),
        }
    }

    fn encode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let id = self.write_id();
        let compiled = self.compiled(id).map_err(|error| self.refuse(error))?;
        let record = self.record_of(&compiled, id)?;
        let mut framed = self.catalog.prefix(id);
        framed.extend_from_slice(&record.indexes);
        match self.read_client(&record.message, data) {
            Ok(message) if self.json_view => message
                .encode(&mut framed)
                .map_err(|error| self.refuse(format!("not encodable: {error}")))?,
            Ok(_) => framed.extend_from_slice(data),
            Err(refusal) => {
                // Conversions are strict; bare binary may pass leniently, unchanged.
                self.judge(refusal, self.encode_lenient && !self.json_view)?;
                framed.extend_from_slice(data);
            }
        }
        Ok(Some(framed))
    }

    fn decode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let (id, rest) = match self
            .catalog
            .unprefix(data)
            .map_err(|error| self.refuse(error))?
        {
            Some((id, rest)) => (id, rest),
            None => (self.configured_id, data),
        };
        let compiled = self.compiled(id).map_err(|error| self.refuse(error))?;
        let (indexes, payload) = indexes::decode(rest).map_err(|error| self.refuse(error))?;
        let writer = schema::message_at(&compiled.file, &indexes).ok_or_else(|| {
            self.refuse(format!(
                "message indexes {indexes:?} name no message of schema {id}"
            ))
        })?;
        let message = match from_binary(&writer, payload) {
            Ok(message) => match incomplete(&message) {
                Some(reason) => Err(Refusal::Incomplete(reason)),
                None => Ok(message),
            },
            Err(refusal) => Err(refusal),
        };
        match message {
            Ok(message) if self.json_view => to_json(&message)
                .map(Some)
                .map_err(|error| self.refuse(error)),
            Ok(_) => Ok(Some(payload.to_vec())),
            Err(refusal) => {
                self.judge(refusal, self.decode_lenient && !self.json_view)?;
                Ok(Some(payload.to_vec()))
            }
        }
    }
}

#[cfg(test)]
mod tests;
