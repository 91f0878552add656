//! A structural check of response (and, for the proxy, request) bytes against Kafka's own
//! message schemas, run before the typed decoder sees them.
//!
//! The typed decoder reserves `Vec` capacity from array counts read off the wire before it
//! decodes any element, so a few hostile or corrupt bytes announcing two billion elements make
//! the allocator abort the process. This walk reads the same fields in the same order without
//! allocating, and refuses any array, string or byte field that announces more than the bytes
//! left; a response that passes has array counts backed by real elements.
//!
//! The schemas are Apache Kafka's message definitions (`schemas/*Response.json`, Apache-2.0),
//! interpreted at first use.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// An inclusive version range; `min > max` is the empty range (`"none"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Versions {
    pub min: i16,
    pub max: i16,
}

impl Versions {
    const NONE: Self = Self { min: 1, max: 0 };

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "none" {
            return Ok(Self::NONE);
        }
        let number = |s: &str| {
            s.parse::<i16>()
                .map_err(|_| format!("bad version range {text:?}"))
        };
        if let Some(min) = text.strip_suffix('+') {
            Ok(Self {
                min: number(min)?,
                max: i16::MAX,
            })
        } else if let Some((min, max)) = text.split_once('-') {
            Ok(Self {
                min: number(min)?,
                max: number(max)?,
            })
        } else {
            let version = number(text)?;
            Ok(Self {
                min: version,
                max: version,
            })
        }
    }

    pub fn contains(self, version: i16) -> bool {
        self.min <= version && version <= self.max
    }
}

#[derive(Debug)]
enum Type {
    Bool,
    Int8,
    Int16,
    Uint16,
    Int32,
    Int64,
    Float64,
    Uuid,
    String,
    Bytes,
    Records,
    Struct(Vec<Field>),
    Array(Box<Type>),
}

#[derive(Debug)]
struct Field {
    name: String,
    ty: Type,
    versions: Versions,
    nullable: Versions,
    tagged: Option<(Versions, u64)>,
}

impl Field {
    fn tagged_in(&self, version: i16) -> bool {
        self.tagged
            .is_some_and(|(versions, _)| versions.contains(version))
    }
}

/// One response message: which versions exist, which are flexible, and the fields.
#[derive(Debug)]
pub(crate) struct MessageSchema {
    pub api_key: i16,
    pub valid: Versions,
    flexible: Versions,
    fields: Vec<Field>,
}

const SOURCES: &[(&str, &str)] = &[
    (
        "ApiVersions",
        include_str!("schemas/ApiVersionsResponse.json"),
    ),
    ("Metadata", include_str!("schemas/MetadataResponse.json")),
    ("Produce", include_str!("schemas/ProduceResponse.json")),
    ("Fetch", include_str!("schemas/FetchResponse.json")),
    (
        "ListOffsets",
        include_str!("schemas/ListOffsetsResponse.json"),
    ),
    (
        "DescribeConfigs",
        include_str!("schemas/DescribeConfigsResponse.json"),
    ),
    (
        "FindCoordinator",
        include_str!("schemas/FindCoordinatorResponse.json"),
    ),
    ("JoinGroup", include_str!("schemas/JoinGroupResponse.json")),
    ("SyncGroup", include_str!("schemas/SyncGroupResponse.json")),
    ("Heartbeat", include_str!("schemas/HeartbeatResponse.json")),
    (
        "LeaveGroup",
        include_str!("schemas/LeaveGroupResponse.json"),
    ),
    (
        "OffsetFetch",
        include_str!("schemas/OffsetFetchResponse.json"),
    ),
    (
        "OffsetCommit",
        include_str!("schemas/OffsetCommitResponse.json"),
    ),
    (
        "InitProducerId",
        include_str!("schemas/InitProducerIdResponse.json"),
    ),
    (
        "CreateTopics",
        include_str!("schemas/CreateTopicsResponse.json"),
    ),
    (
        "DeleteTopics",
        include_str!("schemas/DeleteTopicsResponse.json"),
    ),
    (
        "SaslHandshake",
        include_str!("schemas/SaslHandshakeResponse.json"),
    ),
    (
        "SaslAuthenticate",
        include_str!("schemas/SaslAuthenticateResponse.json"),
    ),
    (
        "DeleteRecords",
        include_str!("schemas/DeleteRecordsResponse.json"),
    ),
    (
        "CreatePartitions",
        include_str!("schemas/CreatePartitionsResponse.json"),
    ),
    (
        "OffsetForLeaderEpoch",
        include_str!("schemas/OffsetForLeaderEpochResponse.json"),
    ),
    (
        "DescribeGroups",
        include_str!("schemas/DescribeGroupsResponse.json"),
    ),
    (
        "TxnOffsetCommit",
        include_str!("schemas/TxnOffsetCommitResponse.json"),
    ),
    (
        "AlterConfigs",
        include_str!("schemas/AlterConfigsResponse.json"),
    ),
    (
        "IncrementalAlterConfigs",
        include_str!("schemas/IncrementalAlterConfigsResponse.json"),
    ),
];

/// The requests the kafka proxy looks into: the SASL exchange it answers itself, and the ones
/// naming topics it checks against a topic allow-list.
const REQUEST_SOURCES: &[(&str, &str)] = &[
    ("Metadata", include_str!("schemas/MetadataRequest.json")),
    ("Produce", include_str!("schemas/ProduceRequest.json")),
    ("Fetch", include_str!("schemas/FetchRequest.json")),
    (
        "ListOffsets",
        include_str!("schemas/ListOffsetsRequest.json"),
    ),
    (
        "OffsetCommit",
        include_str!("schemas/OffsetCommitRequest.json"),
    ),
    (
        "OffsetFetch",
        include_str!("schemas/OffsetFetchRequest.json"),
    ),
    (
        "OffsetForLeaderEpoch",
        include_str!("schemas/OffsetForLeaderEpochRequest.json"),
    ),
    (
        "CreateTopics",
        include_str!("schemas/CreateTopicsRequest.json"),
    ),
    (
        "DeleteTopics",
        include_str!("schemas/DeleteTopicsRequest.json"),
    ),
    (
        "DeleteRecords",
        include_str!("schemas/DeleteRecordsRequest.json"),
    ),
    (
        "CreatePartitions",
        include_str!("schemas/CreatePartitionsRequest.json"),
    ),
    (
        "DescribeConfigs",
        include_str!("schemas/DescribeConfigsRequest.json"),
    ),
    (
        "TxnOffsetCommit",
        include_str!("schemas/TxnOffsetCommitRequest.json"),
    ),
    (
        "AddPartitionsToTxn",
        include_str!("schemas/AddPartitionsToTxnRequest.json"),
    ),
    (
        "AlterConfigs",
        include_str!("schemas/AlterConfigsRequest.json"),
    ),
    (
        "IncrementalAlterConfigs",
        include_str!("schemas/IncrementalAlterConfigsRequest.json"),
    ),
    (
        "SaslHandshake",
        include_str!("schemas/SaslHandshakeRequest.json"),
    ),
    (
        "SaslAuthenticate",
        include_str!("schemas/SaslAuthenticateRequest.json"),
    ),
];

type Schemas = Result<HashMap<i16, MessageSchema>, String>;

fn parse_all(sources: &[(&str, &str)]) -> Schemas {
    let mut schemas = HashMap::new();
    for (name, source) in sources {
        let schema = parse_message(source).map_err(|e| format!("{name} schema: {e}"))?;
        schemas.insert(schema.api_key, schema);
    }
    Ok(schemas)
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| parse_all(SOURCES))
}

fn request_schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| parse_all(REQUEST_SOURCES))
}

fn lookup(
    schemas: &'static Schemas,
    api_key: i16,
    what: &str,
) -> Result<&'static MessageSchema, String> {
    schemas
        .as_ref()
        .map_err(Clone::clone)?
        .get(&api_key)
        .ok_or_else(|| format!("no {what} schema for API key {api_key}"))
}

/// The response schema of an API key.
pub(crate) fn schema(api_key: i16) -> Result<&'static MessageSchema, String> {
    lookup(schemas(), api_key, "response")
}

/// The request schema of an API key, for the requests the proxy looks into.
pub(crate) fn request_schema(api_key: i16) -> Result<&'static MessageSchema, String> {
    lookup(request_schemas(), api_key, "request")
}

fn parse_message(source: &str) -> Result<MessageSchema, String> {
    // The files carry `//` line comments (license and version history), which JSON lacks.
    let json: String = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let value: Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    let api_key = value
        .get("apiKey")
        .and_then(Value::as_i64)
        .and_then(|k| i16::try_from(k).ok())
        .ok_or("missing apiKey")?;
    let valid = Versions::parse(string_of(&value, "validVersions")?)?;
    let flexible = Versions::parse(string_of(&value, "flexibleVersions")?)?;
    // Structs several fields share are named once, under `commonStructs`.
    let common = value.get("commonStructs").cloned().unwrap_or(Value::Null);
    let fields = parse_fields(&value, &common)?;
    Ok(MessageSchema {
        api_key,
        valid,
        flexible,
        fields,
    })
}

fn string_of<'a>(value: &'a Value, key: &str) -> Result<&'a str, String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing {key}"))
}

fn parse_fields(value: &Value, common: &Value) -> Result<Vec<Field>, String> {
    let Some(fields) = value.get("fields") else {
        return Ok(Vec::new());
    };
    let fields = fields.as_array().ok_or("fields is not an array")?;
    fields
        .iter()
        .map(|field| parse_field(field, common))
        .collect()
}

fn parse_field(value: &Value, common: &Value) -> Result<Field, String> {
    let name = string_of(value, "name")?.to_owned();
    let type_name = string_of(value, "type")?;
    let versions = Versions::parse(string_of(value, "versions")?)?;
    let nullable = match value.get("nullableVersions").and_then(Value::as_str) {
        Some(text) => Versions::parse(text)?,
        None => Versions::NONE,
    };
    let tagged = match value.get("taggedVersions").and_then(Value::as_str) {
        Some(text) => {
            let tag = value
                .get("tag")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{name}: tagged field without tag"))?;
            Some((Versions::parse(text)?, tag))
        }
        None => None,
    };
    let ty = parse_type(type_name, value, common).map_err(|e| format!("{name}: {e}"))?;
    Ok(Field {
        name,
        ty,
        versions,
        nullable,
        tagged,
    })
}

fn parse_type(type_name: &str, value: &Value, common: &Value) -> Result<Type, String> {
    if let Some(element) = type_name.strip_prefix("[]") {
        return Ok(Type::Array(Box::new(parse_type(element, value, common)?)));
    }
    let shared = || {
        common
            .as_array()?
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(type_name))
    };
    Ok(match type_name {
        "bool" => Type::Bool,
        "int8" => Type::Int8,
        "int16" => Type::Int16,
        "uint16" => Type::Uint16,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "float64" => Type::Float64,
        "uuid" => Type::Uuid,
        "string" => Type::String,
        "bytes" => Type::Bytes,
        "records" => Type::Records,
        _ if value.get("fields").is_some() => Type::Struct(parse_fields(value, common)?),
        other => match shared() {
            Some(shared) => Type::Struct(parse_fields(shared, common)?),
            None => return Err(format!("unsupported type {other}")),
        },
    })
}

/// Checks a response body (after the response header) of `api_key` at `version`.
pub(crate) fn check(api_key: i16, version: i16, body: &[u8]) -> Result<(), String> {
    walk_message(schema(api_key)?, version, body)
}

/// Checks a request body (after the request header) of `api_key` at `version`.
pub(crate) fn check_request(api_key: i16, version: i16, body: &[u8]) -> Result<(), String> {
    walk_message(request_schema(api_key)?, version, body)
}

fn walk_message(schema: &MessageSchema, version: i16, body: &[u8]) -> Result<(), String> {
    if !schema.valid.contains(version) {
        return Err(format!("version {version} is not known"));
    }
    let mut walker = Walker {
        bytes: body,
        version,
        flexible: schema.flexible.contains(version),
    };
    walker.fields(&schema.fields)
}

/// Skips the tagged fields that end a flexible response header.
pub(crate) fn skip_tagged_fields(bytes: &[u8]) -> Result<usize, String> {
    let mut walker = Walker {
        bytes,
        version: 0,
        flexible: true,
    };
    walker.fields(&[])?;
    Ok(bytes.len() - walker.bytes.len())
}

struct Walker<'a> {
    bytes: &'a [u8],
    version: i16,
    flexible: bool,
}

impl Walker<'_> {
    fn skip(&mut self, count: usize, what: &str) -> Result<(), String> {
        if count > self.bytes.len() {
            return Err(format!(
                "{what}: {count} bytes announced, {} left",
                self.bytes.len()
            ));
        }
        self.bytes = &self.bytes[count..];
        Ok(())
    }

    fn int(&mut self, width: usize, what: &str) -> Result<i64, String> {
        let Some((head, rest)) = self.bytes.split_at_checked(width) else {
            return Err(format!("{what}: truncated"));
        };
        self.bytes = rest;
        Ok(head
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)) as i64)
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        Ok(self.int(2, what)? as i16)
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        Ok(self.int(4, what)? as i32)
    }

    fn uvarint(&mut self, what: &str) -> Result<u64, String> {
        let mut value = 0u64;
        for (index, byte) in self.bytes.iter().enumerate().take(5) {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[index + 1..];
                if value > u64::from(u32::MAX) {
                    return Err(format!("{what}: varint overflows 32 bits"));
                }
                return Ok(value);
            }
        }
        Err(format!("{what}: bad or truncated varint"))
    }

    /// A length prefix: `None` for null.
    fn length(&mut self, compact: bool, wide: bool, what: &str) -> Result<Option<usize>, String> {
        if compact {
            let n = self.uvarint(what)?;
            return Ok(n.checked_sub(1).map(|n| n as usize));
        }
        let n = if wide {
            i64::from(self.i32(what)?)
        } else {
            i64::from(self.i16(what)?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(format!("{what}: negative length {n}")),
            n => Ok(Some(n as usize)),
        }
    }

    fn fields(&mut self, fields: &[Field]) -> Result<(), String> {
        for field in fields {
            if field.versions.contains(self.version) && !field.tagged_in(self.version) {
                self.value(field)?;
            }
        }
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint("tagged field count")?;
        for _ in 0..count {
            let tag = self.uvarint("tag")?;
            let size = self.uvarint("tagged field size")? as usize;
            let known = fields
                .iter()
                .find(|f| f.tagged.is_some_and(|(_, t)| t == tag));
            match known {
                Some(field) if field.tagged_in(self.version) => {
                    // Known tags are decoded in place, so their content must fill the size.
                    let before = self.bytes.len();
                    self.value(field)?;
                    if before - self.bytes.len() != size {
                        return Err(format!("{}: tagged size mismatch", field.name));
                    }
                }
                Some(field) => {
                    return Err(format!(
                        "{}: tag {tag} not valid in this version",
                        field.name
                    ));
                }
                None => self.skip(size, "unknown tagged field")?,
            }
        }
        Ok(())
    }

    fn value(&mut self, field: &Field) -> Result<(), String> {
        let nullable = field.nullable.contains(self.version);
        self.typed(&field.ty, nullable, &field.name)
    }

    fn typed(&mut self, ty: &Type, nullable: bool, name: &str) -> Result<(), String> {
        let compact = self.flexible;
        match ty {
            Type::Bool | Type::Int8 => self.skip(1, name),
            Type::Int16 | Type::Uint16 => self.skip(2, name),
            Type::Int32 => self.skip(4, name),
            Type::Int64 | Type::Float64 => self.skip(8, name),
            Type::Uuid => self.skip(16, name),
            Type::String | Type::Bytes | Type::Records => {
                let wide = !matches!(ty, Type::String);
                match self.length(compact, wide, name)? {
                    Some(len) => {
                        let start = self.bytes;
                        self.skip(len, name)?;
                        if matches!(ty, Type::String) && std::str::from_utf8(&start[..len]).is_err()
                        {
                            return Err(format!("{name}: not UTF-8"));
                        }
                        Ok(())
                    }
                    None if nullable => Ok(()),
                    None => Err(format!("{name}: null where not nullable")),
                }
            }
            Type::Array(element) => match self.length(compact, true, name)? {
                Some(count) => {
                    // Every element takes at least one byte on the wire.
                    if count > self.bytes.len() {
                        return Err(format!(
                            "{name}: {count} elements announced, {} bytes left",
                            self.bytes.len()
                        ));
                    }
                    for _ in 0..count {
                        self.typed(element, false, name)?;
                    }
                    Ok(())
                }
                None if nullable => Ok(()),
                None => Err(format!("{name}: null array where not nullable")),
            },
            Type::Struct(fields) => {
                if nullable {
                    return Err(format!("{name}: nullable structs are not supported"));
                }
                self.fields(fields)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_parses() {
        let schemas = schemas().as_ref().expect("schemas parse");
        assert_eq!(schemas.len(), SOURCES.len());
        for schema in schemas.values() {
            assert!(schema.valid.min <= schema.valid.max);
        }
        let requests = request_schemas().as_ref().expect("request schemas parse");
        assert_eq!(requests.len(), REQUEST_SOURCES.len());
    }

    #[test]
    fn version_ranges() {
        assert_eq!(
            Versions::parse("3+").unwrap(),
            Versions {
                min: 3,
                max: i16::MAX
            }
        );
        assert_eq!(Versions::parse("0-7").unwrap(), Versions { min: 0, max: 7 });
        assert_eq!(Versions::parse("4").unwrap(), Versions { min: 4, max: 4 });
        assert!(!Versions::parse("none").unwrap().contains(0));
    }

    #[test]
    fn huge_array_count_is_refused_without_allocating() {
        // Metadata v1: brokers array announcing i32::MAX elements in 8 bytes.
        let body = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let error = check(3, 1, &body).unwrap_err();
        assert!(error.contains("elements announced"), "{error}");
    }

    #[test]
    fn truncated_body_is_refused() {
        assert!(check(18, 0, &[0, 0]).is_err());
        assert!(check(18, 0, &[0, 0, 0, 0, 0, 0]).is_ok());
    }
}
