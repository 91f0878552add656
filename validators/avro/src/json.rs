//! Avro values to and from JSON text in the Avro specification's JSON encoding (what
//! Apache Avro's `JsonEncoder`/`JsonDecoder`, and so Zilla, read and write): records as
//! objects, `bytes` and `fixed` as strings of code points 0-255, enums as their symbol, and a
//! non-null union branch wrapped in an object naming its type (`{"string": "a"}`), `null`
//! bare. Logical types travel as their underlying type (`date` as an int, `uuid` as a
//! string, `decimal` as bytes).
//!
//! Written here because apache-avro's own JSON conversions are schema-blind: they cannot
//! tell a record from a map or pick a union branch by name.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, UnionSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;

/// How deep JSON or Avro values may nest: recursive schemas are legal, stacks are finite.
pub const MAX_DEPTH: usize = 64;

/// Resolves named-type references while walking a schema.
pub struct Walker<'a> {
    names: &'a HashMap<Name, Schema>,
}

impl<'a> Walker<'a> {
    /// A walker over the named types of one schema.
    pub fn new(names: &'a HashMap<Name, Schema>) -> Self {
        Self { names }
    }

    fn named(&self, name: &Name) -> Result<&'a Schema, String> {
        self.names
            .get(name)
            .ok_or_else(|| format!("unknown type `{}`", name.fullname(None)))
    }

    /// The Avro value `json` stands for under `schema`.
    pub fn json_to_value(
        &self,
        json: &Json,
        schema: &Schema,
        depth: usize,
    ) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deep".to_owned());
        }
        let mismatch = || format!("expected {}, found {}", type_name(schema), json_kind(json));
        Ok(match schema {
            Schema::Null => match json {
                Json::Null => Value::Null,
                _ => return Err(mismatch()),
            },
            Schema::Boolean => Value::Boolean(json.as_bool().ok_or_else(mismatch)?),
            Schema::Int => Value::Int(int(json).ok_or_else(mismatch)?),
            Schema::Long => Value::Long(json.as_i64().ok_or_else(mismatch)?),
            Schema::Float => Value::Float(json.as_f64().ok_or_else(mismatch)? as f32),
            Schema::Double => Value::Double(json.as_f64().ok_or_else(mismatch)?),
            Schema::Bytes => Value::Bytes(latin1(json).ok_or_else(mismatch)?),
            Schema::String => Value::String(json.as_str().ok_or_else(mismatch)?.to_owned()),
            Schema::Fixed(fixed) => {
                let bytes = latin1(json).ok_or_else(mismatch)?;
                if bytes.len() != fixed.size {
                    return Err(format!(
                        "expected {} bytes, found {}",
                        fixed.size,
                        bytes.len()
                    ));
                }
                Value::Fixed(fixed.size, bytes)
            }
            Schema::Enum(enumeration) => {
                let symbol = json.as_str().ok_or_else(mismatch)?;
                let index = enumeration
                    .symbols
                    .iter()
                    .position(|known| known == symbol)
                    .ok_or_else(|| format!("`{symbol}` is not a symbol of the enum"))?;
                Value::Enum(index as u32, symbol.to_owned())
            }
            Schema::Array(array) => {
                let items = json.as_array().ok_or_else(mismatch)?;
                let mut values = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    values.push(
                        self.json_to_value(item, &array.items, depth + 1)
                            .map_err(|error| at(&index.to_string(), error))?,
                    );
                }
                Value::Array(values)
            }
            Schema::Map(map) => {
                let entries = json.as_object().ok_or_else(mismatch)?;
                let mut values = HashMap::with_capacity(entries.len());
                for (key, item) in entries {
                    values.insert(
                        key.clone(),
                        self.json_to_value(item, &map.types, depth + 1)
                            .map_err(|error| at(key, error))?,
                    );
                }
                Value::Map(values)
            }
            Schema::Record(record) => {
                let object = json.as_object().ok_or_else(mismatch)?;
                if let Some(unknown) = object
                    .keys()
                    .find(|key| !record.fields.iter().any(|field| &field.name == *key))
                {
                    return Err(format!(
                        "`{unknown}` is not a field of `{}`",
                        record.name.fullname(None)
                    ));
                }
                let mut fields = Vec::with_capacity(record.fields.len());
                for field in &record.fields {
                    let value = match (object.get(&field.name), &field.default) {
                        (Some(value), _) => self.json_to_value(value, &field.schema, depth + 1),
                        (None, Some(default)) => {
                            self.default_to_value(default, &field.schema, depth + 1)
                        }
                        (None, None) => Err("missing".to_owned()),
                    }
                    .map_err(|error| at(&field.name, error))?;
                    fields.push((field.name.clone(), value));
                }
                Value::Record(fields)
            }
            Schema::Union(union) => self.union_to_value(json, union, depth)?,
            Schema::Ref { name } => self.json_to_value(json, self.named(name)?, depth + 1)?,
            Schema::Date => Value::Date(int(json).ok_or_else(mismatch)?),
            Schema::TimeMillis => Value::TimeMillis(int(json).ok_or_else(mismatch)?),
            Schema::TimeMicros => Value::TimeMicros(json.as_i64().ok_or_else(mismatch)?),
            Schema::TimestampMillis => Value::TimestampMillis(json.as_i64().ok_or_else(mismatch)?),
            Schema::TimestampMicros => Value::TimestampMicros(json.as_i64().ok_or_else(mismatch)?),
            Schema::TimestampNanos => Value::TimestampNanos(json.as_i64().ok_or_else(mismatch)?),
            Schema::LocalTimestampMillis => {
                Value::LocalTimestampMillis(json.as_i64().ok_or_else(mismatch)?)
            }
            Schema::LocalTimestampMicros => {
                Value::LocalTimestampMicros(json.as_i64().ok_or_else(mismatch)?)
            }
            Schema::LocalTimestampNanos => {
                Value::LocalTimestampNanos(json.as_i64().ok_or_else(mismatch)?)
            }
            Schema::Uuid(_) => {
                let text = json.as_str().ok_or_else(mismatch)?;
                Value::Uuid(
                    apache_avro::Uuid::parse_str(text)
                        .map_err(|_| format!("`{text}` is not a UUID"))?,
                )
            }
            Schema::Decimal(_) => Value::Decimal(apache_avro::Decimal::from(
                latin1(json).ok_or_else(mismatch)?,
            )),
            Schema::Duration(_) => {
                let bytes = latin1(json).ok_or_else(mismatch)?;
                let bytes: [u8; 12] = bytes
                    .try_into()
                    .map_err(|_| "expected a 12-byte duration".to_owned())?;
                Value::Duration(apache_avro::Duration::from(bytes))
            }
            Schema::BigDecimal => {
                return Err("the `big-decimal` logical type is not supported".to_owned());
            }
        })
    }

    /// A field default: written as JSON like a value, except that a union's default is for
    /// its first branch, unwrapped.
    fn default_to_value(
        &self,
        json: &Json,
        schema: &Schema,
        depth: usize,
    ) -> Result<Value, String> {
        match schema {
            Schema::Union(union) => {
                let first = union
                    .variants()
                    .first()
                    .ok_or_else(|| "an empty union has no default".to_owned())?;
                Ok(Value::Union(
                    0,
                    Box::new(self.json_to_value(json, first, depth + 1)?),
                ))
            }
            _ => self.json_to_value(json, schema, depth),
        }
    }

    fn union_to_value(
        &self,
        json: &Json,
        union: &UnionSchema,
        depth: usize,
    ) -> Result<Value, String> {
        let branches = union.variants();
        if json.is_null() {
            let index = branches
                .iter()
                .position(|branch| matches!(branch, Schema::Null))
                .ok_or_else(|| "null is not a branch of the union".to_owned())?;
            return Ok(Value::Union(index as u32, Box::new(Value::Null)));
        }
        let wrapped = json
            .as_object()
            .filter(|object| object.len() == 1)
            .and_then(|object| object.iter().next())
            .ok_or_else(|| {
                "a union value is null or an object with one member naming its branch".to_owned()
            })?;
        let (name, inner) = wrapped;
        let index = branches
            .iter()
            .position(|branch| self.branch_name(branch) == *name)
            .ok_or_else(|| format!("`{name}` is not a branch of the union"))?;
        let value = self
            .json_to_value(inner, &branches[index], depth + 1)
            .map_err(|error| at(name, error))?;
        Ok(Value::Union(index as u32, Box::new(value)))
    }

    /// The name a union branch goes by in JSON.
    fn branch_name(&self, schema: &Schema) -> String {
        match schema {
            Schema::Record(record) => record.name.fullname(None),
            Schema::Enum(enumeration) => enumeration.name.fullname(None),
            Schema::Fixed(fixed) | Schema::Duration(fixed) => fixed.name.fullname(None),
            Schema::Ref { name } => name.fullname(None),
            Schema::Decimal(decimal) => match &decimal.inner {
                apache_avro::schema::InnerDecimalSchema::Fixed(fixed) => fixed.name.fullname(None),
                apache_avro::schema::InnerDecimalSchema::Bytes => "bytes".to_owned(),
            },
            other => type_name(other).to_owned(),
        }
    }

    /// The JSON for `value` under `schema`.
    pub fn value_to_json(
        &self,
        value: &Value,
        schema: &Schema,
        depth: usize,
    ) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deep".to_owned());
        }
        if let Schema::Ref { name } = schema {
            return self.value_to_json(value, self.named(name)?, depth + 1);
        }
        Ok(match (value, schema) {
            (Value::Null, _) => Json::Null,
            (Value::Boolean(b), _) => Json::Bool(*b),
            (Value::Int(n) | Value::Date(n) | Value::TimeMillis(n), _) => Json::from(*n),
            (
                Value::Long(n)
                | Value::TimeMicros(n)
                | Value::TimestampMillis(n)
                | Value::TimestampMicros(n)
                | Value::TimestampNanos(n)
                | Value::LocalTimestampMillis(n)
                | Value::LocalTimestampMicros(n)
                | Value::LocalTimestampNanos(n),
                _,
            ) => Json::from(*n),
            (Value::Float(n), _) => number(f64::from(*n))?,
            (Value::Double(n), _) => number(*n)?,
            (Value::Bytes(bytes) | Value::Fixed(_, bytes), _) => Json::String(to_latin1(bytes)),
            (Value::String(text), _) => Json::String(text.clone()),
            (Value::Uuid(uuid), _) => Json::String(uuid.as_hyphenated().to_string()),
            (Value::Enum(_, symbol), _) => Json::String(symbol.clone()),
            (Value::Decimal(decimal), _) => {
                let bytes: Vec<u8> = decimal
                    .try_into()
                    .map_err(|_| "a decimal too large".to_owned())?;
                Json::String(to_latin1(&bytes))
            }
            (Value::Duration(duration), _) => {
                let bytes: [u8; 12] = (*duration).into();
                Json::String(to_latin1(&bytes))
            }
            (Value::Array(items), Schema::Array(array)) => Json::Array(
                items
                    .iter()
                    .map(|item| self.value_to_json(item, &array.items, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            (Value::Map(entries), Schema::Map(map)) => {
                // Sorted keys: the same record always gives the same text.
                let mut keys: Vec<&String> = entries.keys().collect();
                keys.sort();
                let mut object = serde_json::Map::with_capacity(entries.len());
                for key in keys {
                    object.insert(
                        key.clone(),
                        self.value_to_json(&entries[key], &map.types, depth + 1)?,
                    );
                }
                Json::Object(object)
            }
            (Value::Record(fields), Schema::Record(record)) => {
                let mut object = serde_json::Map::with_capacity(fields.len());
                for ((name, value), field) in fields.iter().zip(&record.fields) {
                    object.insert(
                        name.clone(),
                        self.value_to_json(value, &field.schema, depth + 1)?,
                    );
                }
                Json::Object(object)
            }
            (Value::Union(index, inner), Schema::Union(union)) => {
                let branch = union
                    .variants()
                    .get(*index as usize)
                    .ok_or_else(|| format!("union branch {index} does not exist"))?;
                if matches!(**inner, Value::Null) {
                    Json::Null
                } else {
                    let mut object = serde_json::Map::with_capacity(1);
                    object.insert(
                        self.branch_name(branch),
                        self.value_to_json(inner, branch, depth + 1)?,
                    );
                    Json::Object(object)
                }
            }
            (value, schema) => {
                return Err(format!(
                    "a {} value does not fit {}",
                    value_kind(value),
                    type_name(schema)
                ));
            }
        })
    }
}

/// `error` found under `segment`: nested locations join into one JSON-pointer-like path
/// (`/tags/1: expected string`).
fn at(segment: &str, error: String) -> String {
    if error.starts_with('/') {
        format!("/{segment}{error}")
    } else {
        format!("/{segment}: {error}")
    }
}

fn int(json: &Json) -> Option<i32> {
    json.as_i64().and_then(|n| i32::try_from(n).ok())
}

fn number(value: f64) -> Result<Json, String> {
    serde_json::Number::from_f64(value)
        .map(Json::Number)
        .ok_or_else(|| "NaN and infinities have no JSON form".to_owned())
}

/// Bytes as JSON text: each byte one code point (ISO-8859-1), as the Avro spec says.
fn latin1(json: &Json) -> Option<Vec<u8>> {
    json.as_str()?
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

fn to_latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| char::from(*byte)).collect()
}

fn type_name(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int | Schema::Date | Schema::TimeMillis => "int",
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes | Schema::BigDecimal => "bytes",
        Schema::String => "string",
        Schema::Uuid(apache_avro::schema::UuidSchema::String) => "string",
        Schema::Uuid(apache_avro::schema::UuidSchema::Bytes) => "bytes",
        Schema::Uuid(_) | Schema::Fixed(_) | Schema::Duration(_) => "fixed",
        Schema::Decimal(_) => "bytes",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Union(_) => "union",
        Schema::Record(_) => "record",
        Schema::Enum(_) => "enum",
        Schema::Ref { .. } => "named type",
    }
}

fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::Union(..) => "union",
        _ => "scalar",
    }
}
