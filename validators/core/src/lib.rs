//! The core models, Zilla's `model-core`: `string`, `int32`, `int64`, `float`, `double`,
//! `boolean` and `bytes`. They check single values, typically HTTP header, path and query
//! parameter values, or Kafka record keys. One crate holds them all because they share
//! their event (`MODEL_CORE_VALIDATION_FAILED`), the `range` syntax and the `validate`
//! handling, as in Zilla.
//!
//! ```yaml
//! name: example
//! bindings:
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       requests:
//!         - path: /items/{id}
//!           headers:
//!             x-tenant:
//!               model: string
//!               pattern: "[a-z]+"
//!               maxLength: 16
//!           params:
//!             path:
//!               id:
//!                 model: int32
//!                 range: "[1,)"
//!             query:
//!               limit:
//!                 model: int32
//!                 range: "[1,100]"
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Models and their keys (all also take `validate`):
//! - `string`: `encoding` `utf_8` (default) or `utf_16` (big-endian unless a byte order mark
//!   says otherwise); `minLength` / `maxLength` in bytes of the encoded text, as Zilla counts;
//!   `pattern`, a regular expression the whole text must match.
//! - `int32`, `int64`: `format` `text` (default: optional `-` and decimal digits, nothing
//!   else) or `binary` (big-endian, exactly 4 or 8 bytes); `range` in interval syntax
//!   (`[0,100)`, `(,10]`); `multiple`.
//! - `float`, `double`: as integers, with decimal text (`-1.5`, `2e10`; not `NaN` or
//!   `Infinity`) or binary IEEE 754; `range` bounds may have decimals; `multiple` allows a
//!   relative rounding error of 1e-9, since decimal multiples are rarely exact in binary.
//! - `boolean`: one byte, `0x00` or `0x01` (Zilla's binary form).
//! - `bytes`: any content.
//! - `validate`: `strict` (default) rejects a value that breaks a constraint (range,
//!   multiple, length, pattern); `lenient` lets it through. A value that is not of the type
//!   at all (not a number, not UTF-8) is rejected either way. Every failure raises
//!   `MODEL_CORE_VALIDATION_FAILED` on the binding that uses the model.

pub mod config;
pub mod range;

use std::sync::Arc;

use regex::Regex;
use zilla_engine::components::{
    ModelContext, ModelFactory, ValidateConfig, ValidateMode, Validator,
};
use zilla_engine::events::Events;
use zilla_engine::{BuildError, Registry};

use config::{
    DecimalModelConfig, IntegerModelConfig, NumberFormat, PlainModelConfig, StringEncoding,
    StringModelConfig,
};
use range::Range;

/// The event every core model raises on a failed value.
pub const VALIDATION_FAILED: &str = "MODEL_CORE_VALIDATION_FAILED";

/// Registers every core model.
pub fn register(registry: &mut Registry) {
    for model in CoreModel::ALL {
        registry.model(CoreModelFactory(model));
    }
}

/// One core model type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreModel {
    /// `string`.
    String,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `boolean`.
    Boolean,
    /// `bytes`.
    Bytes,
}

impl CoreModel {
    /// Every core model.
    pub const ALL: [CoreModel; 7] = [
        CoreModel::String,
        CoreModel::Int32,
        CoreModel::Int64,
        CoreModel::Float,
        CoreModel::Double,
        CoreModel::Boolean,
        CoreModel::Bytes,
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            CoreModel::String => "string",
            CoreModel::Int32 => "int32",
            CoreModel::Int64 => "int64",
            CoreModel::Float => "float",
            CoreModel::Double => "double",
            CoreModel::Boolean => "boolean",
            CoreModel::Bytes => "bytes",
        }
    }
}

/// Builds one core model type.
#[derive(Debug)]
pub struct CoreModelFactory(pub CoreModel);

impl ModelFactory for CoreModelFactory {
    fn type_name(&self) -> &'static str {
        self.0.name()
    }

    fn schema(&self) -> serde_json::Value {
        let schema = match self.0 {
            CoreModel::String => schemars::schema_for!(StringModelConfig),
            CoreModel::Int32 | CoreModel::Int64 => schemars::schema_for!(IntegerModelConfig),
            CoreModel::Float | CoreModel::Double => schemars::schema_for!(DecimalModelConfig),
            CoreModel::Boolean | CoreModel::Bytes => schemars::schema_for!(PlainModelConfig),
        };
        serde_json::Value::from(schema)
    }

    fn build(
        &self,
        reference: &serde_json::Value,
        context: &ModelContext<'_>,
    ) -> Result<Arc<dyn Validator>, BuildError> {
        let model = self.0;
        let parse_error = |error: serde_json::Error| BuildError::at("", error.to_string());
        let (check, validate) = match model {
            CoreModel::String => {
                let config: StringModelConfig =
                    serde_json::from_value(reference.clone()).map_err(parse_error)?;
                (string_check(&config)?, config.validate)
            }
            CoreModel::Int32 | CoreModel::Int64 => {
                let config: IntegerModelConfig =
                    serde_json::from_value(reference.clone()).map_err(parse_error)?;
                let range = config
                    .range
                    .as_deref()
                    .map(Range::<i64>::parse)
                    .transpose()
                    .map_err(|message| BuildError::at("range", message))?;
                if config.multiple == Some(0) {
                    return Err(BuildError::at("multiple", "must not be 0"));
                }
                let check = Check::Integer {
                    wide: model == CoreModel::Int64,
                    format: config.format,
                    range,
                    multiple: config.multiple,
                };
                (check, config.validate)
            }
            CoreModel::Float | CoreModel::Double => {
                let config: DecimalModelConfig =
                    serde_json::from_value(reference.clone()).map_err(parse_error)?;
                let range = config
                    .range
                    .as_deref()
                    .map(Range::<f64>::parse)
                    .transpose()
                    .map_err(|message| BuildError::at("range", message))?;
                if config
                    .multiple
                    .is_some_and(|multiple| multiple == 0.0 || !multiple.is_finite())
                {
                    return Err(BuildError::at("multiple", "must be a non-zero number"));
                }
                let check = Check::Decimal {
                    wide: model == CoreModel::Double,
                    format: config.format,
                    range,
                    multiple: config.multiple,
                };
                (check, config.validate)
            }
            CoreModel::Boolean | CoreModel::Bytes => {
                let config: PlainModelConfig =
                    serde_json::from_value(reference.clone()).map_err(parse_error)?;
                let check = if model == CoreModel::Boolean {
                    Check::Boolean
                } else {
                    Check::Bytes
                };
                (check, config.validate)
            }
        };
        let model_name = reference
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if model_name != model.name() {
            return Err(BuildError::at(
                "model",
                format!("`{model_name}` is not the {} model", model.name()),
            ));
        }
        Ok(Arc::new(CoreValidator {
            model,
            check,
            decode_lenient: validate.is_some_and(|v| v.decode() == ValidateMode::Lenient),
            encode_lenient: validate
                .is_some_and(|v: ValidateConfig| v.encode() == ValidateMode::Lenient),
            events: context.events.clone(),
        }))
    }
}

fn string_check(config: &StringModelConfig) -> Result<Check, BuildError> {
    let pattern = config
        .pattern
        .as_deref()
        .map(|pattern| {
            // Anchored: the whole text must match, as Java's `Matcher.matches` (Zilla's).
            Regex::new(&format!("^(?:{pattern})$")).map_err(|error| {
                BuildError::at("pattern", format!("not a regular expression: {error}"))
            })
        })
        .transpose()?;
    if let (Some(min), Some(max)) = (config.min_length, config.max_length)
        && min > max
    {
        return Err(BuildError::at(
            "minLength",
            format!("`minLength` {min} is above `maxLength` {max}"),
        ));
    }
    Ok(Check::String {
        utf16: config.encoding == Some(StringEncoding::Utf16),
        min_length: config.min_length,
        max_length: config.max_length,
        pattern,
    })
}

/// What a core validator checks.
#[derive(Debug)]
enum Check {
    String {
        utf16: bool,
        min_length: Option<u64>,
        max_length: Option<u64>,
        pattern: Option<Regex>,
    },
    Integer {
        wide: bool,
        format: NumberFormat,
        range: Option<Range<i64>>,
        multiple: Option<i64>,
    },
    Decimal {
        wide: bool,
        format: NumberFormat,
        range: Option<Range<f64>>,
        multiple: Option<f64>,
    },
    Boolean,
    Bytes,
}

/// Why a value failed.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Not a value of the type at all: rejected even when lenient.
    Malformed(String),
    /// A value of the type that breaks a constraint.
    Constraint(String),
}

/// A built core model.
#[derive(Debug)]
pub struct CoreValidator {
    model: CoreModel,
    check: Check,
    decode_lenient: bool,
    encode_lenient: bool,
    events: Events,
}

impl CoreValidator {
    fn verdict(&self, data: &[u8], lenient: bool) -> Result<(), String> {
        let Err(failure) = self.check.check(data) else {
            return Ok(());
        };
        let (reason, let_through) = match failure {
            Failure::Malformed(reason) => (reason, false),
            Failure::Constraint(reason) => (reason, lenient),
        };
        let model = self.model.name();
        self.events
            .emit_with(VALIDATION_FAILED, 0, || format!("{model}: {reason}"));
        if let_through {
            tracing::debug!(model, %reason, "value let through (lenient)");
            Ok(())
        } else {
            Err(reason)
        }
    }
}

impl Validator for CoreValidator {
    fn validate(&self, data: &[u8]) -> Result<(), String> {
        self.verdict(data, self.decode_lenient)
    }

    fn encode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.verdict(data, self.encode_lenient).map(|()| None)
    }
}

impl Check {
    fn check(&self, data: &[u8]) -> Result<(), Failure> {
        match self {
            Check::String {
                utf16,
                min_length,
                max_length,
                pattern,
            } => {
                let text = if *utf16 {
                    decode_utf16(data)
                } else {
                    std::str::from_utf8(data)
                        .map(str::to_owned)
                        .map_err(|_| Failure::Malformed("not UTF-8 text".to_owned()))
                }?;
                let length = data.len() as u64;
                if let Some(min) = min_length
                    && length < *min
                {
                    return Err(Failure::Constraint(format!(
                        "{length} bytes, fewer than the {min} required"
                    )));
                }
                if let Some(max) = max_length
                    && length > *max
                {
                    return Err(Failure::Constraint(format!(
                        "{length} bytes, more than the {max} allowed"
                    )));
                }
                if let Some(pattern) = pattern
                    && !pattern.is_match(&text)
                {
                    return Err(Failure::Constraint("does not match the pattern".to_owned()));
                }
                Ok(())
            }
            Check::Integer {
                wide,
                format,
                range,
                multiple,
            } => {
                let value = parse_integer(data, *wide, *format)?;
                if let Some(range) = range
                    && !range.contains(value)
                {
                    return Err(Failure::Constraint("out of range".to_owned()));
                }
                if let Some(multiple) = multiple
                    && value % multiple != 0
                {
                    return Err(Failure::Constraint(format!("not a multiple of {multiple}")));
                }
                Ok(())
            }
            Check::Decimal {
                wide,
                format,
                range,
                multiple,
            } => {
                let value = parse_decimal(data, *wide, *format)?;
                if let Some(range) = range
                    && !range.contains(value)
                {
                    return Err(Failure::Constraint("out of range".to_owned()));
                }
                if let Some(multiple) = multiple {
                    let quotient = value / multiple;
                    if (quotient - quotient.round()).abs() > 1e-9 * quotient.abs().max(1.0) {
                        return Err(Failure::Constraint(format!("not a multiple of {multiple}")));
                    }
                }
                Ok(())
            }
            Check::Boolean => match data {
                [0x00] | [0x01] => Ok(()),
                _ => Err(Failure::Malformed(
                    "not a boolean: one byte, 0x00 or 0x01".to_owned(),
                )),
            },
            Check::Bytes => Ok(()),
        }
    }
}

fn decode_utf16(data: &[u8]) -> Result<String, Failure> {
    let malformed = || Failure::Malformed("not UTF-16 text".to_owned());
    if !data.len().is_multiple_of(2) {
        return Err(malformed());
    }
    let (little_endian, body) = match data {
        [0xff, 0xfe, rest @ ..] => (true, rest),
        [0xfe, 0xff, rest @ ..] => (false, rest),
        _ => (false, data),
    };
    let units = body.chunks_exact(2).map(|pair| {
        let pair = [pair[0], pair[1]];
        if little_endian {
            u16::from_le_bytes(pair)
        } else {
            u16::from_be_bytes(pair)
        }
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| malformed())
}

fn parse_integer(data: &[u8], wide: bool, format: NumberFormat) -> Result<i64, Failure> {
    let type_name = if wide { "int64" } else { "int32" };
    let malformed = || Failure::Malformed(format!("not an {type_name}"));
    match format {
        NumberFormat::Binary => match (wide, data.len()) {
            (false, 4) => Ok(i64::from(i32::from_be_bytes([
                data[0], data[1], data[2], data[3],
            ]))),
            (true, 8) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(data);
                Ok(i64::from_be_bytes(bytes))
            }
            _ => Err(malformed()),
        },
        NumberFormat::Text => {
            let digits = data.strip_prefix(b"-").unwrap_or(data);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(malformed());
            }
            let text = std::str::from_utf8(data).map_err(|_| malformed())?;
            if wide {
                text.parse::<i64>().map_err(|_| malformed())
            } else {
                text.parse::<i32>().map(i64::from).map_err(|_| malformed())
            }
        }
    }
}

fn parse_decimal(data: &[u8], wide: bool, format: NumberFormat) -> Result<f64, Failure> {
    let type_name = if wide { "double" } else { "float" };
    let malformed = || Failure::Malformed(format!("not a {type_name}"));
    match format {
        NumberFormat::Binary => match (wide, data.len()) {
            (false, 4) => Ok(f64::from(f32::from_be_bytes([
                data[0], data[1], data[2], data[3],
            ]))),
            (true, 8) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(data);
                Ok(f64::from_be_bytes(bytes))
            }
            _ => Err(malformed()),
        },
        NumberFormat::Text => {
            if !is_decimal_text(data) {
                return Err(malformed());
            }
            let text = std::str::from_utf8(data).map_err(|_| malformed())?;
            let value = if wide {
                text.parse::<f64>().map_err(|_| malformed())?
            } else {
                f64::from(text.parse::<f32>().map_err(|_| malformed())?)
            };
            // Text too large for the type parses as infinity: not a value of it.
            if value.is_finite() {
                Ok(value)
            } else {
                Err(malformed())
            }
        }
    }
}

/// `-?digits(.digits)?([eE][+-]?digits)?`: what Rust's parser accepts, less `inf`, `NaN`,
/// `+` signs and bare dots.
fn is_decimal_text(data: &[u8]) -> bool {
    fn digits(data: &[u8]) -> (usize, &[u8]) {
        let count = data.iter().take_while(|b| b.is_ascii_digit()).count();
        (count, &data[count..])
    }
    let rest = data.strip_prefix(b"-").unwrap_or(data);
    let (count, mut rest) = digits(rest);
    if count == 0 {
        return false;
    }
    if let Some(fraction) = rest.strip_prefix(b".") {
        let (count, after) = digits(fraction);
        if count == 0 {
            return false;
        }
        rest = after;
    }
    if let Some(exponent) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exponent = exponent
            .strip_prefix(b"-")
            .or_else(|| exponent.strip_prefix(b"+"))
            .unwrap_or(exponent);
        let (count, after) = digits(exponent);
        if count == 0 {
            return false;
        }
        rest = after;
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests;
