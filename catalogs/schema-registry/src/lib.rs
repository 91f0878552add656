//! The `schema-registry` catalog (also registered as `karapace` and
//! `karapace-schema-registry`): schemas fetched from a Confluent-compatible schema registry
//! over its REST API, `GET /subjects/{subject}/versions/{version}` and
//! `GET /schemas/ids/{id}`. Messages it frames carry Confluent's wire prefix: the magic byte
//! `0x00` and the schema id as 4 big-endian bytes.
//!
//! Fetching never holds up messages for long:
//! - Subjects a config names are resolved when the config loads; a registry that cannot be
//!   reached then fails the load with an error naming the catalog and its URL.
//! - A subject's resolution is trusted for `max-age` seconds. After that the next lookup
//!   still answers at once from the cache and starts one refresh in the background; a
//!   registry that is down later leaves the cached answers in service.
//! - Schemas by id never change and stay cached. An id first seen on the wire is fetched
//!   once however many messages ask for it at the same time (single flight), and each asker
//!   waits at most [`WIRE_WAIT`] for it (its message is then refused, not held). The data
//!   paths (http request and response content, sse events, kafka records produced and read)
//!   wait asynchronously ([`Catalog::fetch`]), so a registry that stops answering holds up
//!   only the messages naming a new id, never the other requests on the same thread.
//! - An id the registry could not give (no answer within [`WIRE_WAIT`], an error, a schema
//!   it does not know) raises [`UNRETRIEVABLE_SCHEMA_ID`] once, naming the catalog and the
//!   registry's URL, and messages naming it are refused at once for [`RETRY_AFTER`] before
//!   the registry is asked again. A failed refresh of a subject raises
//!   [`UNRETRIEVABLE_SCHEMA_SUBJECT_VERSION_STALE_SCHEMA`] and keeps the cached answer.
//!   (As `karapace`, the events are named `CATALOG_KARAPACE_SCHEMA_REGISTRY_...`.)
//!
//! Caches are bounded: [`MAX_CACHED_SCHEMAS`] schemas holding at most
//! [`MAX_CACHED_SCHEMA_BYTES`] bytes of text, [`MAX_CACHED_SUBJECTS`] subject resolutions,
//! [`MAX_CACHED_SUBJECTS`] unretrievable ids, at most [`MAX_FLIGHTS`] requests in flight,
//! and no response body above [`MAX_RESPONSE_BYTES`] is read.
//!
//! The HTTP client (`zilla-fetch`) runs on one thread of its own per catalog, so lookups work
//! from any thread, with or without a runtime.
//!
//! All of this is [`RegistryCatalog`], generic over the registry's REST API ([`Dialect`]: the
//! paths asked, what is read from the answers, the wire prefix); this crate's catalog is
//! `RegistryCatalog<Confluent>`, and other registry catalogs reuse it with their own dialect.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   registry0:
//!     type: schema-registry
//!     options:
//!       url: http://localhost:8081
//!       context: default
//!       max-age: 300
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
//! Options:
//! - `url` (required): the registry's base URL, `http://` or `https://`. An `https` registry
//!   is verified against the system's trust store (`SSL_CERT_FILE` or `SSL_CERT_DIR` name
//!   another); `tls` and a catalog `vault` (trust and client keys from a vault) fail the load:
//!   not supported by this build.
//! - `context`: the schema context (default `default`); other contexts qualify subjects as
//!   `:.<context>:<subject>`, Confluent's spelling.
//! - `max-age`: seconds a subject's resolution is trusted (default 300).
//! - `credentials.headers.authorization`: sent as the `authorization` header.

pub mod config;
mod fetch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zilla_engine::components::{Catalog, ComponentContext, ComponentFactory, Fetching};
use zilla_engine::events::Events;
use zilla_engine::{BuildError, Registry};

use config::SchemaRegistryOptions;
pub use fetch::Fetched;
use fetch::Fetcher;

/// The longest a message whose schema id is not cached waits for the registry.
pub const WIRE_WAIT: Duration = Duration::from_secs(2);
/// The longest a config load waits for the registry, per lookup.
pub const LOAD_WAIT: Duration = Duration::from_secs(10);
/// The most schemas a catalog keeps.
pub const MAX_CACHED_SCHEMAS: usize = 4096;
/// The most schema text a catalog keeps, in bytes.
pub const MAX_CACHED_SCHEMA_BYTES: usize = 64 * 1024 * 1024;
/// The most subject resolutions a catalog keeps.
pub const MAX_CACHED_SUBJECTS: usize = 4096;
/// The largest registry response read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// The most requests in flight at once: messages naming ever new ids cannot pile up
/// requests to a registry that does not answer.
pub const MAX_FLIGHTS: usize = 64;
/// How long an id the registry could not give is refused without asking again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Raised when the registry cannot give a schema by id (Zilla's
/// `catalog.schema.registry.unretrievable.schema.id`).
pub const UNRETRIEVABLE_SCHEMA_ID: &str = "CATALOG_SCHEMA_REGISTRY_UNRETRIEVABLE_SCHEMA_ID";
/// Raised when a subject's refresh fails and its cached schema stays in use (Zilla's
/// `catalog.schema.registry.unretrievable.schema.subject.version.stale.schema`).
pub const UNRETRIEVABLE_SCHEMA_SUBJECT_VERSION_STALE_SCHEMA: &str =
    "CATALOG_SCHEMA_REGISTRY_UNRETRIEVABLE_SCHEMA_SUBJECT_VERSION_STALE_SCHEMA";

/// The events of one catalog type, named as Zilla names them.
#[derive(Debug, Clone, Copy)]
pub struct EventNames {
    /// A schema by id could not be had.
    pub unretrievable_id: &'static str,
    /// A subject's refresh failed and its cached schema stays in use.
    pub stale: &'static str,
}

impl EventNames {
    fn of(type_name: &str) -> Self {
        match type_name {
            "karapace" | "karapace-schema-registry" => EventNames {
                unretrievable_id: "CATALOG_KARAPACE_SCHEMA_REGISTRY_UNRETRIEVABLE_SCHEMA_ID",
                stale: "CATALOG_KARAPACE_SCHEMA_REGISTRY_UNRETRIEVABLE_SCHEMA_SUBJECT_VERSION_STALE_SCHEMA",
            },
            _ => EventNames {
                unretrievable_id: UNRETRIEVABLE_SCHEMA_ID,
                stale: UNRETRIEVABLE_SCHEMA_SUBJECT_VERSION_STALE_SCHEMA,
            },
        }
    }
}

/// What a subject or version must escape to be one URL path segment: everything but
/// RFC 3986's unreserved characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` as one URL path segment.
pub fn path_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, PATH_SEGMENT).to_string()
}

/// Confluent's magic byte, first of every framed message.
pub const MAGIC: u8 = 0;

/// Registers `schema-registry` and its aliases.
pub fn register(registry: &mut Registry) {
    for type_name in ["schema-registry", "karapace", "karapace-schema-registry"] {
        registry.catalog(SchemaRegistryCatalogFactory { type_name });
    }
}

/// Builds schema-registry catalogs.
#[derive(Debug)]
pub struct SchemaRegistryCatalogFactory {
    type_name: &'static str,
}

impl ComponentFactory<dyn Catalog> for SchemaRegistryCatalogFactory {
    fn type_name(&self) -> &'static str {
        self.type_name
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(
            SchemaRegistryOptions
        )))
    }

    fn options_required(&self) -> bool {
        true
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
        if context.config.vault.is_some() {
            return Err(BuildError::at(
                "vault",
                "`vault` (trust and keys for TLS to the registry) is not supported by this build; an https registry is verified against the system's trust store",
            ));
        }
        let options: SchemaRegistryOptions = context.options()?;
        let catalog = SchemaRegistryCatalog::new(&context.name.to_string(), &options)?
            .named_as(self.type_name)
            .with_events(context.events.clone());
        Ok(Arc::new(catalog))
    }
}

/// How one registry's REST API names schemas and frames messages: the paths asked, what is
/// read from the answers, and the wire prefix. [`RegistryCatalog`] does the rest (caching,
/// single-flight fetches, bounded waits, events).
pub trait Dialect: Send + Sync + 'static {
    /// The `accept` header sent with every request.
    fn accept(&self) -> &'static str;
    /// The path answering `subject` at `version` (`latest` allowed).
    fn subject_path(&self, subject: &str, version: &str) -> String;
    /// The schema id in an answer for a subject, and the schema text when it carries it.
    fn read_subject(&self, answer: &Fetched) -> Result<(u32, Option<Arc<str>>), String>;
    /// The path answering the schema with `id`.
    fn id_path(&self, id: u32) -> String;
    /// The schema text in an answer for `id`.
    fn read_schema(&self, id: u32, answer: &Fetched) -> Result<Arc<str>, String>;
    /// The bytes put before an encoded message to name its schema.
    fn prefix(&self, id: u32) -> Vec<u8>;
    /// The schema id a message's prefix names, and the rest of the message.
    fn unprefix<'a>(&self, data: &'a [u8]) -> Result<Option<(u32, &'a [u8])>, String>;
}

/// Confluent's REST API (also Karapace's): `/subjects/{subject}/versions/{version}` answers
/// the id and the schema, `/schemas/ids/{id}` the schema; messages start with the magic byte
/// and the id as 4 big-endian bytes.
#[derive(Debug, Clone)]
pub struct Confluent {
    context: Option<String>,
}

impl Dialect for Confluent {
    fn accept(&self) -> &'static str {
        "application/vnd.schemaregistry.v1+json, application/json"
    }

    fn subject_path(&self, subject: &str, version: &str) -> String {
        let qualified = match &self.context {
            Some(context) => format!(":.{context}:{subject}"),
            None => subject.to_owned(),
        };
        format!(
            "/subjects/{}/versions/{}",
            path_segment(&qualified),
            path_segment(version)
        )
    }

    fn read_subject(&self, answer: &Fetched) -> Result<(u32, Option<Arc<str>>), String> {
        let body = answer
            .json
            .as_ref()
            .ok_or_else(|| "the answer is not JSON".to_owned())?;
        let id = body
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| "the answer has no schema `id`".to_owned())?;
        let schema = body
            .get("schema")
            .and_then(serde_json::Value::as_str)
            .map(Arc::from);
        Ok((id, schema))
    }

    fn id_path(&self, id: u32) -> String {
        format!("/schemas/ids/{id}")
    }

    fn read_schema(&self, id: u32, answer: &Fetched) -> Result<Arc<str>, String> {
        answer
            .json
            .as_ref()
            .and_then(|body| body.get("schema"))
            .and_then(serde_json::Value::as_str)
            .map(Arc::from)
            .ok_or_else(|| format!("the answer for id {id} has no `schema`"))
    }

    fn prefix(&self, id: u32) -> Vec<u8> {
        let mut prefix = Vec::with_capacity(5);
        prefix.push(MAGIC);
        prefix.extend_from_slice(&id.to_be_bytes());
        prefix
    }

    fn unprefix<'a>(&self, data: &'a [u8]) -> Result<Option<(u32, &'a [u8])>, String> {
        match data {
            [MAGIC, a, b, c, d, rest @ ..] => {
                Ok(Some((u32::from_be_bytes([*a, *b, *c, *d]), rest)))
            }
            _ => Err("no schema registry prefix (magic byte 0 and a 4-byte schema id)".to_owned()),
        }
    }
}

/// A subject's resolution and when it was fetched.
#[derive(Debug, Clone, Copy)]
struct Resolution {
    id: u32,
    fetched: Instant,
}

#[derive(Debug, Default)]
struct Schemas {
    by_id: HashMap<u32, Arc<str>>,
    bytes: usize,
}

/// What a catalog has learnt from its registry, shared with background refreshes.
#[derive(Debug)]
struct Learnt {
    name: String,
    url: String,
    schemas: Mutex<Schemas>,
    subjects: Mutex<HashMap<(String, String), Resolution>>,
    /// Ids the registry could not give, with when and why.
    unretrievable: Mutex<HashMap<u32, (Instant, String)>>,
    events: Events,
    event_names: EventNames,
}

impl Learnt {
    fn failure(&self, message: impl std::fmt::Display) -> String {
        format!(
            "registry `{}` of catalog `{}`: {message}",
            self.url, self.name
        )
    }

    fn cache_schema(&self, id: u32, text: Arc<str>) {
        let Ok(mut schemas) = self.schemas.lock() else {
            return;
        };
        if schemas.by_id.contains_key(&id) || text.len() > MAX_CACHED_SCHEMA_BYTES {
            return;
        }
        // Over a bound, forget an arbitrary schema: it is fetched again if it is needed.
        while schemas.by_id.len() >= MAX_CACHED_SCHEMAS
            || schemas.bytes + text.len() > MAX_CACHED_SCHEMA_BYTES
        {
            let Some(victim) = schemas.by_id.keys().next().copied() else {
                break;
            };
            if let Some(removed) = schemas.by_id.remove(&victim) {
                schemas.bytes -= removed.len();
            }
        }
        schemas.bytes += text.len();
        schemas.by_id.insert(id, text);
    }

    /// Why `id` could not be had, if that was less than [`RETRY_AFTER`] ago.
    fn unretrievable(&self, id: u32) -> Option<String> {
        self.unretrievable.lock().ok().and_then(|unretrievable| {
            unretrievable
                .get(&id)
                .filter(|(at, _)| at.elapsed() < RETRY_AFTER)
                .map(|(_, reason)| reason.clone())
        })
    }

    /// Records that `id` could not be had (`reason` names the registry), raising the event
    /// the first time in [`RETRY_AFTER`].
    fn record_unretrievable(&self, id: u32, reason: &str) {
        let Ok(mut unretrievable) = self.unretrievable.lock() else {
            return;
        };
        let now = Instant::now();
        if unretrievable
            .get(&id)
            .is_some_and(|(at, _)| now.duration_since(*at) < RETRY_AFTER)
        {
            return;
        }
        if unretrievable.len() >= MAX_CACHED_SUBJECTS {
            unretrievable.retain(|_, (at, _)| now.duration_since(*at) < RETRY_AFTER);
        }
        if unretrievable.len() < MAX_CACHED_SUBJECTS {
            unretrievable.insert(id, (now, reason.to_owned()));
        }
        drop(unretrievable);
        self.events
            .emit_with(self.event_names.unretrievable_id, 0, || {
                format!("Unable to fetch schema id {id}: {reason}")
            });
    }

    /// Takes an answer for schema `id`: its schema cached, or the failure recorded.
    fn learn_schema(&self, dialect: &dyn Dialect, id: u32, answer: &fetch::Answer) {
        let learnt: Result<Arc<str>, String> = answer
            .as_ref()
            .map_err(|message| self.failure(message))
            .and_then(|fetched| {
                dialect
                    .read_schema(id, fetched)
                    .map_err(|message| self.failure(message))
            });
        match learnt {
            Ok(text) => {
                self.cache_schema(id, text);
                if let Ok(mut unretrievable) = self.unretrievable.lock() {
                    unretrievable.remove(&id);
                }
            }
            Err(reason) => self.record_unretrievable(id, &reason),
        }
    }

    fn cached_schema(&self, id: u32) -> Option<Arc<str>> {
        self.schemas
            .lock()
            .ok()
            .and_then(|schemas| schemas.by_id.get(&id).cloned())
    }

    fn cache_resolution(&self, key: (String, String), id: u32) {
        let Ok(mut subjects) = self.subjects.lock() else {
            return;
        };
        if subjects.len() >= MAX_CACHED_SUBJECTS && !subjects.contains_key(&key) {
            let oldest = subjects
                .iter()
                .min_by_key(|(_, resolution)| resolution.fetched)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                subjects.remove(&oldest);
            }
        }
        subjects.insert(
            key,
            Resolution {
                id,
                fetched: Instant::now(),
            },
        );
    }

    /// Reads a subject version answer, caching its schema (when it carries it) and
    /// resolution.
    fn learn_subject(
        &self,
        dialect: &dyn Dialect,
        key: (String, String),
        answer: &Fetched,
    ) -> Result<u32, String> {
        let (id, schema) = dialect
            .read_subject(answer)
            .map_err(|message| self.failure(message))?;
        if let Some(schema) = schema {
            self.cache_schema(id, schema);
        }
        self.cache_resolution(key, id);
        Ok(id)
    }
}

/// A catalog reading schemas from a registry whose REST API `D` speaks.
pub struct RegistryCatalog<D: Dialect> {
    dialect: Arc<D>,
    max_age: Duration,
    fetcher: Fetcher,
    learnt: Arc<Learnt>,
}

/// A built schema-registry catalog.
pub type SchemaRegistryCatalog = RegistryCatalog<Confluent>;

impl<D: Dialect> std::fmt::Debug for RegistryCatalog<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCatalog")
            .field("name", &self.learnt.name)
            .field("url", &self.learnt.url)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistryCatalog {
    /// A catalog named `name` (for errors) reading the registry `options` names.
    pub fn new(name: &str, options: &SchemaRegistryOptions) -> Result<Self, BuildError> {
        if options.tls.is_some() {
            return Err(BuildError::at(
                "options.tls",
                "`tls` (trust and keys from a vault) is not supported by this build; an https registry is verified against the system's trust store",
            ));
        }
        let mut authorization = None;
        for (header, value) in options
            .credentials
            .iter()
            .flat_map(|credentials| credentials.headers.iter().flatten())
        {
            if !header.eq_ignore_ascii_case("authorization") {
                return Err(BuildError::at(
                    format!("options.credentials.headers.{header}"),
                    "only `authorization` is supported",
                ));
            }
            authorization = Some(http::HeaderValue::from_str(value).map_err(|_| {
                BuildError::at(
                    "options.credentials.headers.authorization",
                    "not a valid header value",
                )
            })?);
        }
        let dialect = Confluent {
            context: options
                .context
                .clone()
                .filter(|context| context != "default"),
        };
        RegistryCatalog::open(
            name,
            &options.url,
            authorization,
            Duration::from_secs(options.max_age.unwrap_or(300)),
            dialect,
            EventNames::of("schema-registry"),
        )
    }

    /// The catalog with its events named as for `type_name` (`karapace` has its own).
    pub fn named_as(mut self, type_name: &str) -> Self {
        if let Some(learnt) = Arc::get_mut(&mut self.learnt) {
            learnt.event_names = EventNames::of(type_name);
        }
        self
    }
}

impl<D: Dialect> RegistryCatalog<D> {
    /// A catalog named `name` (for errors) reading the registry at `url` (an error at
    /// `options.url` when it is not an http or https URL), trusting a subject's resolution
    /// for `max_age`, and raising `event_names`.
    pub fn open(
        name: &str,
        url: &str,
        authorization: Option<http::HeaderValue>,
        max_age: Duration,
        dialect: D,
        event_names: EventNames,
    ) -> Result<Self, BuildError> {
        let fetcher = Fetcher::new(url, authorization, dialect.accept())
            .map_err(|message| BuildError::at("options.url", message))?;
        Ok(Self {
            dialect: Arc::new(dialect),
            max_age,
            fetcher,
            learnt: Arc::new(Learnt {
                name: name.to_owned(),
                url: url.to_owned(),
                schemas: Mutex::new(Schemas::default()),
                subjects: Mutex::new(HashMap::new()),
                unretrievable: Mutex::new(HashMap::new()),
                events: Events::default(),
                event_names,
            }),
        })
    }

    /// The catalog raising its events on `events`.
    pub fn with_events(mut self, events: Events) -> Self {
        if let Some(learnt) = Arc::get_mut(&mut self.learnt) {
            learnt.events = events;
        }
        self
    }

    /// What to do with an answer for schema `id`, whoever waits for it.
    fn learn_schema_after(&self, id: u32) -> fetch::AfterAnswer {
        let learnt = self.learnt.clone();
        let dialect = self.dialect.clone();
        Box::new(move |answer| {
            learnt.learn_schema(dialect.as_ref(), id, answer);
        })
    }
}

impl<D: Dialect> Catalog for RegistryCatalog<D> {
    fn resolve_subject(&self, subject: &str, version: &str) -> Result<u32, String> {
        let key = (subject.to_owned(), version.to_owned());
        let cached = self
            .learnt
            .subjects
            .lock()
            .ok()
            .and_then(|subjects| subjects.get(&key).copied());
        let path = self.dialect.subject_path(subject, version);
        match cached {
            Some(resolution) if resolution.fetched.elapsed() < self.max_age => Ok(resolution.id),
            Some(resolution) => {
                // Stale: answer from the cache now and refresh behind it. A failed refresh
                // leaves the cached answer in service.
                let learnt = self.learnt.clone();
                let dialect = self.dialect.clone();
                self.fetcher.refresh(
                    &path,
                    Box::new(move |answer| match answer {
                        Ok(fetched) => {
                            if let Err(error) =
                                learnt.learn_subject(dialect.as_ref(), key, fetched)
                            {
                                tracing::warn!(%error, "subject not refreshed");
                            }
                        }
                        Err(error) => {
                            let error = learnt.failure(error);
                            tracing::warn!(%error, "subject not refreshed; the cached schema stays in use");
                            learnt.events.emit_with(learnt.event_names.stale, 0, || {
                                format!(
                                    "Unable to fetch schema for subject {} with version {}; using stale schema with id {}: {error}",
                                    key.0, key.1, resolution.id
                                )
                            });
                        }
                    }),
                );
                Ok(resolution.id)
            }
            None => {
                let fetched = self
                    .fetcher
                    .get_json(&path, LOAD_WAIT, None)
                    .map_err(|message| self.learnt.failure(message))?;
                self.learnt
                    .learn_subject(self.dialect.as_ref(), key, &fetched)
            }
        }
    }

    fn schema(&self, id: u32) -> Result<Arc<str>, String> {
        if let Some(text) = self.learnt.cached_schema(id) {
            return Ok(text);
        }
        if let Some(reason) = self.learnt.unretrievable(id) {
            return Err(reason);
        }
        let answer = self.fetcher.get_json(
            &self.dialect.id_path(id),
            WIRE_WAIT,
            Some(self.learn_schema_after(id)),
        );
        // A landed answer was learnt by the request itself; what is left is a wait that ran
        // out, or a request that could not start.
        match answer {
            Ok(_) => match self.learnt.cached_schema(id) {
                Some(text) => Ok(text),
                // The answer did not hold a schema (or one too large to keep); why was
                // recorded when it landed.
                None => Err(self
                    .learnt
                    .unretrievable(id)
                    .unwrap_or_else(|| self.learnt.failure(format!("no schema kept for id {id}")))),
            },
            Err(message) => {
                let reason = self.learnt.failure(message);
                self.learnt.record_unretrievable(id, &reason);
                Err(self.learnt.unretrievable(id).unwrap_or(reason))
            }
        }
    }

    fn fetch(&self, id: u32) -> Option<Fetching> {
        if self.learnt.cached_schema(id).is_some() || self.learnt.unretrievable(id).is_some() {
            return None;
        }
        let answer = self.fetcher.fetch_json(
            &self.dialect.id_path(id),
            WIRE_WAIT,
            Some(self.learn_schema_after(id)),
        );
        let learnt = self.learnt.clone();
        Some(Box::pin(async move {
            if let Err(message) = answer.await {
                learnt.record_unretrievable(id, &learnt.failure(message));
            }
        }))
    }

    fn prefix(&self, id: u32) -> Vec<u8> {
        self.dialect.prefix(id)
    }

    fn unprefix<'a>(&self, data: &'a [u8]) -> Result<Option<(u32, &'a [u8])>, String> {
        self.dialect.unprefix(data)
    }
}

#[cfg(test)]
mod tests;
