//! The `http-kafka` proxy an `openapi-asyncapi` binding stands for.
//!
//! Each OpenAPI operation the routes take becomes one `http-kafka` route (`when` its method
//! and path template, written as the document writes it and also after the base path of each
//! of the document's server URLs), exiting to the route's `exit`. What the route does follows
//! the AsyncAPI operation it maps onto:
//!
//! - `receive` (clients read): `fetch` from the operation's channel topic. A JSON response
//!   whose schema is an `array` merges every latest value into one array; a path parameter
//!   (the last one) filters by record key (`${params.<name>}`).
//! - `send` (clients write): `produce` to the channel topic with `acks: in_sync_replicas`,
//!   keyed by the last path parameter or else the idempotency key. When the AsyncAPI
//!   operation has a `reply`, the request waits for the correlated record on the reply
//!   channel's topic (`reply-to`; `correlation-id` from the first message's
//!   `correlationId.location: $message.header#/<name>`). When the OpenAPI operation answers
//!   `202` with headers whose schema `format` holds `{correlationId}` (e.g. `location:
//!   {format: '/pets/{id};cid={correlationId}'}`), `prefer: respond-async` is answered `202`
//!   with those headers (`async`), and a `GET` of that location (an operation of its own in
//!   the document) is taken by the same route, to answer with the reply.
//!
//! `x-zilla-http-kafka` on an OpenAPI operation adds, as in Zilla, `key` (the produced
//! record's key), `overrides` (headers of the produced record) and `filters` (`key` and
//! `headers` of fetched records, ORed with the path parameter filter).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use zilla_asyncapi::generate::{glob, parameters, with_params};
use zilla_asyncapi::{Action, Spec};
use zilla_binding_openapi::document::{Document, Operation};
use zilla_engine::BuildError;

use crate::config::{OpenapiAsyncapiCondition, OpenapiAsyncapiWith};

/// The one binding generated, the entry of the namespace: it takes the composite's name.
pub const HTTP_KAFKA_PROXY: &str = "http_kafka_proxy0";

/// The OpenAPI extension read from operations.
const HTTP_KAFKA_EXTENSION: &str = "x-zilla-http-kafka";

/// A route of the composite, as the generator reads it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The OpenAPI operations taken (all when empty).
    pub when: Vec<OpenapiAsyncapiCondition>,
    /// The AsyncAPI operations they map onto.
    pub with: OpenapiAsyncapiWith,
    /// Where the generated route exits, qualified.
    pub exit: String,
}

/// The parsed documents, by label.
#[derive(Debug, Default)]
pub struct Documents {
    /// `options.specs.openapi`.
    pub openapi: BTreeMap<String, Document>,
    /// `options.specs.asyncapi`.
    pub asyncapi: BTreeMap<String, Spec>,
}

/// `x-zilla-http-kafka` of an OpenAPI operation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpKafkaExtension {
    key: Option<String>,
    overrides: Option<BTreeMap<String, String>>,
    filters: Option<Vec<ExtensionFilter>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionFilter {
    key: Option<String>,
    headers: Option<BTreeMap<String, String>>,
}

/// One OpenAPI operation taken by a route, and the AsyncAPI operation it maps onto (none when
/// the document has no operation of its id: left unmapped, as Zilla does).
struct Selected<'a> {
    label: &'a str,
    document: &'a Document,
    operation: &'a Operation,
    kafka: Option<KafkaOperation<'a>>,
    exit: &'a str,
}

struct KafkaOperation<'a> {
    spec: &'a Spec,
    id: &'a str,
    operation: &'a zilla_asyncapi::Operation,
}

/// The namespace `name`: one `http-kafka` proxy mapping the routes' operations.
pub fn namespace(name: &str, routes: &[Route], documents: &Documents) -> Result<Value, BuildError> {
    let selected = select(routes, documents)?;
    let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
    let mut folded: BTreeSet<(String, String)> = BTreeSet::new();
    let mut generated = Vec::new();
    let mut pending = Vec::new();
    for entry in &selected {
        let Some(kafka) = &entry.kafka else {
            continue;
        };
        let key = (entry.operation.method.clone(), entry.operation.path.clone());
        if !taken.insert(key) {
            continue;
        }
        let route = route(entry, kafka)?;
        for location in &route.locations {
            folded.insert(("GET".to_owned(), location.clone()));
        }
        pending.push((entry, route));
    }
    for (entry, route) in pending {
        let key = (entry.operation.method.clone(), entry.operation.path.clone());
        if folded.contains(&key) && route.locations.is_empty() {
            // A location of another operation's async answer: that operation's route takes it.
            continue;
        }
        generated.push(route.value);
    }
    // The http-kafka proxy takes the first route that matches, and `{name}` matches any run
    // of characters: as OpenAPI matches paths, literal paths go first, then the templates
    // with the most literal text (`/pets/{id};cid={correlationId}` before `/pets/{id}`).
    generated.sort_by_key(|route| std::cmp::Reverse(specificity(route)));
    if generated.is_empty() {
        return Err(BuildError::at(
            "routes",
            "no OpenAPI operation the routes take has an AsyncAPI operation to map onto",
        ));
    }
    Ok(json!({
        "name": name,
        "bindings": {
            HTTP_KAFKA_PROXY: {"type": "http-kafka", "kind": "proxy", "routes": generated},
        },
    }))
}

/// The OpenAPI operations each route takes, in route order, with what they map onto.
fn select<'a>(
    routes: &'a [Route],
    documents: &'a Documents,
) -> Result<Vec<Selected<'a>>, BuildError> {
    let mut selected = Vec::new();
    let every = [OpenapiAsyncapiCondition::default()];
    for (index, route) in routes.iter().enumerate() {
        let with = &route.with;
        let (kafka_label, kafka_spec) = kafka_spec(index, with, documents)?;
        let by_same_id = with.by_same_id();
        if !by_same_id
            && let Some(id) = &with.operation
            && !kafka_spec.operations.contains_key(id)
        {
            return Err(BuildError::at(
                format!("routes[{index}].with.operation"),
                format!("the AsyncAPI spec `{kafka_label}` has no operation `{id}`"),
            ));
        }
        let candidate = |id: &str| -> bool {
            match (&with.tag, &with.operation) {
                (Some(tag), _) => kafka_spec
                    .operations
                    .get(id)
                    .is_some_and(|operation| operation.tags.contains(tag)),
                (None, Some(pattern)) if by_same_id => glob(pattern, id),
                _ => true,
            }
        };
        let conditions: &[OpenapiAsyncapiCondition] = if route.when.is_empty() {
            &every
        } else {
            &route.when
        };
        for (entry, condition) in conditions.iter().enumerate() {
            let labels: Vec<(&String, &Document)> = match &condition.spec {
                Some(label) => match documents.openapi.get_key_value(label) {
                    Some(found) => vec![found],
                    None => {
                        return Err(BuildError::at(
                            format!("routes[{index}].when[{entry}].spec"),
                            format!(
                                "unknown spec `{label}`; expected a key of options.specs.openapi"
                            ),
                        ));
                    }
                },
                None => documents.openapi.iter().collect(),
            };
            let mut matched = false;
            for (label, document) in labels {
                for operation in &document.operations {
                    if !matches(condition, operation) {
                        continue;
                    }
                    matched = true;
                    let kafka_id = if by_same_id {
                        operation.id.as_deref()
                    } else {
                        with.operation.as_deref()
                    };
                    let kafka = kafka_id
                        .filter(|id| candidate(id))
                        .and_then(|id| kafka_spec.operations.get_key_value(id))
                        .map(|(id, operation)| KafkaOperation {
                            spec: kafka_spec,
                            id,
                            operation,
                        });
                    selected.push(Selected {
                        label,
                        document,
                        operation,
                        kafka,
                        exit: &route.exit,
                    });
                }
            }
            if !matched {
                return Err(BuildError::at(
                    format!("routes[{index}].when[{entry}]"),
                    "no operation of the OpenAPI documents matches",
                ));
            }
        }
    }
    Ok(selected)
}

/// The AsyncAPI document a route's `with` names (the only one when it names none), which
/// must describe Kafka.
fn kafka_spec<'a>(
    index: usize,
    with: &OpenapiAsyncapiWith,
    documents: &'a Documents,
) -> Result<(&'a str, &'a Spec), BuildError> {
    let at = format!("routes[{index}].with.spec");
    let found = match &with.spec {
        Some(label) => documents.asyncapi.get_key_value(label),
        None if documents.asyncapi.len() == 1 => documents.asyncapi.iter().next(),
        None => {
            return Err(BuildError::at(
                at,
                "name the AsyncAPI spec: options.specs.asyncapi has more than one",
            ));
        }
    };
    let Some((label, spec)) = found else {
        return Err(BuildError::at(
            at,
            format!(
                "unknown spec `{}`; expected a key of options.specs.asyncapi",
                with.spec.as_deref().unwrap_or_default()
            ),
        ));
    };
    if !spec.has_protocol("kafka") {
        return Err(BuildError::at(
            at,
            format!(
                "the AsyncAPI spec `{label}` has no kafka server: only Kafka operations are mapped onto, other protocols are not supported"
            ),
        ));
    }
    Ok((label, spec))
}

/// Whether a route condition takes `operation` (its spec already matched).
fn matches(condition: &OpenapiAsyncapiCondition, operation: &Operation) -> bool {
    condition
        .operation
        .as_deref()
        .is_none_or(|pattern| operation.id.as_deref().is_some_and(|id| glob(pattern, id)))
        && condition
            .tag
            .as_deref()
            .is_none_or(|tag| operation.tags.iter().any(|t| t == tag))
}

/// A generated route and the async locations it also answers.
struct Generated {
    value: Value,
    locations: Vec<String>,
}

fn route(entry: &Selected<'_>, kafka: &KafkaOperation<'_>) -> Result<Generated, BuildError> {
    let operation = entry.operation;
    let document = entry.document;
    let spec_at = format!("options.specs.openapi.{}", entry.label);
    let extension = extension(entry, &spec_at)?;
    let topic = topic(kafka.spec, &kafka.operation.channel).ok_or_else(|| {
        kafka_error(
            kafka.spec,
            format!("operations.{}.channel", kafka.id),
            "the channel names no topic",
        )
    })?;
    let params = parameters(&operation.path);
    let mut when: Vec<Value> = paths(document, &operation.path)
        .into_iter()
        .map(|path| json!({"method": operation.method, "path": path}))
        .collect();
    let mut locations = Vec::new();
    // What the extension says for the other capability would be left unused: refused.
    let unused = |keys: &str, action: &str| {
        BuildError::at(
            &spec_at,
            document.at(
                &[&operation.pointer[..], &[HTTP_KAFKA_EXTENSION.to_owned()]].concat(),
                &format!(
                    "{keys}: the AsyncAPI operation `{}` this operation maps onto {action}",
                    kafka.id
                ),
            ),
        )
    };
    let with = match kafka.operation.action {
        Action::Receive => {
            if extension.key.is_some() || extension.overrides.is_some() {
                return Err(unused(
                    "`key` and `overrides` are for producing",
                    "receives",
                ));
            }
            let mut with = json!({"capability": "fetch", "topic": topic});
            let merged = operation.responses.iter().any(|response| {
                response.content.iter().any(|(content_type, schema)| {
                    is_json(content_type)
                        && schema
                            .as_ref()
                            .and_then(|schema| schema.get("type"))
                            .and_then(Value::as_str)
                            == Some("array")
                })
            });
            if merged {
                with["merge"] = json!({
                    "content-type": "application/json",
                    "patch": {"initial": "[]", "path": "/-"},
                });
            }
            let mut filters = Vec::new();
            if let Some(last) = params.last() {
                filters.push(json!({"key": format!("${{params.{last}}}")}));
            }
            for filter in extension.filters.iter().flatten() {
                let mut written = Map::new();
                if let Some(key) = &filter.key {
                    written.insert("key".into(), json!(key));
                }
                if let Some(headers) = &filter.headers {
                    written.insert("headers".into(), json!(headers));
                }
                filters.push(Value::Object(written));
            }
            if !filters.is_empty() {
                with["filters"] = Value::Array(filters);
            }
            with
        }
        Action::Send => {
            if extension.filters.is_some() {
                return Err(unused("`filters` are for fetching", "sends"));
            }
            let key = match (&extension.key, params.last()) {
                (Some(key), _) => key.clone(),
                (None, Some(last)) => format!("${{params.{last}}}"),
                (None, None) => "${idempotencyKey}".to_owned(),
            };
            let mut with = json!({
                "capability": "produce",
                "topic": topic,
                "acks": "in_sync_replicas",
                "key": key,
            });
            if let Some(overrides) = &extension.overrides {
                with["overrides"] = json!(overrides);
            }
            let reply = reply(kafka)?;
            if let Some((reply_topic, correlation)) = &reply {
                with["reply-to"] = json!(reply_topic);
                if let Some(header) = correlation {
                    with["correlation-id"] = json!(header);
                }
            }
            let headers = async_headers(operation);
            if !headers.is_empty() {
                if reply.is_none() {
                    return Err(BuildError::at(
                        &spec_at,
                        document.at(
                            &[&operation.pointer[..], &["responses".to_owned(), "202".to_owned()]].concat(),
                            &format!(
                                "answers 202 with a `{{correlationId}}` location, but the AsyncAPI operation `{}` it maps onto has no `reply`",
                                kafka.id
                            ),
                        ),
                    ));
                }
                let mut written = Map::new();
                for (name, format) in &headers {
                    written.insert(name.clone(), json!(with_params(format)));
                    if format.contains("{correlationId}") {
                        locations.push(format.clone());
                    }
                }
                with["async"] = Value::Object(written);
                for location in &locations {
                    for path in paths(document, location) {
                        when.push(json!({"method": "GET", "path": path}));
                    }
                }
            }
            with
        }
    };
    Ok(Generated {
        value: json!({"when": when, "exit": entry.exit, "with": with}),
        locations,
    })
}

/// `x-zilla-http-kafka` of the operation; other `x-zilla-` extensions are refused.
fn extension(entry: &Selected<'_>, spec_at: &str) -> Result<HttpKafkaExtension, BuildError> {
    let operation = entry.operation;
    let located = |key: &str, message: &str| {
        BuildError::at(
            spec_at,
            entry.document.at(
                &[&operation.pointer[..], &[key.to_owned()]].concat(),
                message,
            ),
        )
    };
    for key in operation.extensions.keys() {
        if key.starts_with("x-zilla-") && key != HTTP_KAFKA_EXTENSION {
            return Err(located(key, "not supported by openapi-asyncapi bindings"));
        }
    }
    let Some(value) = operation.extensions.get(HTTP_KAFKA_EXTENSION) else {
        return Ok(HttpKafkaExtension::default());
    };
    let extension: HttpKafkaExtension = serde_json::from_value(value.clone())
        .map_err(|error| located(HTTP_KAFKA_EXTENSION, &error.to_string()))?;
    let values = extension
        .key
        .iter()
        .chain(extension.overrides.iter().flat_map(BTreeMap::values))
        .chain(extension.filters.iter().flatten().flat_map(|filter| {
            filter
                .key
                .iter()
                .chain(filter.headers.iter().flat_map(BTreeMap::values))
        }));
    for value in values {
        if value.contains("{identity}") {
            return Err(located(
                HTTP_KAFKA_EXTENSION,
                "`{identity}` needs a guard: `security` is not supported yet by openapi-asyncapi bindings",
            ));
        }
    }
    Ok(extension)
}

/// The reply topic and correlation header of a `send` operation with a `reply`.
fn reply(kafka: &KafkaOperation<'_>) -> Result<Option<(String, Option<String>)>, BuildError> {
    let Some(reply) = &kafka.operation.reply else {
        return Ok(None);
    };
    let at = format!("operations.{}.reply", kafka.id);
    let Some(channel) = &reply.channel else {
        return Err(kafka_error(kafka.spec, at, "the reply names no channel"));
    };
    let Some(reply_topic) = topic(kafka.spec, channel) else {
        return Err(kafka_error(
            kafka.spec,
            at,
            "the reply channel names no topic",
        ));
    };
    let correlation = kafka
        .operation
        .messages
        .first()
        .and_then(|message| message.correlation_id.as_deref())
        .and_then(|location| location.strip_prefix("$message.header#/"))
        .map(str::to_owned);
    Ok(Some((reply_topic.to_owned(), correlation)))
}

/// The headers of a `202` answer, by name with their `format`, when one of them holds
/// `{correlationId}`.
fn async_headers(operation: &Operation) -> Vec<(String, String)> {
    let Some(accepted) = operation.responses.iter().find(|r| r.status == "202") else {
        return Vec::new();
    };
    let headers: Vec<(String, String)> = accepted
        .headers
        .iter()
        .filter_map(|(name, format)| format.clone().map(|format| (name.clone(), format)))
        .collect();
    if headers
        .iter()
        .any(|(_, format)| format.contains("{correlationId}"))
    {
        headers
    } else {
        Vec::new()
    }
}

fn topic<'a>(spec: &'a Spec, channel: &str) -> Option<&'a str> {
    spec.channels
        .get(channel)
        .and_then(|channel| channel.topic())
}

fn kafka_error(spec: &Spec, path: impl Into<String>, message: &str) -> BuildError {
    BuildError::at(
        "options.specs.asyncapi",
        format!("{}: {}: {message}", spec.file, path.into()),
    )
}

/// `path` as the document writes it, and after each server URL's base path.
fn paths(document: &Document, path: &str) -> Vec<String> {
    let mut all = vec![path.to_owned()];
    for url in &document.servers {
        let base = base_path(url);
        if !base.is_empty() {
            let prefixed = format!("{base}{path}");
            if !all.contains(&prefixed) {
                all.push(prefixed);
            }
        }
    }
    all
}

/// The path of a server URL (absolute or relative), without a trailing `/`.
fn base_path(url: &str) -> &str {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |start| &rest[start..]),
        None => url,
    };
    path.trim_end_matches('/')
}

/// Whether a media type is JSON (`application/json`, `application/<x>+json`).
fn is_json(content_type: &str) -> bool {
    content_type
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

/// How specific a generated route's most specific path is: literal paths first, then by
/// the length of their literal text.
fn specificity(route: &Value) -> (bool, usize) {
    route["when"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|when| when["path"].as_str())
        .map(|path| {
            let literal: usize = path
                .split('{')
                .enumerate()
                .map(|(index, part)| match index {
                    0 => part.len(),
                    _ => part.split_once('}').map_or(0, |(_, rest)| rest.len()),
                })
                .sum();
            (!path.contains('{'), literal)
        })
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_expressions() {
        assert_eq!(base_path("http://localhost:7114"), "");
        assert_eq!(base_path("http://localhost:7114/v1/"), "/v1");
        assert_eq!(base_path("/api"), "/api");
        assert_eq!(parameters("/pets/{id};cid={correlationId}"), vec!["id"]);
        assert_eq!(
            with_params("/pets/{id};cid={correlationId}"),
            "/pets/${params.id};cid=${correlationId}"
        );
        assert!(is_json("application/json") && is_json("application/problem+json"));
        assert!(!is_json("text/json") && !is_json("application/jsonx"));
    }
}
