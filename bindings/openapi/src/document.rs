//! The parts of an OpenAPI 3.0 or 3.1 document the binding uses, read from the YAML or JSON
//! text with the position of every value, so a problem is reported at the document's own line
//! and column. `$ref`s within the document (`#/components/...`) are followed; references to
//! other documents are refused.
//!
//! This is a model of our own (serde over the parsed tree): the maintained crates each read
//! one version (`openapiv3` 3.0, `oas3` 3.1) and neither keeps positions.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use zilla_engine::config::Source;
use zilla_engine::config::node::Node;

/// The methods an OpenAPI path item holds operations for, in the order they are read.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Which OpenAPI: it decides the JSON Schema dialect of the document's schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 3.0.x: schemas are an extended subset of JSON Schema draft 4 (with `nullable`).
    V30,
    /// 3.1.x: schemas are JSON Schema 2020-12.
    V31,
}

/// A problem in a document: where (a path of keys from the root) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Keys from the document root.
    pub path: Vec<String>,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    fn at(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            message: message.into(),
        }
    }
}

/// A parsed document.
#[derive(Debug, Clone)]
pub struct Document {
    /// 3.0 or 3.1.
    pub version: Version,
    /// The server URLs, variables replaced by their defaults.
    pub servers: Vec<String>,
    /// Every operation, in document order.
    pub operations: Vec<Operation>,
    /// `components.securitySchemes`, by name.
    pub security_schemes: BTreeMap<String, SecurityScheme>,
    /// `components.schemas`, with 3.0's `nullable` turned into JSON Schema.
    pub schemas: Value,
    /// Where the document came from and its tree with positions, to locate problems found
    /// later.
    label: String,
    source: Source,
    node: Node,
}

/// One operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `operationId`.
    pub id: Option<String>,
    /// The method, upper case.
    pub method: String,
    /// The path template, e.g. `/pets/{id}`.
    pub path: String,
    /// `tags`.
    pub tags: Vec<String>,
    /// Path-level and operation-level parameters, the latter winning.
    pub parameters: Vec<Parameter>,
    /// The request body's media types with their schemas.
    pub body: Vec<(String, Option<Value>)>,
    /// The security requirements (alternatives; each needs all its schemes), the document's
    /// when the operation has none of its own.
    pub security: Vec<BTreeMap<String, Vec<String>>>,
    /// The responses, in document order.
    pub responses: Vec<Response>,
    /// The operation's `x-` extension keys with their values as written.
    pub extensions: BTreeMap<String, Value>,
    /// Where it is written, for errors.
    pub pointer: Vec<String>,
}

/// One response of an operation, as far as mappings onto other protocols read it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code as written (`200`, `2XX`, `default`).
    pub status: String,
    /// The media types with their schemas, each `$ref` followed at its top.
    pub content: Vec<(String, Option<Value>)>,
    /// The headers by name, with the `format` of their schema (`$ref`s followed).
    pub headers: Vec<(String, Option<String>)>,
}

/// One parameter.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// `name`.
    pub name: String,
    /// `in`: `path`, `query` or `header`.
    pub location: String,
    /// The schema, `$ref` followed at its top.
    pub schema: Option<Value>,
    /// Where it is written, for errors.
    pub pointer: Vec<String>,
}

/// One security scheme.
#[derive(Debug, Clone, Deserialize)]
pub struct SecurityScheme {
    /// `type`: `http`, `apiKey`, `oauth2`, `openIdConnect`, `mutualTLS`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `scheme` of an `http` scheme (`bearer`, `basic`).
    pub scheme: Option<String>,
}

#[derive(Deserialize)]
struct RawParameter {
    name: String,
    #[serde(rename = "in")]
    location: String,
    schema: Option<Value>,
    content: Option<Value>,
}

#[derive(Deserialize)]
struct RawMediaType {
    schema: Option<Value>,
}

/// Parses `text` (YAML or JSON) as an OpenAPI document; errors say where in `text`.
pub fn parse(label: &str, text: &str) -> Result<Document, String> {
    let source = Source::plain(label, text);
    let nodes = Node::parse_documents(&source).map_err(|error| error.to_string())?;
    let Some(node) = nodes.first() else {
        return Err(format!("{label}: the document is empty"));
    };
    let root = node.to_json();
    let located = Located {
        label: label.to_owned(),
        source: source.clone(),
        node: node.clone(),
    };
    read(&root, &located).map_err(|error| located.at(&error.path, &error.message))
}

/// A document's text and tree, to say where a path of keys is written.
struct Located {
    label: String,
    source: Source,
    node: Node,
}

impl Located {
    fn at(&self, path: &[String], message: &str) -> String {
        let position = self.node.locate(path).position(&self.source);
        let shown = zilla_engine::config::model::display_path(path);
        format!(
            "{}:{}:{}: {shown}: {message}",
            self.label, position.line, position.column
        )
    }
}

fn read(root: &Value, located: &Located) -> Result<Document, SpecError> {
    if root.get("swagger").is_some() {
        return Err(SpecError::at(
            &["swagger"],
            "Swagger 2.0 documents are not supported; OpenAPI 3.0 and 3.1 are",
        ));
    }
    let version = match root.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0.") => Version::V30,
        Some(v) if v.starts_with("3.1.") => Version::V31,
        Some(v) => {
            return Err(SpecError::at(
                &["openapi"],
                format!("OpenAPI {v} is not supported; 3.0.x and 3.1.x are"),
            ));
        }
        None => {
            return Err(SpecError::at(
                &[],
                "not an OpenAPI document: it has no `openapi` version",
            ));
        }
    };
    if let Some(dialect) = root.get("jsonSchemaDialect").and_then(Value::as_str)
        && dialect != "https://spec.openapis.org/oas/3.1/dialect/base"
        && dialect != "https://json-schema.org/draft/2020-12/schema"
    {
        return Err(SpecError::at(
            &["jsonSchemaDialect"],
            format!("schema dialect `{dialect}` is not supported; 2020-12 is"),
        ));
    }
    let servers = servers(root)?;
    let mut schemas = root
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    local_refs_only(&schemas, &mut vec!["components".into(), "schemas".into()])?;
    if version == Version::V30 {
        nullable_to_json_schema(&mut schemas);
    }
    let security_schemes = match root.pointer("/components/securitySchemes") {
        None => BTreeMap::new(),
        Some(Value::Object(schemes)) => {
            let mut read = BTreeMap::new();
            for (name, scheme) in schemes {
                let at = ["components", "securitySchemes", name.as_str()];
                let scheme = resolve(root, scheme, &at)?;
                let scheme: SecurityScheme = serde_json::from_value(scheme.clone())
                    .map_err(|error| SpecError::at(&at, error.to_string()))?;
                read.insert(name.clone(), scheme);
            }
            read
        }
        Some(_) => {
            return Err(SpecError::at(
                &["components", "securitySchemes"],
                "expected an object",
            ));
        }
    };
    let default_security = security(root.get("security"), &["security"])?;
    let mut operations = Vec::new();
    let paths = match root.get("paths") {
        None => Map::new(),
        Some(Value::Object(paths)) => paths.clone(),
        Some(_) => return Err(SpecError::at(&["paths"], "expected an object")),
    };
    for (path, item) in &paths {
        let at = ["paths", path.as_str()];
        if !path.starts_with('/') {
            return Err(SpecError::at(&at, "a path must start with `/`"));
        }
        let item = resolve(root, item, &at)?;
        let shared = parameters(root, item.get("parameters"), &at, version)?;
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let at = ["paths", path.as_str(), method];
            for refused in ["callbacks"] {
                if operation.get(refused).is_some() {
                    return Err(SpecError::at(
                        &[&at[..], &[refused]].concat(),
                        format!("`{refused}` is not supported yet"),
                    ));
                }
            }
            let mut parameters = shared.clone();
            for own in parameters_of(root, operation, &at, version)? {
                parameters
                    .retain(|p: &Parameter| !(p.name == own.name && p.location == own.location));
                parameters.push(own);
            }
            let id = match operation.get("operationId") {
                None => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(_) => {
                    return Err(SpecError::at(
                        &[&at[..], &["operationId"]].concat(),
                        "expected a string",
                    ));
                }
            };
            let tags = match operation.get("tags") {
                None => Vec::new(),
                Some(tags) => serde_json::from_value(tags.clone()).map_err(|error| {
                    SpecError::at(&[&at[..], &["tags"]].concat(), error.to_string())
                })?,
            };
            let security_at = [&at[..], &["security"]].concat();
            let security = match operation.get("security") {
                None => default_security.clone(),
                own => security(own, &security_at)?,
            };
            operations.push(Operation {
                id,
                method: method.to_uppercase(),
                path: path.clone(),
                tags,
                parameters,
                body: body(root, operation, &at, version)?,
                security,
                responses: responses(root, operation, &at)?,
                extensions: operation
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(key, _)| key.starts_with("x-"))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
                pointer: at.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
    }
    Ok(Document {
        version,
        servers,
        operations,
        security_schemes,
        schemas,
        label: located.label.clone(),
        source: located.source.clone(),
        node: located.node.clone(),
    })
}

/// `servers[].url` with variables at their defaults; `/` when the document has none.
fn servers(root: &Value) -> Result<Vec<String>, SpecError> {
    let Some(servers) = root.get("servers") else {
        return Ok(vec!["/".to_owned()]);
    };
    let Value::Array(servers) = servers else {
        return Err(SpecError::at(&["servers"], "expected a list"));
    };
    let mut urls = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let index = index.to_string();
        let at = ["servers", index.as_str()];
        let Some(url) = server.get("url").and_then(Value::as_str) else {
            return Err(SpecError::at(&at, "a server needs a `url`"));
        };
        let mut url = url.to_owned();
        if let Some(Value::Object(variables)) = server.get("variables") {
            for (name, variable) in variables {
                let Some(default) = variable.get("default").and_then(Value::as_str) else {
                    return Err(SpecError::at(
                        &[&at[..], &["variables", name.as_str()]].concat(),
                        "a server variable needs a `default`",
                    ));
                };
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
        if url.contains('{') {
            return Err(SpecError::at(
                &[&at[..], &["url"]].concat(),
                format!("`{url}` has a variable without a default"),
            ));
        }
        urls.push(url);
    }
    Ok(urls)
}

fn parameters_of(
    root: &Value,
    operation: &Value,
    at: &[&str],
    version: Version,
) -> Result<Vec<Parameter>, SpecError> {
    parameters(root, operation.get("parameters"), at, version)
}

fn parameters(
    root: &Value,
    list: Option<&Value>,
    at: &[&str],
    version: Version,
) -> Result<Vec<Parameter>, SpecError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let Value::Array(list) = list else {
        return Err(SpecError::at(
            &[at, &["parameters"]].concat(),
            "expected a list",
        ));
    };
    let mut read = Vec::new();
    for (index, parameter) in list.iter().enumerate() {
        let index = index.to_string();
        let at = [at, &["parameters", index.as_str()]].concat();
        let parameter = resolve(root, parameter, &at)?;
        let raw: RawParameter = serde_json::from_value(parameter.clone())
            .map_err(|error| SpecError::at(&at, error.to_string()))?;
        if raw.content.is_some() {
            return Err(SpecError::at(
                &[&at[..], &["content"]].concat(),
                "parameters described by `content` are not supported yet; use `schema`",
            ));
        }
        if !["path", "query", "header"].contains(&raw.location.as_str()) {
            return Err(SpecError::at(
                &[&at[..], &["in"]].concat(),
                format!("parameters in `{}` are not supported yet", raw.location),
            ));
        }
        let schema_at = [&at[..], &["schema"]].concat();
        let schema = match &raw.schema {
            None => None,
            Some(schema) => {
                let mut schema = resolve(root, schema, &schema_at)?.clone();
                local_refs_only(
                    &schema,
                    &mut schema_at.iter().map(|s| (*s).to_owned()).collect(),
                )?;
                if version == Version::V30 {
                    nullable_to_json_schema(&mut schema);
                }
                Some(schema)
            }
        };
        read.push(Parameter {
            name: raw.name,
            location: raw.location,
            schema,
            pointer: schema_at.iter().map(|s| (*s).to_owned()).collect(),
        });
    }
    Ok(read)
}

fn body(
    root: &Value,
    operation: &Value,
    at: &[&str],
    version: Version,
) -> Result<Vec<(String, Option<Value>)>, SpecError> {
    let Some(body) = operation.get("requestBody") else {
        return Ok(Vec::new());
    };
    let at = [at, &["requestBody"]].concat();
    let body = resolve(root, body, &at)?;
    let Some(Value::Object(content)) = body.get("content") else {
        return Err(SpecError::at(&at, "a request body needs `content`"));
    };
    let mut media = Vec::new();
    for (content_type, media_type) in content {
        let at = [&at[..], &["content", content_type.as_str()]].concat();
        let raw: RawMediaType = serde_json::from_value(media_type.clone())
            .map_err(|error| SpecError::at(&at, error.to_string()))?;
        let mut schema = raw.schema;
        if let Some(schema) = &schema {
            local_refs_only(
                schema,
                &mut [&at[..], &["schema"]]
                    .concat()
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            )?;
        }
        if version == Version::V30
            && let Some(schema) = schema.as_mut()
        {
            nullable_to_json_schema(schema);
        }
        media.push((content_type.clone(), schema));
    }
    Ok(media)
}

/// `responses` of an operation: status, media types with schemas, header formats.
fn responses(root: &Value, operation: &Value, at: &[&str]) -> Result<Vec<Response>, SpecError> {
    let Some(responses) = operation.get("responses") else {
        return Ok(Vec::new());
    };
    let at = [at, &["responses"]].concat();
    let Value::Object(responses) = responses else {
        return Err(SpecError::at(&at, "expected an object"));
    };
    let mut read = Vec::new();
    for (status, response) in responses {
        let at = [&at[..], &[status.as_str()]].concat();
        let response = resolve(root, response, &at)?;
        let mut content = Vec::new();
        if let Some(Value::Object(media)) = response.get("content") {
            for (content_type, media_type) in media {
                let at = [&at[..], &["content", content_type.as_str(), "schema"]].concat();
                let schema = match media_type.get("schema") {
                    Some(schema) => Some(resolve(root, schema, &at)?.clone()),
                    None => None,
                };
                content.push((content_type.clone(), schema));
            }
        }
        let mut headers = Vec::new();
        if let Some(Value::Object(declared)) = response.get("headers") {
            for (name, header) in declared {
                let at = [&at[..], &["headers", name.as_str()]].concat();
                let header = resolve(root, header, &at)?;
                let format = match header.get("schema") {
                    Some(schema) => resolve(root, schema, &[&at[..], &["schema"]].concat())?
                        .get("format")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    None => None,
                };
                headers.push((name.clone(), format));
            }
        }
        read.push(Response {
            status: status.clone(),
            content,
            headers,
        });
    }
    Ok(read)
}

fn security(
    value: Option<&Value>,
    at: &[&str],
) -> Result<Vec<BTreeMap<String, Vec<String>>>, SpecError> {
    match value {
        None => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|error| SpecError::at(at, error.to_string())),
    }
}

/// Follows `$ref`s within the document from `value` (written at `at`).
fn resolve<'a>(root: &'a Value, value: &'a Value, at: &[&str]) -> Result<&'a Value, SpecError> {
    let mut current = value;
    for _ in 0..32 {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
            return Ok(current);
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(SpecError::at(
                &[at, &["$ref"]].concat(),
                format!(
                    "`{reference}` refers to another document; only references within the \
                     document are supported"
                ),
            ));
        };
        current = root.pointer(pointer).ok_or_else(|| {
            SpecError::at(
                &[at, &["$ref"]].concat(),
                format!("`{reference}` refers to nothing in the document"),
            )
        })?;
    }
    Err(SpecError::at(
        &[at, &["$ref"]].concat(),
        "`$ref`s refer to each other in a loop",
    ))
}

/// Refuses a `$ref` to another document anywhere in `value` (written at `path`): schemas are
/// checked with only this document at hand.
fn local_refs_only(value: &Value, path: &mut Vec<String>) -> Result<(), SpecError> {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                path.push(key.clone());
                if key == "$ref"
                    && let Value::String(reference) = child
                    && !reference.starts_with('#')
                {
                    return Err(SpecError {
                        path: path.clone(),
                        message: format!(
                            "`{reference}` refers to another document; only references within \
                             the document are supported"
                        ),
                    });
                }
                local_refs_only(child, path)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(index.to_string());
                local_refs_only(item, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// OpenAPI 3.0's `nullable: true` beside a `type` means the JSON Schema `type: [T, "null"]`.
fn nullable_to_json_schema(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(kind)) = object.get("type").cloned()
            {
                object.insert("type".into(), serde_json::json!([kind, "null"]));
            }
            object.values_mut().for_each(nullable_to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_json_schema),
        _ => {}
    }
}

impl Document {
    /// `message` prefixed with where `path` (keys from the document root) is written:
    /// `<catalog>/<subject>:line:column: path: message`.
    pub fn at(&self, path: &[String], message: &str) -> String {
        Located {
            label: self.label.clone(),
            source: self.source.clone(),
            node: self.node.clone(),
        }
        .at(path, message)
    }

    /// A self-contained JSON Schema for `schema` (written in this document): the document's
    /// dialect, and its `components.schemas` alongside so `#/components/schemas/...`
    /// references resolve.
    pub fn json_schema(&self, schema: &Value) -> Value {
        let dialect = match self.version {
            Version::V30 => "http://json-schema.org/draft-04/schema#",
            Version::V31 => "https://json-schema.org/draft/2020-12/schema",
        };
        serde_json::json!({
            "$schema": dialect,
            "allOf": [schema],
            "components": {"schemas": self.schemas},
        })
    }
}

#[cfg(test)]
mod tests;
