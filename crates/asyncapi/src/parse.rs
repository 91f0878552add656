//! Reads an AsyncAPI 2.x or 3.0 document into [`Spec`], resolving `$ref`s on the way; every
//! error names the file, the line and column, and the document path.

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use zilla_config::node::{Node, NodeValue};
use zilla_config::{ConfigError, Source};

use crate::model::{
    Action, Channel, HttpOperationBinding, KafkaChannelBinding, Message, MqttKafkaChannel,
    MqttOperationBinding, Operation, Payload, Reply, SchemaFormat, Server, Spec, ZillaHttpKafka,
    ZillaSse, ZillaSseKafka,
};
use crate::resolve::{Document, Located};
use crate::schema::bundle;

/// The `x-zilla-*` operation bindings Zilla reads.
const OPERATION_EXTENSIONS: [&str; 3] = ["x-zilla-http-kafka", "x-zilla-sse", "x-zilla-sse-kafka"];
/// The `x-zilla-*` channel extension Zilla reads.
const CHANNEL_EXTENSION: &str = "x-zilla-mqtt-kafka";

/// Parses an AsyncAPI document (YAML or JSON). `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Spec, ConfigError> {
    let source = Source::plain(file, text);
    let mut documents = Node::parse_documents(&source)?;
    if documents.len() != 1 {
        return Err(ConfigError::new(
            file,
            zilla_config::Position { line: 1, column: 1 },
            "",
            format!(
                "an AsyncAPI document is one YAML document, not {}",
                documents.len()
            ),
        ));
    }
    let root = documents.remove(0);
    let document = Document { file, root: &root };
    Reader { document }.spec()
}

/// Which major version a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Major {
    Two,
    Three,
}

struct Reader<'a> {
    document: Document<'a>,
}

impl<'a> Reader<'a> {
    fn spec(&self) -> Result<Spec, ConfigError> {
        let root = self.document.root();
        if !root.is_map() {
            return Err(self.document.error(
                root.node,
                "",
                "an AsyncAPI document is a mapping with an `asyncapi` version",
            ));
        }
        let Some(version) = root.get("asyncapi") else {
            return Err(self
                .document
                .document_error("`asyncapi` is missing: not an AsyncAPI document"));
        };
        let version_text = self.string(&version)?;
        let major = major(version_text).ok_or_else(|| {
            self.document.error(
                version.node,
                &version.path,
                format!("AsyncAPI {version_text} is not supported: 2.0 to 2.6 and 3.0 are"),
            )
        })?;
        self.check_extensions()?;
        let default_content_type = match root.get("defaultContentType") {
            Some(value) => Some(self.string(&value)?.to_owned()),
            None => None,
        };
        let mut spec = Spec {
            file: self.document.file.to_owned(),
            version: version_text.to_owned(),
            default_content_type,
            servers: IndexMap::new(),
            channels: IndexMap::new(),
            operations: IndexMap::new(),
        };
        for (name, server) in self.map_entries(root.get("servers"))? {
            let server = self.document.deref(server)?;
            spec.servers.insert(name, self.server(&server, major)?);
        }
        match major {
            Major::Three => {
                for (id, channel) in self.map_entries(root.get("channels"))? {
                    let channel = self.document.deref(channel)?;
                    let channel = self.channel_v3(&channel, &spec)?;
                    spec.channels.insert(id, channel);
                }
                for (id, operation) in self.map_entries(root.get("operations"))? {
                    let operation = self.document.deref(operation)?;
                    let operation = self.operation_v3(&operation, &spec)?;
                    spec.operations.insert(id, operation);
                }
            }
            Major::Two => {
                for (address, channel) in self.map_entries(root.get("channels"))? {
                    let channel = self.document.deref(channel)?;
                    self.channel_v2(&address, &channel, &mut spec)?;
                }
            }
        }
        Ok(spec)
    }

    // ---- servers ----

    fn server(&self, server: &Located<'a>, major: Major) -> Result<Server, ConfigError> {
        let protocol = self
            .required_string(server, "protocol")?
            .to_ascii_lowercase();
        let variables = self.variables(server)?;
        let (host, pathname) = match major {
            Major::Three => {
                let host = substitute(self.required_string(server, "host")?, &variables);
                let pathname = match server.get("pathname") {
                    Some(pathname) => Some(substitute(self.string(&pathname)?, &variables)),
                    None => None,
                };
                (host, pathname)
            }
            Major::Two => {
                let url = substitute(self.required_string(server, "url")?, &variables);
                let rest = url.split_once("://").map(|(_, rest)| rest).unwrap_or(&url);
                match rest.find('/') {
                    Some(index) => (rest[..index].to_owned(), Some(rest[index..].to_owned())),
                    None => (rest.to_owned(), None),
                }
            }
        };
        let (host, port) = split_host_port(&host);
        Ok(Server {
            protocol,
            host,
            port,
            pathname: pathname.filter(|path| !path.is_empty() && path != "/"),
        })
    }

    /// Server variables and their defaults.
    fn variables(&self, server: &Located<'a>) -> Result<Vec<(String, String)>, ConfigError> {
        let mut variables = Vec::new();
        for (name, variable) in self.map_entries(server.get("variables"))? {
            let variable = self.document.deref(variable)?;
            if let Some(default) = variable.get("default") {
                variables.push((name, self.string(&default)?.to_owned()));
            }
        }
        Ok(variables)
    }

    // ---- channels ----

    fn channel_v3(&self, channel: &Located<'a>, spec: &Spec) -> Result<Channel, ConfigError> {
        let address = match channel.get("address") {
            Some(address) if matches!(address.node.value, NodeValue::Null) => None,
            Some(address) => Some(self.string(&address)?.to_owned()),
            None => None,
        };
        let mut messages = IndexMap::new();
        for (id, message) in self.map_entries(channel.get("messages"))? {
            let message = self.message(message, Some(id.clone()), spec)?;
            messages.insert(id, message);
        }
        self.channel_common(channel, address, messages)
    }

    fn channel_common(
        &self,
        channel: &Located<'a>,
        address: Option<String>,
        messages: IndexMap<String, Message>,
    ) -> Result<Channel, ConfigError> {
        let mut parameters = Vec::new();
        for (name, parameter) in self.map_entries(channel.get("parameters"))? {
            self.document.deref(parameter)?;
            parameters.push(name);
        }
        let bindings = match channel.get("bindings") {
            Some(bindings) => Some(self.document.deref(bindings)?),
            None => None,
        };
        let kafka = match bindings.as_ref().and_then(|bindings| bindings.get("kafka")) {
            Some(kafka) => Some(self.typed::<KafkaChannelBinding>(&self.document.deref(kafka)?)?),
            None => None,
        };
        let mqtt_kafka = match channel.get(CHANNEL_EXTENSION) {
            Some(extension) => Some(self.typed::<MqttKafkaChannel>(&extension)?),
            None => None,
        };
        Ok(Channel {
            address,
            parameters,
            messages,
            kafka,
            mqtt_kafka,
        })
    }

    fn channel_v2(
        &self,
        address: &str,
        channel: &Located<'a>,
        spec: &mut Spec,
    ) -> Result<(), ConfigError> {
        let mut messages = IndexMap::new();
        let mut operations = Vec::new();
        for (verb, action) in [("publish", Action::Send), ("subscribe", Action::Receive)] {
            let Some(operation) = channel.get(verb) else {
                continue;
            };
            let operation = self.document.deref(operation)?;
            let traits = self.traits(&operation)?;
            let id = match operation.get("operationId") {
                Some(id) => self.string(&id)?.to_owned(),
                None => format!("{address}.{verb}"),
            };
            let mut operation_messages = Vec::new();
            if let Some(message) = field(&operation, &traits, "message") {
                let message = self.document.deref(message)?;
                let alternatives = match message.get("oneOf") {
                    Some(one_of) => self.sequence(&one_of)?,
                    None => vec![message],
                };
                for (index, alternative) in alternatives.into_iter().enumerate() {
                    let message = self.message(alternative, None, spec)?;
                    let key = message
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{id}.message{index}"));
                    messages.insert(key.clone(), message.clone());
                    operation_messages.push(Message {
                        id: Some(key),
                        ..message
                    });
                }
            }
            let mut operation = self.operation_common(&operation, &traits, action)?;
            operation.channel = address.to_owned();
            operation.messages = operation_messages;
            operations.push((id, operation));
        }
        let channel = self.channel_common(channel, Some(address.to_owned()), messages)?;
        spec.channels.insert(address.to_owned(), channel);
        for (id, operation) in operations {
            spec.operations.insert(id, operation);
        }
        Ok(())
    }

    // ---- operations ----

    fn operation_v3(&self, operation: &Located<'a>, spec: &Spec) -> Result<Operation, ConfigError> {
        let traits = self.traits(operation)?;
        let action = field(operation, &traits, "action").ok_or_else(|| {
            self.document
                .error(operation.node, &operation.path, "`action` is missing")
        })?;
        let action = match self.string(&action)? {
            "send" => Action::Send,
            "receive" => Action::Receive,
            other => {
                return Err(self.document.error(
                    action.node,
                    &action.path,
                    format!("`action` is `send` or `receive`, not `{other}`"),
                ));
            }
        };
        let channel = field(operation, &traits, "channel").ok_or_else(|| {
            self.document
                .error(operation.node, &operation.path, "`channel` is missing")
        })?;
        let channel_id = self.channel_id(&channel, spec)?;
        let mut result = self.operation_common(operation, &traits, action)?;
        result.channel = channel_id.clone();
        result.messages = match field(operation, &traits, "messages") {
            Some(messages) => {
                let mut list = Vec::new();
                for message in self.sequence(&messages)? {
                    let id = message
                        .reference()
                        .and_then(|reference| reference.rsplit('/').next())
                        .map(str::to_owned);
                    list.push(self.message(message, id, spec)?);
                }
                list
            }
            None => spec
                .channels
                .get(&channel_id)
                .map(|channel| channel.messages.values().cloned().collect())
                .unwrap_or_default(),
        };
        result.reply = match field(operation, &traits, "reply") {
            Some(reply) => {
                let reply = self.document.deref(reply)?;
                let channel = match reply.get("channel") {
                    Some(channel) => Some(self.channel_id(&channel, spec)?),
                    None => None,
                };
                Some(Reply { channel })
            }
            None => None,
        };
        Ok(result)
    }

    /// The id of the channel a 3.0 operation or reply points to (`$ref: '#/channels/<id>'`).
    fn channel_id(&self, channel: &Located<'a>, spec: &Spec) -> Result<String, ConfigError> {
        let reference = channel.reference().ok_or_else(|| {
            self.document.error(
                channel.node,
                &channel.path,
                "`channel` is a `$ref` to one of `#/channels`",
            )
        })?;
        // Resolving proves the target exists (and is no cycle) before reading its id.
        self.document.deref(channel.clone())?;
        let segments = crate::resolve::pointer_segments(reference)
            .map_err(|message| self.document.error(channel.node, &channel.path, message))?;
        match segments.as_slice() {
            [channels, id] if channels == "channels" && spec.channels.contains_key(id) => {
                Ok(id.clone())
            }
            _ => Err(self.document.error(
                channel.node,
                &channel.path,
                format!("`$ref` `{reference}` does not name a channel under `#/channels`"),
            )),
        }
    }

    fn operation_common(
        &self,
        operation: &Located<'a>,
        traits: &[Located<'a>],
        action: Action,
    ) -> Result<Operation, ConfigError> {
        let mut tags = Vec::new();
        if let Some(list) = field(operation, traits, "tags") {
            for tag in self.sequence(&list)? {
                let tag = self.document.deref(tag)?;
                tags.push(self.required_string(&tag, "name")?.to_owned());
            }
        }
        let binding = |name: &str| -> Result<Option<Located<'a>>, ConfigError> {
            for source in std::iter::once(operation).chain(traits.iter().rev()) {
                if let Some(bindings) = source.get("bindings") {
                    let bindings = self.document.deref(bindings)?;
                    if let Some(binding) = bindings.get(name) {
                        return Ok(Some(self.document.deref(binding)?));
                    }
                }
            }
            Ok(None)
        };
        Ok(Operation {
            action,
            channel: String::new(),
            messages: Vec::new(),
            tags,
            http: self.optional_typed::<HttpOperationBinding>(binding("http")?)?,
            mqtt: self.optional_typed::<MqttOperationBinding>(binding("mqtt")?)?,
            http_kafka: self.optional_typed::<ZillaHttpKafka>(binding(OPERATION_EXTENSIONS[0])?)?,
            sse: self.optional_typed::<ZillaSse>(binding(OPERATION_EXTENSIONS[1])?)?,
            sse_kafka: self.optional_typed::<ZillaSseKafka>(binding(OPERATION_EXTENSIONS[2])?)?,
            reply: None,
        })
    }

    /// The traits of an operation or message, resolved, in order.
    fn traits(&self, object: &Located<'a>) -> Result<Vec<Located<'a>>, ConfigError> {
        match object.get("traits") {
            Some(traits) => self
                .sequence(&traits)?
                .into_iter()
                .map(|item| self.document.deref(item))
                .collect(),
            None => Ok(Vec::new()),
        }
    }

    // ---- messages ----

    fn message(
        &self,
        message: Located<'a>,
        id: Option<String>,
        spec: &Spec,
    ) -> Result<Message, ConfigError> {
        let message = self.document.deref(message)?;
        if !message.is_map() {
            return Err(self
                .document
                .error(message.node, &message.path, "a message is a mapping"));
        }
        let traits = self.traits(&message)?;
        let text = |key: &str| -> Result<Option<String>, ConfigError> {
            match field(&message, &traits, key) {
                Some(value) => Ok(Some(self.string(&value)?.to_owned())),
                None => Ok(None),
            }
        };
        let name = text("name")?;
        let content_type = text("contentType")?.or_else(|| spec.default_content_type.clone());
        let schema_format = text("schemaFormat")?;
        let payload = match field(&message, &traits, "payload") {
            Some(payload) => Some(self.payload(payload, schema_format.as_deref())?),
            None => None,
        };
        let correlation_id = match field(&message, &traits, "correlationId") {
            Some(correlation) => {
                let correlation = self.document.deref(correlation)?;
                Some(self.required_string(&correlation, "location")?.to_owned())
            }
            None => None,
        };
        let kafka_key = match field(&message, &traits, "bindings") {
            Some(bindings) => {
                let bindings = self.document.deref(bindings)?;
                match bindings.get("kafka") {
                    Some(kafka) => match self.document.deref(kafka)?.get("key") {
                        Some(key) => Some(bundle(&self.document, key)?),
                        None => None,
                    },
                    None => None,
                }
            }
            None => None,
        };
        Ok(Message {
            id,
            name,
            content_type,
            payload,
            correlation_id,
            kafka_key,
        })
    }

    /// A payload: a schema in the message's `schemaFormat`, or a 3.0 multi-format schema
    /// (`{schemaFormat, schema}`).
    fn payload(&self, payload: Located<'a>, format: Option<&str>) -> Result<Payload, ConfigError> {
        let resolved = self.document.deref(payload.clone())?;
        if let (Some(format), Some(schema)) = (resolved.get("schemaFormat"), resolved.get("schema"))
        {
            return Ok(Payload {
                format: SchemaFormat::of(Some(self.string(&format)?)),
                schema: bundle(&self.document, schema)?,
            });
        }
        Ok(Payload {
            format: SchemaFormat::of(format),
            schema: bundle(&self.document, payload)?,
        })
    }

    // ---- extensions ----

    /// Refuses `x-zilla-*` keys Zilla does not read, or found where it does not read them:
    /// a key the gateway would otherwise skip silently.
    fn check_extensions(&self) -> Result<(), ConfigError> {
        let mut stack = vec![self.document.root()];
        while let Some(located) = stack.pop() {
            for item in located.items() {
                stack.push(item);
            }
            for (key, entry) in located.entries() {
                if key.starts_with("x-zilla-") && !extension_allowed(&key, &located.path) {
                    return Err(self.document.error(
                        entry.node,
                        &entry.path,
                        format!(
                            "`{key}` not supported here: Zilla reads {} in operation `bindings` \
                             and `{CHANNEL_EXTENSION}` on channels",
                            OPERATION_EXTENSIONS.join(", ")
                        ),
                    ));
                }
                stack.push(entry);
            }
        }
        Ok(())
    }

    // ---- typed values ----

    fn string(&self, located: &Located<'a>) -> Result<&'a str, ConfigError> {
        match &located.node.value {
            NodeValue::String(text) => Ok(text),
            _ => Err(self
                .document
                .error(located.node, &located.path, "expected a string")),
        }
    }

    fn required_string(&self, object: &Located<'a>, key: &str) -> Result<&'a str, ConfigError> {
        match object.get(key) {
            Some(value) => self.string(&value),
            None => {
                Err(self
                    .document
                    .error(object.node, &object.path, format!("`{key}` is missing")))
            }
        }
    }

    /// The entries of an optional mapping (after `$ref`), or an error if it is something else.
    fn map_entries(
        &self,
        located: Option<Located<'a>>,
    ) -> Result<Vec<(String, Located<'a>)>, ConfigError> {
        let Some(located) = located else {
            return Ok(Vec::new());
        };
        let located = self.document.deref(located)?;
        match &located.node.value {
            NodeValue::Map(_) => Ok(located.entries()),
            NodeValue::Null => Ok(Vec::new()),
            _ => Err(self
                .document
                .error(located.node, &located.path, "expected a mapping")),
        }
    }

    fn sequence(&self, located: &Located<'a>) -> Result<Vec<Located<'a>>, ConfigError> {
        match &located.node.value {
            NodeValue::Seq(_) => Ok(located.items()),
            _ => Err(self
                .document
                .error(located.node, &located.path, "expected a list")),
        }
    }

    /// Deserializes a binding or extension object, errors located at it.
    fn typed<T: DeserializeOwned>(&self, located: &Located<'a>) -> Result<T, ConfigError> {
        serde_json::from_value(located.node.to_json()).map_err(|error| {
            self.document
                .error(located.node, &located.path, error.to_string())
        })
    }

    fn optional_typed<T: DeserializeOwned>(
        &self,
        located: Option<Located<'a>>,
    ) -> Result<Option<T>, ConfigError> {
        located.map(|located| self.typed(&located)).transpose()
    }
}

/// `key` of `object`, else of the last trait that has it (traits apply in order, and the
/// object's own fields win).
fn field<'a>(object: &Located<'a>, traits: &[Located<'a>], key: &str) -> Option<Located<'a>> {
    object
        .get(key)
        .or_else(|| traits.iter().rev().find_map(|item| item.get(key)))
}

/// Whether an `x-zilla-*` key at `parent` is one Zilla reads there.
fn extension_allowed(key: &str, parent: &str) -> bool {
    if OPERATION_EXTENSIONS.contains(&key) {
        return parent == "bindings" || parent.ends_with(".bindings");
    }
    if key == CHANNEL_EXTENSION {
        let segments: Vec<&str> = parent.split('.').collect();
        return matches!(
            segments.as_slice(),
            ["channels", _] | ["components", "channels", _]
        );
    }
    false
}

/// The major version of an `asyncapi` version string we read.
fn major(version: &str) -> Option<Major> {
    let mut parts = version.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let patch_ok = parts
        .next()
        .is_none_or(|patch| !patch.is_empty() && patch.chars().all(|c| c.is_ascii_digit()));
    if !patch_ok || parts.next().is_some() {
        return None;
    }
    match (major, minor) {
        ("2", "0" | "1" | "2" | "3" | "4" | "5" | "6") => Some(Major::Two),
        ("3", "0") => Some(Major::Three),
        _ => None,
    }
}

/// Replaces `{name}` with each variable's default.
fn substitute(text: &str, variables: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (name, value) in variables {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

/// `host:port` → host and port; `[::1]:80` too. A port that is not a number (an unresolved
/// variable) is left in the host.
pub(crate) fn split_host_port(host: &str) -> (String, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((address, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|port| port.parse().ok());
        return (address.to_owned(), port);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse::<u16>() {
            Ok(port) => (name.to_owned(), Some(port)),
            Err(_) => (host.to_owned(), None),
        },
        _ => (host.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read() {
        assert_eq!(major("3.0.0"), Some(Major::Three));
        assert_eq!(major("2.6.0"), Some(Major::Two));
        assert_eq!(major("2.0.0"), Some(Major::Two));
        assert_eq!(major("3.1.0"), None);
        assert_eq!(major("1.2.0"), None);
        assert_eq!(major("3.0.0.1"), None);
        assert_eq!(major("3"), None);
    }

    #[test]
    fn hosts_split() {
        assert_eq!(
            split_host_port("localhost:1883"),
            ("localhost".into(), Some(1883))
        );
        assert_eq!(split_host_port("[::1]:80"), ("::1".into(), Some(80)));
        assert_eq!(split_host_port("example.com"), ("example.com".into(), None));
        assert_eq!(split_host_port("h:{port}"), ("h:{port}".into(), None));
    }

    #[test]
    fn extensions_allowed_where_zilla_reads_them() {
        assert!(extension_allowed("x-zilla-sse", "operations.a.bindings"));
        assert!(extension_allowed("x-zilla-mqtt-kafka", "channels.a"));
        assert!(!extension_allowed("x-zilla-mqtt-kafka", "operations.a"));
        assert!(!extension_allowed("x-zilla-other", "operations.a.bindings"));
    }
}
